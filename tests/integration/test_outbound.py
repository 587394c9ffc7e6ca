"""Outbound traffic management, as issue 3's bar states it: retries with outlier detection around a bad
endpoint, a weighted canary split, and hot reloads under keep-alive load with no failed request.

Real loopback sockets throughout; the reload test runs `pillion run` as a real process and signals it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from pillion.testing.http import ClientConnection, http_request
from pillion.testing.metrics import metric
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
PILLION = [sys.executable, "-m", "pillion"]


def test_retries_and_outlier_detection_hide_a_failing_endpoint() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as a, ScriptableUpstream() as b, ScriptableUpstream() as bad:
            bad.override = "/status/503"
            cfg = sidecar_config(
                [a.address, b.address, bad.address],
                routes=[
                    {
                        "match": {"prefix": "/"},
                        "cluster": "app",
                        "retries": {"attempts": 2, "on": ["5xx", "connect-failure", "reset"]},
                    }
                ],
                cluster={"outlier_detection": {"consecutive_5xx": 3, "base_ejection": "30s"}},
            )
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                statuses: Counter[int] = Counter()
                async with await ClientConnection.open(HOST, port) as conn:
                    for i in range(1000):
                        response = await conn.request("GET", f"/item/{i}")
                        statuses[response.status] += 1
                assert statuses == {200: 1000}
                # The bad endpoint saw exactly the 3 failures that got it ejected, and nothing after.
                assert len(bad.requests) == 3
                assert len(a.requests) + len(b.requests) == 1000  # every request, retried or not
                clusters = (await http_request(HOST, rt.admin.port, "GET", "/clusters")).json()["clusters"]
                states = {e["address"]: e for e in clusters[0]["endpoints"]}
                assert states[bad.address]["ejected"] is True
                assert states[bad.address]["state"] == "ejected"
                assert states[a.address]["state"] == states[b.address]["state"] == "healthy"
                assert metric(rt, "pillion_endpoint_ejected", endpoint=bad.address) == 1
                assert metric(rt, "pillion_outlier_ejections_total", endpoint=bad.address) == 1
                assert metric(rt, "pillion_upstream_retries_total", cluster="app") == 3
                assert (
                    metric(rt, "pillion_upstream_responses_total", endpoint=bad.address, code_class="5xx")
                    == 3
                )
                assert metric(rt, "pillion_http_requests_total", code="200") == 1000

    uvloop.run(main())


def test_ejected_endpoint_returns_after_its_ejection_time() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as good, ScriptableUpstream() as bad:
            bad.override = "/status/500"
            cfg = sidecar_config(
                [good.address, bad.address],
                routes=[{"match": {"prefix": "/"}, "cluster": "app", "retries": {"on": ["5xx"]}}],
                cluster={
                    "outlier_detection": {
                        "consecutive_5xx": 2,
                        "base_ejection": "1s",
                        "max_ejection_percent": 50,
                    }
                },
            )
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                async with await ClientConnection.open(HOST, port) as conn:
                    for _ in range(6):
                        assert (await conn.request("GET", "/")).status == 200
                    assert len(bad.requests) == 2
                    bad.override = None  # recovered
                    await asyncio.sleep(2.3)  # 1 s ejection, noticed by the once-a-second tick
                    served: Counter[str | None] = Counter()
                    for _ in range(10):
                        served[(await conn.request("GET", "/")).header("x-upstream")] += 1
                assert served[bad.address] == 5 and served[good.address] == 5
                assert metric(rt, "pillion_endpoint_ejected", endpoint=bad.address) == 0

    uvloop.run(main())


def test_split_sends_ten_percent_to_the_canary() -> None:
    async def main() -> None:
        async with ScriptableUpstream(name="canary") as canary, ScriptableUpstream(name="stable") as stable:
            cfg = sidecar_config(
                [stable.address],
                routes=[
                    {
                        "match": {"prefix": "/"},
                        "split": [{"cluster": "canary", "weight": 10}, {"cluster": "app", "weight": 90}],
                    }
                ],
                extra_clusters=[{"name": "canary", "endpoints": [canary.address]}],
            )
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                served: Counter[str | None] = Counter()
                async with await ClientConnection.open(HOST, port) as conn:
                    for _ in range(2000):
                        served[(await conn.request("GET", "/")).header("x-upstream")] += 1
                assert served["canary"] + served["stable"] == 2000
                assert 140 <= served["canary"] <= 260  # 10% +- 3%
                # Each side is counted under its own cluster label.
                assert metric(rt, "pillion_http_requests_total", cluster="canary") == served["canary"]
                assert metric(rt, "pillion_http_requests_total", cluster="app") == served["stable"]

    uvloop.run(main())


def _config_text(port: int, admin: int, upstream: str, flavour: str) -> str:
    return f"""
service: reload
admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: outbound
    address: "127.0.0.1:{port}"
    routes:
      - match: {{prefix: /}}
        cluster: app
        response_headers_add: [{{name: x-flavour, value: {flavour}}}]
        timeout: {"5s" if flavour == "a" else "6s"}
clusters:
  - name: app
    endpoints: ["{upstream}"]
"""


@dataclass
class Reloadable:
    """`pillion run` on a config file in flavour "a" or "b", in front of a scriptable upstream."""

    up: ScriptableUpstream
    proc: ProcessRunner
    path: Path
    port: int
    admin: int
    extra: str

    def config(self, flavour: str) -> str:
        return _config_text(self.port, self.admin, self.up.address, flavour) + self.extra

    def write(self, text: str) -> None:
        """Replace the file in one step, as a config-management tool would."""
        tmp = self.path.with_suffix(".next")
        tmp.write_text(text)
        os.replace(tmp, self.path)


@asynccontextmanager
async def reloadable_pillion(tmp_path: Path, extra: str = "") -> AsyncIterator[Reloadable]:
    async with ScriptableUpstream() as up:
        port, admin = free_port(), free_port()
        path = tmp_path / "pillion.yaml"
        path.write_text(_config_text(port, admin, up.address, "a") + extra)
        async with ProcessRunner(
            [*PILLION, "run", "-c", str(path)], wait_url=f"http://{HOST}:{admin}/ready"
        ) as proc:
            yield Reloadable(up, proc, path, port, admin, extra)


def test_twenty_reloads_under_keep_alive_load_fail_no_request(tmp_path: Path) -> None:
    total = 10_000
    reloads = 20

    async def main() -> None:
        async with reloadable_pillion(tmp_path) as rl:
            done = 0
            failures: list[Any] = []
            flavours: Counter[str | None] = Counter()
            reloading = True

            async def client() -> None:
                nonlocal done
                async with await ClientConnection.open(HOST, rl.port) as conn:
                    while done < total or reloading:
                        try:
                            response = await conn.request("GET", f"/r/{done}")
                        except (ConnectionError, TimeoutError) as exc:
                            failures.append(exc)
                            return
                        done += 1
                        if response.status != 200:
                            failures.append(response.status)
                        flavours[response.header("x-flavour")] += 1

            async def reloader() -> None:
                nonlocal reloading
                for i in range(reloads):
                    await asyncio.sleep(0.1)
                    rl.write(rl.config("b" if i % 2 == 0 else "a"))
                    rl.proc.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.3)  # let the last one apply while requests still flow
                reloading = False

            await asyncio.gather(*(client() for _ in range(4)), reloader())
            metrics = (await http_request(HOST, rl.admin, "GET", "/metrics")).text
            dump = (await http_request(HOST, rl.admin, "GET", "/config_dump")).json()
            upstream_connections = rl.up.connections_accepted

        assert failures == []
        assert done >= total
        assert flavours["a"] > 0 and flavours["b"] > 0  # both configs really served
        assert f"pillion_config_reloads_total {reloads}" in metrics
        assert "pillion_config_reload_failures_total 0" in metrics
        assert dump["config_version"] == reloads + 1
        assert dump["config"]["listeners"][0]["routes"][0]["timeout"] == "5s"  # the last one: "a"
        # The cluster did not change, so its pool survived every reload: about one upstream connection
        # per client connection.
        assert upstream_connections <= 8

    uvloop.run(main())


def test_invalid_reload_keeps_the_running_config(tmp_path: Path) -> None:
    async def main() -> None:
        async with reloadable_pillion(tmp_path) as rl:
            rl.write(rl.config("a").replace("cluster: app", "cluster: ap"))
            rl.proc.send_signal(signal.SIGHUP)
            for _ in range(50):  # bounded wait for the refusal to be counted
                metrics = (await http_request(HOST, rl.admin, "GET", "/metrics")).text
                if "pillion_config_reload_failures_total 1" in metrics:
                    break
                await asyncio.sleep(0.05)
            assert "pillion_config_reload_failures_total 1" in metrics
            response = await http_request(HOST, rl.port, "GET", "/")
            assert response.status == 200 and response.header("x-flavour") == "a"
            dump = (await http_request(HOST, rl.admin, "GET", "/config_dump")).json()
            assert dump["config_version"] == 1
        assert "unknown cluster 'ap'" in rl.proc.stderr_text() + rl.proc.stdout_text()

    uvloop.run(main())


def test_watch_reloads_when_the_file_changes(tmp_path: Path) -> None:
    async def main() -> None:
        async with reloadable_pillion(tmp_path, extra="watch: true\n") as rl:
            assert (await http_request(HOST, rl.port, "GET", "/")).header("x-flavour") == "a"
            rl.write(rl.config("b"))
            flavour = None
            for _ in range(60):  # the file is checked once a second: allow up to 3 s
                flavour = (await http_request(HOST, rl.port, "GET", "/")).header("x-flavour")
                if flavour == "b":
                    break
                await asyncio.sleep(0.05)
            assert flavour == "b"

    uvloop.run(main())
