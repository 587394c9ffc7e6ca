"""The retry budget: retries <= ratio x requests + min_per_second x ttl over a sliding window of seconds."""

from __future__ import annotations

from pillion.config.model import Duration
from pillion.config.model import RetryBudget as RetryBudgetConfig
from pillion.proxy.retry_budget import RetryBudget


def budget(ratio: float = 0.2, floor: float = 1.0, ttl: float = 3.0) -> RetryBudget:
    return RetryBudget(RetryBudgetConfig(ratio=ratio, min_per_second=floor, ttl=Duration(ttl)))


def test_the_floor_allows_min_per_second_times_ttl_without_requests() -> None:
    b = budget(floor=1.0, ttl=3.0)
    assert [b.try_retry() for _ in range(4)] == [True, True, True, False]


def test_the_ratio_adds_retries_in_proportion_to_requests() -> None:
    b = budget(ratio=0.2, floor=0.0)
    for _ in range(50):
        b.request()
    assert sum(b.try_retry() for _ in range(20)) == 10


def test_old_seconds_leave_the_window() -> None:
    b = budget(ratio=0.0, floor=1.0, ttl=3.0)
    assert sum(b.try_retry() for _ in range(5)) == 3
    b.tick()
    assert not b.try_retry()  # the three are still within the last 3 s
    b.tick()
    b.tick()  # the second that held them is reused: they are forgotten
    assert sum(b.try_retry() for _ in range(5)) == 3


def test_requests_age_out_too() -> None:
    b = budget(ratio=1.0, floor=0.0, ttl=2.0)
    for _ in range(4):
        b.request()
    b.tick()
    b.tick()
    assert not b.try_retry()
