import random

from pillion.config.model import Duration, Fault, FaultAbort, FaultDelay
from pillion.filters.fault import FaultInjector, FaultStats
from pillion.telemetry.stats import Registry


def _fault(delay: float | None = None, abort: float | None = None, status: int = 503) -> Fault:
    return Fault(
        delay=FaultDelay(percent=delay, duration=Duration(0.25)) if delay is not None else None,
        abort=FaultAbort(percent=abort, status=status) if abort is not None else None,
    )


def _decisions(config: Fault, n: int = 10_000, seed: int = 1) -> list[tuple[float, int]]:
    injector = FaultInjector(config, random.Random(seed))
    return [injector.decide() for _ in range(n)]


def test_nothing_configured_or_zero_percent_never_fires() -> None:
    assert set(_decisions(Fault())) == {(0.0, 0)}
    assert set(_decisions(_fault(delay=0, abort=0))) == {(0.0, 0)}


def test_hundred_percent_always_fires() -> None:
    assert set(_decisions(_fault(delay=100, abort=100, status=418))) == {(0.25, 418)}
    assert set(_decisions(_fault(abort=100))) == {(0.0, 503)}
    assert set(_decisions(_fault(delay=100))) == {(0.25, 0)}


def test_thirty_percent_is_about_thirty_percent() -> None:
    decisions = _decisions(_fault(delay=30, abort=30), seed=7)
    delayed = sum(1 for d, _ in decisions if d == 0.25)
    aborted = sum(1 for _, s in decisions if s == 503)
    assert abs(delayed / 10_000 - 0.30) < 0.02
    assert abs(aborted / 10_000 - 0.30) < 0.02
    assert {d for d, _ in decisions} == {0.0, 0.25}
    assert {s for _, s in decisions} == {0, 503}


def test_delay_and_abort_are_independent() -> None:
    decisions = _decisions(_fault(delay=50, abort=50), n=20_000, seed=3)
    both = sum(1 for d, s in decisions if d and s)
    assert abs(both / 20_000 - 0.25) < 0.02  # 50% x 50%, not 50% (same draw) or 0% (exclusive)


def test_out_of_range_shares_are_clamped() -> None:
    assert set(_decisions(_fault(delay=250, abort=-5), n=1000)) == {(0.25, 0)}
    assert set(_decisions(_fault(abort=float("nan")), n=1000)) == {(0.0, 0)}


def test_stats_declare_per_route_counters() -> None:
    stats = FaultStats.declare(Registry())
    stats.delays.labels("ingress", "api").value += 1
    stats.aborts.labels("ingress", "api").value += 2
    assert stats.delays.labels("ingress", "api").value == 1
    assert stats.aborts.labels("ingress", "api").value == 2
