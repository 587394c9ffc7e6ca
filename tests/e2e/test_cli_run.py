"""`pillion run` and `pillion demo` as real subprocesses: lifecycle, memory, metrics, access log."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvloop

from pillion.testing.http import ClientConnection, free_port, http_request
from pillion.testing.process import ProcessRunner
from pillion.testing.tools import require_tool
from pillion.testing.upstream import ScriptableUpstream, pattern_sha256

HOST = "127.0.0.1"
PILLION = [sys.executable, "-m", "pillion"]


def write_config(tmp_path: Path, upstream: str, *, extra: str = "") -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    path = tmp_path / "pillion.yaml"
    path.write_text(
        f"""
service: e2e
admin: {{address: "127.0.0.1:{admin}"}}
drain_timeout: 5s
listeners:
  - name: inbound
    address: "127.0.0.1:{port}"
    routes:
      - match: {{prefix: /}}
        cluster: app
clusters:
  - name: app
    endpoints: ["{upstream}"]
{extra}
"""
    )
    return path, port, admin


@asynccontextmanager
async def running_pillion(
    tmp_path: Path, *, extra: str = ""
) -> AsyncIterator[tuple[ScriptableUpstream, subprocess.Popen[bytes], int, int]]:
    """A scriptable upstream and `pillion run` in front of it, ready: (upstream, process, port, admin)."""
    async with ScriptableUpstream() as up:
        cfg, port, admin = write_config(tmp_path, up.address, extra=extra)
        async with ProcessRunner(
            [*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready"
        ) as proc:
            assert proc.popen is not None
            yield up, proc.popen, port, admin


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_10kib_request_costs_less_than_100_times_its_size(tmp_path: Path) -> None:
    """The issue's memory bound, on the real process: 200 requests with 10 KiB heads held in flight
    (the upstream answers after a delay), then 200 connections holding 10 KiB of an unfinished head."""
    count, size = 200, 10 * 1024
    fields = b"".join(b"x-pad-%03d: %b\r\n" % (i, b"v" * 1012) for i in range(10))
    assert len(fields) >= size

    async def main() -> None:
        async with running_pillion(tmp_path) as (up, popen, port, _):
            writers: list[asyncio.StreamWriter] = []
            try:
                before = rss_kib(popen.pid)
                for _ in range(count):
                    _, w = await asyncio.open_connection(HOST, port)
                    w.write(b"GET /delay/5 HTTP/1.1\r\nhost: x\r\n%b\r\n" % fields)
                    writers.append(w)
                await up.wait_for_requests(count, time_limit=10.0)
                whole = (rss_kib(popen.pid) - before) / count
                before = rss_kib(popen.pid)
                for _ in range(count):
                    _, w = await asyncio.open_connection(HOST, port)
                    w.write(b"GET /partial HTTP/1.1\r\nhost: x\r\n%b" % fields)  # no blank line: unfinished
                    writers.append(w)
                for w in writers[count:]:
                    await w.drain()
                await asyncio.sleep(0.5)  # (nothing to wait on: the proxy reads them into its buffers)
                partial = (rss_kib(popen.pid) - before) / count
                print(f"RSS per 10 KiB request: {whole:.1f} KiB in flight, {partial:.1f} KiB unfinished")
                assert whole < 100 * 10 and partial < 100 * 10, (whole, partial)
                assert len(up.requests) == count  # the unfinished heads never went upstream
            finally:
                for w in writers:
                    w.close()

    uvloop.run(main())


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_pillion(tmp_path) as (up, popen, port, _):
            async with await ClientConnection.open(HOST, port) as conn:
                in_flight = asyncio.ensure_future(conn.request("GET", "/delay/1"))
                await up.wait_for_requests(1)
                popen.send_signal(signal.SIGTERM)
                r = await in_flight
                assert r.status == 200 and r.text == "GET /delay/1\n"
                assert r.header("connection") == "close"
            code = await asyncio.to_thread(popen.wait, 10)
            assert code == 0
            # New connections are refused once draining began.
            try:
                await http_request(HOST, port, "GET", "/", time_limit=1)
                raise AssertionError("listener still accepting after exit")
            except OSError:
                pass

    uvloop.run(main())


def test_quitquitquit_exits_0(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_pillion(tmp_path) as (_, popen, _, admin):
            r = await http_request(HOST, admin, "POST", "/quitquitquit")
            assert r.status == 200
            assert await asyncio.to_thread(popen.wait, 10) == 0

    uvloop.run(main())


def test_300mb_download_keeps_rss_under_80mb(tmp_path: Path) -> None:
    size = 300 * 1000 * 1000

    async def main() -> None:
        async with running_pillion(tmp_path) as (_, popen, port, _):
            pid = popen.pid
            peak = rss_kib(pid)
            download = asyncio.ensure_future(
                http_request(HOST, port, "GET", f"/bytes/{size}", store_body=False, time_limit=120)
            )
            while not download.done():
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.02)
            r = download.result()
            assert r.status == 200 and r.body_length == size and r.body_sha256 == pattern_sha256(size)
            peak = max(peak, rss_kib(pid))
            assert peak < 80 * 1024, f"peak RSS {peak} KiB"

    uvloop.run(main())


def test_live_metrics_pass_promtool_and_access_log_is_json(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    log_path = tmp_path / "access.log"

    async def main() -> str:
        extra = f'access_log: {{enabled: true, path: "{log_path}"}}\n'
        async with running_pillion(tmp_path, extra=extra) as (_, _, port, admin):
            for path in ("/a", "/status/503", "/b?q=1"):
                await http_request(HOST, port, "GET", path, headers=[("x-request-id", f"id{path}")])
            return (await http_request(HOST, admin, "GET", "/metrics")).text

    metrics = uvloop.run(main())
    assert (
        'pillion_http_requests_total{listener="inbound",route="route0",cluster="app",code="503"} 1' in metrics
    )
    check = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(x["path"], x["status"], x["request_id"]) for x in lines] == [
        ("/a", 200, "id/a"),
        ("/status/503", 503, "id/status/503"),
        ("/b?q=1", 200, "id/b?q=1"),
    ]
    for field in ("method", "bytes_sent", "duration_ms", "upstream", "error", "upstream_duration_ms"):
        assert field in lines[0]
    assert 0 < lines[0]["upstream_duration_ms"] <= lines[0]["duration_ms"]


def test_unreadable_identity_files_exit_1_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tls.yaml"
    missing = tmp_path / "nope" / "cert.pem"
    cfg.write_text(
        f"service: x\nidentity: {{cert: {missing}, key: {tmp_path}/k.pem, trust_bundle: {tmp_path}/b.pem}}\n"
        "listeners: [{name: in, address: 127.0.0.1:0, tls: {mode: strict}, routes: [{cluster: app}]}]\n"
        "clusters: [{name: app, endpoints: [127.0.0.1:1]}]\n"
    )
    done = subprocess.run(
        [*PILLION, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done
    assert f"identity.cert: cannot read {missing}" in done.stderr and "Traceback" not in done.stderr


def test_invalid_config_exits_1_naming_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "service: x\nlisteners:\n  - name: in\n    address: 127.0.0.1:0\n    routes:\n"
        "      - {match: {prefix: /}, cluster: app}\n      - {match: {prefix: /p}, cluster: paymnts}\n"
        "clusters:\n  - {name: app, endpoints: [127.0.0.1:1]}\n"
    )
    done = subprocess.run(
        [*PILLION, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert "listeners[0].routes[1].cluster: unknown cluster 'paymnts'" in done.stderr


def test_demo_serves_the_app_through_the_sidecar() -> None:
    app, inbound, admin = free_port(), free_port(), free_port()
    argv = [*PILLION, "demo", "--duration", "2", "--app-port", str(app)]
    argv += ["--inbound-port", str(inbound), "--admin-port", str(admin)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "GET /orders      -> 200" in done.stdout
    assert '"x-forwarded-for": "127.0.0.1"' in done.stdout
    assert f"curl http://127.0.0.1:{admin}/metrics" in done.stdout
    assert "pillion_http_requests_total" in done.stdout
