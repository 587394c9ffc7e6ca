"""pillion.telemetry.scrape: reading exposition text back, differencing scrapes, histogram quantiles.

The quantile cases are computed by hand in the comments; one test also has promtool (Prometheus' own
PromQL engine) evaluate histogram_quantile on the same buckets, so "like Prometheus" is checked, not assumed.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from pillion.telemetry.prometheus import render
from pillion.telemetry.scrape import Histogram, ParseError, counter_delta, parse, quantile
from pillion.telemetry.stats import Registry
from pillion.testing.tools import require_tool

INF = math.inf


def test_samples_labels_comments_and_blank_lines() -> None:
    scrape = parse(
        "# HELP pillion_x_total Things.\n"
        "# TYPE pillion_x_total counter\n"
        "# a free comment\n"
        "\n"
        'pillion_x_total{listener="inbound",code="200"} 42\n'
        "pillion_up 1\n"
        "   \n"
        'pillion_x_total{listener="inbound",code="503"} 3 1700000000000\n'  # a timestamp, ignored
    )
    assert scrape.types == {"pillion_x_total": "counter"}
    assert [s.name for s in scrape.samples] == ["pillion_x_total", "pillion_up", "pillion_x_total"]
    assert scrape.value("pillion_x_total", listener="inbound", code="200") == 42
    assert scrape.value("pillion_x_total", code="503", listener="inbound") == 3  # label order is irrelevant
    assert scrape.value("pillion_x_total", code="404", listener="inbound") is None
    assert scrape.value("pillion_up") == 1
    assert scrape.total("pillion_x_total") == 45
    assert scrape.total("pillion_absent") is None


def test_escaped_label_values() -> None:
    text = r'pillion_x{a="quote \" back \\ slash\nnewline",b="}, =\"{",c=""} 1' + "\n"
    sample = parse(text).samples[0]
    assert sample.labels == {"a": 'quote " back \\ slash\nnewline', "b": '}, ="{', "c": ""}


def test_special_values() -> None:
    scrape = parse('pillion_a +Inf\npillion_b -Inf\npillion_c NaN\npillion_d 1.5e-3\npillion_e{x="1",} 2\n')
    assert scrape.value("pillion_a") == INF
    assert scrape.value("pillion_b") == -INF
    assert math.isnan(scrape.value("pillion_c") or 0.0)
    assert scrape.value("pillion_d") == 0.0015
    assert scrape.value("pillion_e", x="1") == 2  # a trailing comma in the label set is allowed


@pytest.mark.parametrize(
    "line",
    [
        "pillion_x",  # no value
        "pillion_x one",
        "pillion_x 1_000",
        'pillion_x{a="1} 2',  # unterminated value
        "pillion_x{a=1} 2",  # unquoted value
        'pillion_x{a="1" b="2"} 3',  # no comma
        'pillion_x{a="1",a="2"} 3',  # repeated label
        "{} 1",  # no name
    ],
)
def test_malformed_lines_are_parse_errors_naming_the_line(line: str) -> None:
    with pytest.raises(ParseError, match="line 2"):
        parse("pillion_ok 1\n" + line + "\n")


def test_histograms_group_buckets_by_labels_without_le() -> None:
    scrape = parse(
        'pillion_d_seconds_bucket{route="a",le="+Inf"} 4\n'  # out of order on purpose
        'pillion_d_seconds_bucket{route="a",le="0.1"} 1\n'
        'pillion_d_seconds_bucket{route="a",le="1"} 3\n'
        'pillion_d_seconds_sum{route="a"} 2.5\n'
        'pillion_d_seconds_count{route="a"} 4\n'
        'pillion_d_seconds_bucket{route="b",le="0.1"} 0\n'
        'pillion_d_seconds_bucket{route="b",le="1"} 0\n'
        'pillion_d_seconds_bucket{route="b",le="+Inf"} 0\n'
    )
    hs = scrape.histograms("pillion_d_seconds")
    a = hs[(("route", "a"),)]
    assert a.buckets == [(0.1, 1), (1.0, 3), (INF, 4)] and a.sum == 2.5 and a.count == 4
    assert hs[(("route", "b"),)].count == 0


def test_a_bucket_without_le_is_an_error() -> None:
    with pytest.raises(ParseError):
        parse('pillion_d_seconds_bucket{route="a"} 1\n').histograms("pillion_d_seconds")


def test_reads_back_what_pillion_writes() -> None:
    registry = Registry()
    reqs = registry.counter("pillion_requests_total", "Requests.", ("route", "code"))
    reqs.labels('odd "route"\\\n', "200").inc(7)
    reqs.labels("ünïcødé ☃", "503").inc()
    lat = registry.histogram("pillion_request_duration_seconds", "Latency.", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        lat.labels("r").observe(v)
    registry.gauge("pillion_empty", "No children.", ("x",))
    scrape = parse(render(registry))
    assert scrape.value("pillion_requests_total", route='odd "route"\\\n', code="200") == 7
    assert scrape.value("pillion_requests_total", route="ünïcødé ☃", code="503") == 1
    h = scrape.histograms("pillion_request_duration_seconds")[(("route", "r"),)]
    assert h.buckets == [(0.1, 2), (1.0, 3), (INF, 4)] and h.sum == pytest.approx(3.65)
    assert scrape.types["pillion_empty"] == "gauge" and not list(scrape.series("pillion_empty"))


# -- differences between scrapes ------------------------------------------------------------------


def test_counter_delta() -> None:
    assert counter_delta(10, 15) == 5
    assert counter_delta(10, 10) == 0
    assert counter_delta(None, 4) == 4  # born between the scrapes: it stood at 0
    assert counter_delta(4, None) is None  # gone: no data
    assert counter_delta(None, None) is None
    assert counter_delta(15, 3) is None  # reset: no data, never a negative rate
    assert counter_delta(math.nan, 3) is None
    assert counter_delta(3, math.nan) is None


def test_histogram_minus() -> None:
    before = Histogram([(0.1, 1), (1.0, 3), (INF, 4)], 2.0)
    after = Histogram([(0.1, 5), (1.0, 9), (INF, 12)], 6.5)
    delta = after.minus(before)
    assert delta is not None
    assert delta.buckets == [(0.1, 4), (1.0, 6), (INF, 8)] and delta.sum == 4.5
    born = after.minus(None)
    assert born is not None and born.buckets == after.buckets
    assert before.minus(after) is None  # a reset
    assert after.minus(Histogram([(0.5, 1), (INF, 1)])) is None  # other bounds: not comparable
    partly = Histogram([(0.1, 0), (1.0, 9), (INF, 12)])  # one bucket went down: also a reset
    assert partly.minus(before) is None


def test_histogram_plus() -> None:
    a = Histogram([(0.1, 1), (INF, 2)], 1.0)
    b = Histogram([(0.1, 3), (INF, 3)], 0.25)
    assert a.plus(b) == Histogram([(0.1, 4), (INF, 5)], 1.25)
    with pytest.raises(ValueError):
        a.plus(Histogram([(0.2, 1), (INF, 1)]))


# -- quantiles ------------------------------------------------------------------------------------

# 40 observations: 10 in (0, 0.1], 20 in (0.1, 0.5], 10 in (0.5, 1], none above.
BUCKETS = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.10, 0.04),  # rank 4 of the first bucket's 10, from 0 to 0.1: 0.1 * 4/10
        (0.25, 0.1),  # rank 10: exactly the first bucket's top
        (0.50, 0.3),  # rank 20: 10 into the second bucket's 20, 0.1 + 0.4 * 10/20
        (0.75, 0.5),  # rank 30: the second bucket's top
        (0.99, 0.98),  # rank 39.6: 9.6 into the third bucket's 10, 0.5 + 0.5 * 9.6/10
        (1.00, 1.0),  # rank 40: the top of the highest bucket that holds anything
    ],
)
def test_quantile_interpolates_linearly_inside_the_bucket(q: float, expected: float) -> None:
    assert quantile(q, BUCKETS) == pytest.approx(expected)


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    # 5 of 10 above 0.1: p99's rank 9.9 lands in +Inf, which has no width; the answer is "at least 0.1".
    assert quantile(0.99, [(0.1, 5.0), (INF, 10.0)]) == 0.1
    assert quantile(0.5, [(0.1, 5.0), (INF, 10.0)]) == pytest.approx(0.1)


def test_quantile_bucket_order_does_not_matter() -> None:
    assert quantile(0.5, list(reversed(BUCKETS))) == pytest.approx(0.3)


def test_quantile_skips_empty_buckets() -> None:
    # Everything in (0.25, 0.5]: the empty buckets below contribute nothing, p50 is mid-bucket.
    buckets = [(0.1, 0.0), (0.25, 0.0), (0.5, 4.0), (INF, 4.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.375)


def test_quantile_without_data_is_none() -> None:
    assert quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None  # no observations
    assert quantile(0.5, [(0.1, 3.0), (1.0, 4.0)]) is None  # no +Inf bucket
    assert quantile(0.5, [(INF, 4.0)]) is None  # nothing to interpolate between
    assert quantile(0.5, []) is None


def test_quantile_first_bound_at_or_below_zero() -> None:
    assert quantile(0.5, [(-1.0, 3.0), (INF, 4.0)]) == -1.0


def test_quantile_outside_0_1_is_an_error() -> None:
    with pytest.raises(ValueError):
        quantile(1.5, BUCKETS)


def test_quantile_agrees_with_promql_histogram_quantile(tmp_path: Path) -> None:
    """promtool evaluates histogram_quantile on the same buckets, raw and as an increase between two
    scrapes; its test passes only if every value matches ours."""
    promtool = require_tool("promtool")
    later = [(0.1, 25.0), (0.5, 70.0), (1.0, 81.0), (INF, 90.0)]
    delta = Histogram(later).minus(Histogram(BUCKETS))
    assert delta is not None
    series = "\n".join(
        f"      - series: 'd_bucket{{le=\"{'+Inf' if b == INF else b}\"}}'\n        values: '{n0:g} {n1:g}'"
        for (b, n0), (_, n1) in zip(BUCKETS, later, strict=True)
    )
    cases = []
    for q in (0.1, 0.25, 0.5, 0.9, 0.95, 0.99):
        for expr, buckets in (
            (f"histogram_quantile({q}, d_bucket offset 1m)", BUCKETS),
            (f"histogram_quantile({q}, d_bucket - d_bucket offset 1m)", delta.buckets),
        ):
            ours = quantile(q, buckets)
            assert ours is not None
            cases.append(
                f"      - expr: '{expr}'\n        eval_time: 1m\n"
                f"        exp_samples:\n          - labels: '{{}}'\n            value: {ours!r}"
            )
    spec = tmp_path / "quantiles.yaml"
    spec.write_text(
        "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
        + series
        + "\n    promql_expr_test:\n"
        + "\n".join(cases)
        + "\n"
    )
    done = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
