"""The exposition output passes `promtool check metrics` with no errors and no lint warnings at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pillion.telemetry.process import register_process_metrics
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry
from pillion.testing.tools import assert_promtool_clean, require_tool


def _promtool() -> str:
    return require_tool("promtool")


def _full_registry() -> Registry:
    r = Registry()
    register_process_metrics(r)
    reqs = r.counter("pillion_requests_total", "Requests handled.", labels=("listener", "route", "code"))
    reqs.labels("inbound", "route0", "200").inc(7)
    reqs.labels("inbound", 'quote " back \\ slash\nnewline', "503").inc()
    reqs.labels("inbound", "ünïcødé ☃", "200").inc()
    r.counter("pillion_reloads_total", 'Configuration reloads.\nA second help line, a \\ and a " too.')
    active = r.gauge("pillion_active_requests", "Requests in flight.", labels=("listener",))
    active.labels("inbound").set(3)
    r.gauge("pillion_upstream_endpoints", "Endpoints per cluster.", labels=("cluster",))  # no children
    lat = r.histogram("pillion_request_duration_seconds", "Time to the last byte.", labels=("route",))
    for v in (0.0001, 0.0005, 0.003, 0.2, 1, 7, 60):
        lat.labels("route0").observe(v)
    lat.labels('odd\n"route\\')  # labelled child with no observations
    r.histogram("pillion_connect_duration_seconds", "Upstream connect time.", buckets=(0.01, 0.1)).labels()
    r.gauge_callback("pillion_pool_connections", "Pooled upstream connections.", lambda: 2.0)
    sizes = r.histogram("pillion_response_size_bytes", "Response body sizes.", buckets=(100, 1e4, 1e6))
    sizes.labels().observe(512)
    return r


def test_promtool_check_metrics_is_silent(tmp_path: Path) -> None:
    text = render(_full_registry())
    for needle in ("pillion_process_cpu_seconds_total ", "pillion_build_info{version=", 'le="+Inf"', '\\"'):
        assert needle in text
    assert_promtool_clean(text, tmp_path)


def test_promtool_would_complain_about_a_bad_name(tmp_path: Path) -> None:
    """A control: proves the silent result above means something (promtool does lint this input)."""
    promtool = _promtool()
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=b"# HELP pillion_requests Requests.\n# TYPE pillion_requests counter\npillion_requests 1\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"_total" in proc.stdout + proc.stderr
