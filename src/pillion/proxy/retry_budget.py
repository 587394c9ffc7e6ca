"""A retry budget: retries may be at most a fraction of requests plus a floor, over a sliding window.

Theory of operation: a per-try limit (`attempts`) bounds the retries of one request, but when a whole
cluster fails every request retries, multiplying the load on an already sick service. Like Linkerd's
budget, a cluster allows a retry only while retries in the last `ttl` seconds stay under
`ratio` x requests in that window + `min_per_second` x `ttl`. The window is a ring of one-second
buckets, so recording is two integer increments and the check sums at most `ttl` buckets, and only
when a retry is wanted.
"""

from __future__ import annotations

import math

from pillion.config.model import RetryBudget as RetryBudgetConfig


class RetryBudget:
    __slots__ = ("_floor", "_ratio", "_requests", "_retries", "_second", "_size")

    def __init__(self, config: RetryBudgetConfig) -> None:
        self._size = max(1, math.ceil(float(config.ttl)))
        self._ratio = config.ratio
        self._floor = config.min_per_second * self._size
        self._requests = [0] * self._size
        self._retries = [0] * self._size
        self._second = 0  # the whole second the current bucket counts

    def _advance(self, now: float) -> int:
        """The bucket for `now`, clearing the buckets of the seconds that passed since the last call."""
        second = int(now)
        gap = second - self._second
        if gap:
            for i in range(min(gap, self._size)):
                slot = (self._second + 1 + i) % self._size
                self._requests[slot] = self._retries[slot] = 0
            self._second = second
        return second % self._size

    def request(self, now: float) -> None:
        self._requests[self._advance(now)] += 1

    def try_retry(self, now: float) -> bool:
        """True (and the retry counted) when the budget has room for one more retry."""
        slot = self._advance(now)
        if sum(self._retries) >= self._ratio * sum(self._requests) + self._floor:
            return False
        self._retries[slot] += 1
        return True
