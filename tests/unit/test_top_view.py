"""`pillion top`'s arithmetic: the view computed from two polls, on metrics declared by the real ProxyStats.

The e2e test (tests/e2e/test_cli_top.py) drives the command against a real sidecar; here the numbers are
chosen so every rate and quantile can be checked exactly.
"""

from __future__ import annotations

from typing import Any

import pytest

from pillion.cli.top import AdminClient, AdminError, Monitor, Poll, compute, render
from pillion.proxy.stats import ProxyStats
from pillion.telemetry.process import register_process_metrics
from pillion.telemetry.prometheus import render as render_metrics
from pillion.telemetry.scrape import parse
from pillion.telemetry.stats import GaugeFamily, Registry

GOOD, BAD = "10.0.0.1:8080", "10.0.0.2:8080"


class Sidecar:
    """The metrics a sidecar would expose, to poll at chosen moments."""

    def __init__(self, start: float = 1000.0) -> None:
        self.registry = Registry()
        register_process_metrics(self.registry, "9.9.9")
        start_gauge = self.registry.get("pillion_process_start_time_seconds")
        assert isinstance(start_gauge, GaugeFamily)
        start_gauge.labels().set(start)
        self.stats = ProxyStats.declare(self.registry)
        self.endpoints: list[dict[str, Any]] = [
            {"address": GOOD, "state": "healthy", "active_requests": 2, "times_ejected": 0},
            {"address": BAD, "state": "ejected", "active_requests": 0, "times_ejected": 1},
        ]

    def requests(self, route: str, code: str, n: int, seconds: float, cluster: str = "app") -> None:
        self.stats.requests.labels("inbound", route, cluster, code).inc(n)
        for _ in range(n):
            # DEFAULT_BUCKETS: ... 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1 ...
            self.stats.duration.labels("inbound", route, cluster).observe(seconds)

    def poll(self, at: float) -> Poll:
        clusters = [{"name": "app", "requests_active": 2, "connections": 3, "endpoints": self.endpoints}]
        return Poll(at, parse(render_metrics(self.registry)), clusters)


def test_rates_shares_and_quantiles_over_one_interval() -> None:
    side = Sidecar()
    side.requests("api", "200", 10, 0.005)
    before = side.poll(100.0)
    # In the next 2 s: api answers 16 (4 of them 404), web 4 (1 of them 503), 40 ms each.
    side.requests("api", "200", 12, 0.005)
    side.requests("api", "404", 4, 0.005)
    side.requests("web", "200", 3, 0.04)
    side.requests("web", "503", 1, 0.04)
    side.stats.endpoint_requests.labels("app", GOOD, "2xx").inc(19)
    side.stats.endpoint_requests.labels("app", GOOD, "5xx").inc(1)
    side.stats.retries.labels("app").inc(2)
    view = compute(before, side.poll(102.0), admin="a:1", service="orders", now=1000.0 + 3723)

    assert (view.service, view.version, view.uptime, view.seconds) == ("orders", "9.9.9", 3723, 2.0)
    routes = {r.route: r.rates for r in view.routes}
    assert list(routes) == ["api", "web"]
    api, web = routes["api"], routes["web"]
    assert (api.rps, api.share_4xx, api.share_5xx) == (8.0, 0.25, 0.0)
    # All 16 in (0.0025, 0.005]: p50 at rank 8 of 16 is 0.0025 + 0.0025 * 8/16, p99 at rank 15.84 ...
    assert api.p50 == pytest.approx(0.00375) and api.p99 == pytest.approx(0.0025 + 0.0025 * 15.84 / 16)
    assert (web.rps, web.share_5xx, web.share_4xx) == (2.0, 0.25, 0.0)
    # All 4 in (0.025, 0.05]: p50 = 0.025 + 0.025 * 2/4.
    assert web.p50 == pytest.approx(0.0375)

    (cluster,) = view.clusters
    assert cluster.rates.rps == 10.0 and cluster.rates.share_5xx == pytest.approx(0.05)
    # The cluster merges both routes' buckets: 16 in (0.0025, 0.005], 4 in (0.025, 0.05]. p50 is rank 10
    # of the first 16; p99 (rank 19.8) is 3.8 into the 4 above, which start at 0.025.
    assert cluster.rates.p50 == pytest.approx(0.0025 + 0.0025 * 10 / 16)
    assert cluster.rates.p99 == pytest.approx(0.025 + 0.025 * 3.8 / 4)
    assert (cluster.active, cluster.connections, cluster.retries_per_s) == (2, 3, 1.0)
    assert (cluster.healthy, cluster.endpoints) == (1, 2)

    good, bad = view.endpoints
    assert (good.address, good.state, good.active, good.ejections) == (GOOD, "healthy", 2, 0)
    assert good.rates.rps == 10.0 and good.rates.share_5xx == 0.05
    assert (bad.state, bad.ejections, bad.rates.rps, bad.rates.share_5xx) == ("ejected", 1, 0.0, None)
    assert view.total.rps == 10.0 and view.total.share_5xx == pytest.approx(0.05)


def test_first_poll_has_no_rates() -> None:
    side = Sidecar()
    side.requests("api", "200", 10, 0.005)
    view = compute(None, side.poll(1.0), admin="a:1")
    assert view.seconds is None
    assert [(r.route, r.rates.rps, r.rates.p50) for r in view.routes] == [("api", None, None)]
    assert view.endpoints[1].state == "ejected"
    text = "\n".join(line for line, _ in render(view, interval=1.0, live=False))
    assert "collecting" in text and "ejected" in text


def test_a_restart_between_polls_gives_no_rates() -> None:
    old = Sidecar(start=1000.0)
    old.requests("api", "200", 50, 0.005)
    new = Sidecar(start=2000.0)
    new.requests("api", "200", 60, 0.005)  # more than before, so only the start time tells
    view = compute(old.poll(1.0), new.poll(2.0), admin="a:1")
    assert view.seconds is None and view.routes[0].rates.rps is None


def test_a_counter_reset_is_no_data_for_that_row_only() -> None:
    side = Sidecar()
    side.requests("api", "200", 10, 0.005)
    side.requests("web", "200", 10, 0.005)
    before = side.poll(0.0)
    side.stats.requests.remove("inbound", "api", "app", "200")  # e.g. a reload rebuilt it
    side.requests("api", "200", 3, 0.005)
    side.requests("web", "200", 5, 0.005)
    routes = {r.route: r.rates for r in compute(before, side.poll(1.0), admin="a:1").routes}
    assert routes["api"].rps is None  # 10 -> 3: not -7/s
    assert routes["web"].rps == 5.0


def test_a_series_born_between_polls_counts_from_zero() -> None:
    side = Sidecar()
    side.requests("api", "200", 10, 0.005)
    before = side.poll(0.0)
    side.requests("api", "503", 2, 0.005)  # the first 503: its series did not exist before
    side.requests("new", "200", 4, 0.5)  # a route's first requests
    routes = {r.route: r.rates for r in compute(before, side.poll(1.0), admin="a:1").routes}
    assert routes["api"].rps == 2.0 and routes["api"].share_5xx == 1.0
    assert routes["new"].rps == 4.0 and routes["new"].p50 == pytest.approx(0.375)  # mid (0.25, 0.5]


def test_no_route_row_is_hidden_until_used() -> None:
    side = Sidecar()
    side.requests("api", "200", 1, 0.005)
    side.stats.duration.labels("inbound", "", "")  # pre-created, as the listener does
    before = side.poll(0.0)
    assert [r.route for r in compute(before, side.poll(1.0), admin="a:1").routes] == ["api"]
    side.requests("", "404", 2, 0.001, cluster="")
    rows = compute(before, side.poll(1.0), admin="a:1").routes
    assert [(r.route, r.rates.rps, r.rates.share_4xx) for r in rows] == [("api", 0.0, None), ("", 2.0, 1.0)]


def test_render_shows_every_table() -> None:
    side = Sidecar()
    before = side.poll(0.0)
    side.requests("api", "200", 3, 0.005)
    side.requests("api", "500", 1, 0.005)
    view = compute(before, side.poll(1.0), admin="127.0.0.1:9901", service="orders")
    lines = render(view, interval=1.0, live=True)
    text = "\n".join(line for line, _ in lines)
    assert text.startswith("pillion top: orders at 127.0.0.1:9901 (pillion 9.9.9)  up ")
    assert "q quits" in lines[1][0]
    assert "LISTENER  ROUTE  CLUSTER  REQ/S    5XX   4XX" in text
    assert "inbound   api    app        4.0  25.0%  0.0%" in text
    assert ("app        4.0  25.0%  0.0%  3.75ms  4.98ms       2      3      0.0      1/2", "bad") in lines
    assert ("app      10.0.0.2:8080  ejected       0     0.0    -          1", "bad") in lines
    assert any(style == "bad" and "api" in line for line, style in lines)  # 5xx rows stand out


def test_odd_clusters_json_is_shown_as_far_as_it_makes_sense() -> None:
    side = Sidecar()
    poll = side.poll(0.0)
    poll.clusters = [{"name": "app", "endpoints": None, "connections": "many"}, {"endpoints": [1, {}]}]
    view = compute(None, poll, admin="a:1")
    assert [(c.name, c.connections, c.endpoints) for c in view.clusters] == [("app", None, 0), ("", None, 1)]
    assert [(e.address, e.state) for e in view.endpoints] == [("", "?")]
    render(view, interval=1.0, live=False)


class FailingClient(AdminClient):
    def __init__(self, error: Exception) -> None:
        super().__init__("127.0.0.1", 9, 1.0)
        self.error = error

    def poll(self) -> Poll:
        raise self.error


def test_monitor_shows_why_there_is_nothing_to_show() -> None:
    monitor = Monitor(FailingClient(AdminError("cannot reach the admin API at 127.0.0.1:9 (refused)")), 0.5)
    monitor.refresh()
    lines = monitor.lines(live=True)
    assert lines[1] == ("cannot reach the admin API at 127.0.0.1:9 (refused)", "message")
    assert lines[2][0].startswith("retrying every 0.5s") and lines[2][0].endswith("q quits")
