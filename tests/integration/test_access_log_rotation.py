"""The access log of a real `pillion run` process: logrotate's move-and-signal, sampling, text format.

Rotation is done the way logrotate does it without `copytruncate`: rename the file, then SIGUSR1 (its
`postrotate` script). The sidecar keeps writing to the renamed file until the signal; after it, to a
new file at the configured path. Between the two files, every request is logged exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvloop

from pillion.testing.access_log import parse_text_line
from pillion.testing.http import http_request
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


@asynccontextmanager
async def sidecar(tmp_path: Path, access_log: str) -> AsyncIterator[tuple[ProcessRunner, int]]:
    """`pillion run` in front of a scriptable upstream, with routes for `/ok` and `/status` only (so
    anything else is a 404 `no_route` local reply): (process, listener port)."""
    async with ScriptableUpstream() as up:
        port, admin = free_port(), free_port()
        cfg = tmp_path / "pillion.yaml"
        cfg.write_text(
            f"""
service: rotated
admin: {{address: "{HOST}:{admin}"}}
access_log: {access_log}
listeners:
  - name: inbound
    address: "{HOST}:{port}"
    routes:
      - {{match: {{prefix: /ok}}, cluster: app}}
      - {{match: {{prefix: /status}}, cluster: app}}
clusters:
  - {{name: app, endpoints: ["{up.address}"]}}
"""
        )
        argv = [sys.executable, "-m", "pillion", "run", "-c", str(cfg)]
        async with ProcessRunner(argv, wait_url=f"http://{HOST}:{admin}/ready") as proc:
            yield proc, port


async def _get(port: int, path: str, request_id: str) -> int:
    r = await http_request(HOST, port, "GET", path, headers=[("x-request-id", request_id)])
    return r.status


async def _wait_for(what: str, cond: Callable[[], bool], time_limit: float = 5.0) -> None:
    deadline = time.monotonic() + time_limit
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def test_rename_then_sigusr1_moves_logging_to_a_new_file_losing_nothing(tmp_path: Path) -> None:
    log, rotated = tmp_path / "access.log", tmp_path / "access.log.1"

    async def main() -> None:
        async with sidecar(tmp_path, f'{{enabled: true, path: "{log}"}}') as (proc, port):
            for i in range(20):
                assert await _get(port, f"/ok/{i}", f"before-{i}") == 200
            # No waiting for the once-a-second flush: some lines are still buffered in the sidecar when
            # the file moves, and must follow the file they were meant for.
            log.rename(rotated)
            proc.send_signal(signal.SIGUSR1)
            await _wait_for("the reopened file", log.exists)
            for i in range(20):
                assert await _get(port, f"/ok/{i}", f"after-{i}") == 200
            # A second rotation, straight after: the marker queues behind the lines before it.
            log.rename(tmp_path / "access.log.0")
            proc.send_signal(signal.SIGUSR1)
            await _wait_for("the file reopened again", log.exists)
            assert await _get(port, "/ok/last", "last") == 200
            assert await proc.async_stop() == 0  # SIGTERM: drain, flush, close
        assert _ids(rotated) == [f"before-{i}" for i in range(20)]
        assert _ids(tmp_path / "access.log.0") == [f"after-{i}" for i in range(20)]
        assert _ids(log) == ["last"]
        assert "access log reopened" in proc.stderr_text()

    uvloop.run(main())


def test_sampling_zero_logs_only_errors_in_text_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"

    async def main() -> None:
        config = f'{{enabled: true, path: "{log}", format: text, sampling: 0.0}}'
        async with sidecar(tmp_path, config) as (proc, port):
            for i in range(10):
                assert await _get(port, f"/ok/{i}", f"ok-{i}") == 200
            assert await _get(port, "/status/404", "app-404") == 404  # the app's answer: not an error
            assert await _get(port, "/status/503", "app-503") == 503
            assert await _get(port, "/elsewhere", "no-route") == 404  # a local reply: an error
            assert await _get(port, "/status/502", "app-502") == 502
            assert await proc.async_stop() == 0
        lines = [parse_text_line(line) for line in log.read_text().splitlines()]
        assert [(x["request_id"], x["status"], x["error"]) for x in lines] == [
            ("app-503", "503", "-"),
            ("no-route", "404", "no_route"),
            ("app-502", "502", "-"),
        ]
        app, no_route = lines[0], lines[1]
        assert app["method"] == "GET" and app["path"] == "/status/503" and app["listener"] == "inbound"
        assert app["route"] == "route1" and app["cluster"] == "app" and app["upstream"] != "-"
        assert no_route["flags"] == "NR" and no_route["route"] == "-" and no_route["upstream"] == "-"
        assert float(app["duration"]) > 0

    uvloop.run(main())


def test_sigusr1_without_an_access_log_is_harmless(tmp_path: Path) -> None:
    async def main() -> None:
        async with sidecar(tmp_path, "{enabled: false}") as (proc, port):
            proc.send_signal(signal.SIGUSR1)  # the default action would kill the process
            await asyncio.sleep(0.2)
            assert await _get(port, "/ok", "x") == 200
            assert await proc.async_stop() == 0

    uvloop.run(main())
