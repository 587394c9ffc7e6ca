"""A real Prometheus scrapes a real sidecar: the exposition parses, and the numbers arrive intact.

`promtool check metrics` (test_promtool.py) lints the text; this goes one step further and has the Debian
`prometheus` server (installed by `make test`) scrape `pillion run`'s admin port every second into a
throw-away TSDB, then asks its HTTP API what it stored: `up == 1` (the scrape parsed), the request
counter summed over series equals the requests sent, and Prometheus ingested as many samples as the
endpoint serves. Both processes run in their own process groups and are stopped on every exit path.
A second test lints every family docs/metrics.md lists (including those only some configs declare).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import uvloop

from pillion.telemetry.catalogue import full_registry
from pillion.telemetry.prometheus import render
from pillion.testing.http import http_request
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.tools import require_tool
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
REQUESTS = 25
QUERY_TIME_LIMIT = 20.0  # seconds for Prometheus to start, scrape and answer; it takes about 3


def _pillion_config(tmp_path: Path, upstream: str) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    path = tmp_path / "pillion.yaml"
    path.write_text(
        f"""
service: scraped
admin: {{address: "{HOST}:{admin}"}}
listeners:
  - name: inbound
    address: "{HOST}:{port}"
    routes: [{{match: {{prefix: /}}, cluster: app}}]
clusters:
  - {{name: app, endpoints: ["{upstream}"]}}
"""
    )
    return path, port, admin


def _prometheus_config(tmp_path: Path, admin: int) -> Path:
    path = tmp_path / "prometheus.yml"
    path.write_text(
        f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: pillion
    static_configs: [{{targets: ["{HOST}:{admin}"]}}]
"""
    )
    return path


async def _query(port: int, promql: str) -> list[float]:
    """The values of an instant query's result vector (empty when there is no such series yet)."""
    r = await http_request(HOST, port, "GET", f"/api/v1/query?query={quote(promql)}", time_limit=5)
    assert r.status == 200, r.text
    data = json.loads(r.body)
    assert data["status"] == "success" and data["data"]["resultType"] == "vector", data
    return [float(item["value"][1]) for item in data["data"]["result"]]


async def _until(port: int, promql: str, want: float, deadline: float) -> None:
    seen: list[float] = []
    while time.monotonic() < deadline:
        seen = await _query(port, promql)
        if seen == [want]:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{promql}: wanted [{want}], Prometheus last answered {seen}")


def test_prometheus_scrapes_the_request_count(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")

    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg, port, admin = _pillion_config(tmp_path, up.address)
            async with ProcessRunner(
                [sys.executable, "-m", "pillion", "run", "-c", str(cfg)],
                wait_url=f"http://{HOST}:{admin}/ready",
            ):
                for i in range(REQUESTS):
                    r = await http_request(HOST, port, "GET", f"/r{i}")
                    assert r.status == 200
                assert (await http_request(HOST, port, "GET", "/status/503")).status == 503  # another code

                web = free_port()
                argv = [
                    prometheus,
                    f"--config.file={_prometheus_config(tmp_path, admin)}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={HOST}:{web}",
                    "--log.level=warn",
                ]
                async with ProcessRunner(argv, wait_url=f"http://{HOST}:{web}/-/ready", startup_timeout=15):
                    deadline = time.monotonic() + QUERY_TIME_LIMIT
                    await _until(web, 'sum(pillion_http_requests_total{code="200"})', REQUESTS, deadline)
                    await _until(web, 'sum(pillion_http_requests_total{code="503"})', 1, deadline)
                    assert await _query(web, 'up{job="pillion"}') == [1.0]
                    # Every sample the endpoint serves was stored: nothing dropped by Prometheus's parser.
                    served = (await http_request(HOST, admin, "GET", "/metrics")).text
                    samples = sum(1 for line in served.splitlines() if line and not line.startswith("#"))
                    await _until(web, 'scrape_samples_scraped{job="pillion"}', samples, deadline)
                    # The process metrics arrive too (a gauge the sidecar samples itself, one it computes).
                    assert len(await _query(web, "pillion_event_loop_lag_seconds >= 0")) == 1
                    assert len(await _query(web, "pillion_process_resident_memory_bytes > 1e6")) == 1

    uvloop.run(main())


def test_every_family_in_the_catalogue_passes_promtool() -> None:
    """The live-metrics check in tests/e2e covers a plain config; this covers every family any config
    can declare (docs/metrics.md's list), each with a sample series."""
    promtool = require_tool("promtool")
    registry = full_registry()
    for family in registry.collect():
        family.labels(*(f"x{i}" for i in range(len(family.label_names))))
    text = render(registry)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check
