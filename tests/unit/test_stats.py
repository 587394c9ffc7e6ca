"""Registry, children and the exposition text: the math, the caching and the exact output format."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pillion.proxy.router import RouteStats
from pillion.telemetry.prometheus import (
    CONTENT_TYPE,
    escape_help,
    escape_label_value,
    format_value,
    render,
)
from pillion.telemetry.stats import DEFAULT_BUCKETS, Counter, Gauge, Histogram, Registry


def test_counter_inc_and_direct_attribute() -> None:
    r = Registry()
    c = r.counter("pillion_requests_total", "Requests.").labels()
    assert isinstance(c, Counter)
    c.inc()
    c.inc(4)
    c.value += 1
    assert c.value == 6
    assert not hasattr(c, "__dict__")  # __slots__ keep children small and attribute access fast


def test_gauge_inc_dec_set() -> None:
    g = Registry().gauge("pillion_active_requests", "In flight.").labels()
    assert isinstance(g, Gauge)
    g.inc()
    g.inc(2)
    g.dec()
    assert g.value == 2
    g.set(-1.5)
    assert g.value == -1.5


def test_histogram_buckets_sum_count() -> None:
    h = Registry().histogram("pillion_request_duration_seconds", "Latency.", buckets=(0.1, 1.0)).labels()
    assert isinstance(h, Histogram)
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(v)
    # A value equal to a bound belongs to that bound's bucket (`le` is <=); the last bucket is +Inf.
    assert h.counts == [2, 2, 1]
    assert h.cumulative() == [2, 4, 5]
    assert h.count == 5
    assert h.sum == pytest.approx(4.65)


def test_histogram_counts_are_exact_whichever_buckets_alternate() -> None:
    """The bucket hit last counts apart until another is hit or the counts are read: every read, at
    any point of any sequence, must give exact counts, including reads between hits of one bucket."""
    registry = Registry()
    h = registry.histogram("pillion_y_seconds", "y.", buckets=(1.0, 2.0, 3.0)).labels()
    expected = [0, 0, 0, 0]
    sequence = [0.5, 0.5, 2.5, 0.5, 9.0, 9.0, 9.0, 1.5, 1.5, 0.5] * 3
    for n, v in enumerate(sequence):
        h.observe(v)
        expected[sum(v > b for b in h.bounds)] += 1
        if n % 4 == 0:  # reads in the middle, also while one bucket keeps being hit
            assert h.counts == expected
            assert h.cumulative() == [sum(expected[: i + 1]) for i in range(4)]
    assert h.counts == expected and h.count == len(sequence)
    h.observe(0.5)  # left pending in the hot bucket: a scrape must include it
    assert f'pillion_y_seconds_bucket{{le="1"}} {expected[0] + 1}' in render(registry)
    assert h.sum == pytest.approx(sum(sequence) + 0.5)


def test_route_stats_count_each_status_apart() -> None:
    """A route remembers the status it counted last; a change of status must go to its own counter."""
    registry = Registry()
    requests = registry.counter("pillion_z_total", "z.", ("listener", "route", "cluster", "code"))
    hist = registry.histogram("pillion_z_seconds", "z.", ("listener", "route", "cluster"))
    labels = ("in", "r", "c")
    stats = RouteStats(hist.labels(*labels), hist.labels(*labels), hist.labels(*labels), requests, labels)
    for code in (200, 200, 404, 200, 503, 503, 200):
        stats.count(code)
    assert {code: requests.labels(*labels, str(code)).value for code in ("200", "404", "503")} == {
        "200": 4.0, "404": 1.0, "503": 2.0,
    }  # fmt: skip
    # A copy with other children (as split variants are made) must not count into this one's.
    other = ("in", "r", "d")
    copy = dataclasses.replace(stats, labels=other, by_code={})
    copy.count(200)
    assert requests.labels(*labels, "200").value == 4.0 and requests.labels(*other, "200").value == 1.0


def test_default_buckets() -> None:
    assert DEFAULT_BUCKETS == (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    h = Registry().histogram("pillion_x_seconds", "x.").labels()
    assert len(h.counts) == len(DEFAULT_BUCKETS) + 1
    h.observe(0.0)
    h.observe(11)
    assert h.counts[0] == 1 and h.counts[-1] == 1


def test_labels_cached_per_values() -> None:
    fam = Registry().counter("pillion_requests_total", "Requests.", labels=("route", "code"))
    a = fam.labels("r1", "200")
    assert fam.labels("r1", "200") is a
    assert fam.labels("r1", "500") is not a
    with pytest.raises(ValueError, match="takes labels"):
        fam.labels("r1")
    with pytest.raises(TypeError):
        fam.labels("r1", 200)  # type: ignore[arg-type]


def test_remove_and_clear() -> None:
    fam = Registry().gauge("pillion_pool_connections", "Pooled.", labels=("cluster",))
    old = fam.labels("a")
    old.set(3)
    fam.labels("b")
    fam.remove("a")
    fam.remove("never-existed")  # forgiving: a reload may remove what was never used
    assert [v for v, _ in fam.children()] == [("b",)]
    assert fam.labels("a") is not old and fam.labels("a").value == 0
    fam.clear()
    assert list(fam.children()) == []


def test_unlabelled_family_exists_from_the_start() -> None:
    r = Registry()
    r.counter("pillion_reloads_total", "Reloads.")
    assert "pillion_reloads_total 0\n" in render(r)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("counter", "requests_total"),  # missing prefix
        ("counter", "pillion_requests"),  # counter without _total
        ("gauge", "pillion_requests_total"),  # non-counter with _total
        ("gauge", "pillion_Requests"),  # camelCase
        ("gauge", "pillion_a:b"),  # reserved char
        ("histogram", "pillion_latency_ms"),  # abbreviated unit
        ("histogram", "pillion_latency_milliseconds"),  # non-base unit
        ("gauge", "pillion_queue_count"),  # reserved histogram suffix
        ("gauge", "pillion_queue_gauge"),  # type in name
        ("gauge", "pillion_"),
    ],
)
def test_bad_names_rejected(kind: str, name: str) -> None:
    r = Registry()
    with pytest.raises(ValueError):
        getattr(r, kind)(name, "Help.")


def test_bad_declarations_rejected() -> None:
    r = Registry()
    r.counter("pillion_requests_total", "Requests.")
    with pytest.raises(ValueError, match="twice"):
        r.counter("pillion_requests_total", "Requests.")
    with pytest.raises(ValueError, match="twice"):
        r.gauge_callback("pillion_requests_total", "x", lambda: 1.0)
    with pytest.raises(ValueError, match="help"):
        r.gauge("pillion_g", " ")
    with pytest.raises(ValueError, match="le"):
        r.histogram("pillion_hist_seconds", "h.", labels=("le",))
    with pytest.raises(ValueError, match="label"):
        r.gauge("pillion_g2", "g.", labels=("__x",))
    with pytest.raises(ValueError, match="duplicate"):
        r.gauge("pillion_g3", "g.", labels=("a", "a"))
    with pytest.raises(TypeError):
        r.gauge("pillion_g4", "g.", labels="route")
    with pytest.raises(ValueError, match="buckets"):
        r.histogram("pillion_hist2_seconds", "h.", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="buckets"):
        r.histogram("pillion_hist3_seconds", "h.", buckets=(1.0, math.inf))


def test_collectors_run_at_scrape() -> None:
    r = Registry()
    calls: list[int] = []
    r.gauge_callback("pillion_pool_size", "Pool size.", lambda: float(len(calls)))
    r.collector(lambda: calls.append(1))
    assert "pillion_pool_size 0\n" in render(r)  # callbacks run in registration order
    assert "pillion_pool_size 1\n" in render(r)


def test_render_exact_output() -> None:
    r = Registry()
    c = r.counter("pillion_requests_total", "Requests handled.\nSecond line \\ ok.", labels=("route", "code"))
    c.labels("r1", "200").inc(3)
    c.labels('we"ird\\path\nx', "500").inc()
    r.gauge("pillion_temperature", "A gauge.").labels().set(1.5)
    h = r.histogram("pillion_latency_seconds", "Latency.", labels=("route",), buckets=(0.1, 1))
    h.labels("r1").observe(0.05)
    h.labels("r1").observe(2)
    r.gauge("pillion_empty", "No children yet.", labels=("x",))
    assert render(r) == (
        "# HELP pillion_requests_total Requests handled.\\nSecond line \\\\ ok.\n"
        "# TYPE pillion_requests_total counter\n"
        'pillion_requests_total{route="r1",code="200"} 3\n'
        'pillion_requests_total{route="we\\"ird\\\\path\\nx",code="500"} 1\n'
        "# HELP pillion_temperature A gauge.\n"
        "# TYPE pillion_temperature gauge\n"
        "pillion_temperature 1.5\n"
        "# HELP pillion_latency_seconds Latency.\n"
        "# TYPE pillion_latency_seconds histogram\n"
        'pillion_latency_seconds_bucket{route="r1",le="0.1"} 1\n'
        'pillion_latency_seconds_bucket{route="r1",le="1"} 1\n'
        'pillion_latency_seconds_bucket{route="r1",le="+Inf"} 2\n'
        'pillion_latency_seconds_sum{route="r1"} 2.05\n'
        'pillion_latency_seconds_count{route="r1"} 2\n'
        "# HELP pillion_empty No children yet.\n"
        "# TYPE pillion_empty gauge\n"
    )


def test_unlabelled_histogram_render() -> None:
    r = Registry()
    r.histogram("pillion_latency_seconds", "Latency.", buckets=(0.5,)).labels().observe(0.25)
    assert render(r).splitlines()[2:] == [
        'pillion_latency_seconds_bucket{le="0.5"} 1',
        'pillion_latency_seconds_bucket{le="+Inf"} 1',
        "pillion_latency_seconds_sum 0.25",
        "pillion_latency_seconds_count 1",
    ]


def test_escaping_and_values() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_help('a\\b"c\nd') == 'a\\\\b"c\\nd'
    assert format_value(3.0) == "3"
    assert format_value(0.0005) == "0.0005"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(1e20) == "1e+20"
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
