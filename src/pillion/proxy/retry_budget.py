"""A retry budget: retries may be at most a fraction of requests plus a floor, over a sliding window.

Theory of operation: a per-request limit (`attempts`) bounds the retries of one request, but when a whole
cluster fails every request retries, multiplying the load on an already sick service. Like Linkerd's
budget, a cluster allows a retry only while retries in the last `ttl` seconds stay under
`ratio` x requests in that window + `min_per_second` x `ttl`. The window is a ring of one-second
buckets turned by the Runtime's once-a-second tick, so counting a request is one list increment with no
clock read; the check sums the buckets, and only when a retry is wanted.
"""

from __future__ import annotations

import math

from pillion.config.model import RetryBudget as RetryBudgetConfig


class RetryBudget:
    __slots__ = ("_floor", "_ratio", "_retries", "_size", "requests", "slot")

    def __init__(self, config: RetryBudgetConfig) -> None:
        self._size = max(1, math.ceil(float(config.ttl)))
        self._ratio = config.ratio
        self._floor = config.min_per_second * self._size
        self.requests = [0] * self._size  # hot path: `budget.requests[budget.slot] += 1`
        self._retries = [0] * self._size
        self.slot = 0

    def request(self) -> None:
        self.requests[self.slot] += 1

    def try_retry(self) -> bool:
        """True (and the retry counted) when the budget has room for one more retry."""
        if sum(self._retries) >= self._ratio * sum(self.requests) + self._floor:
            return False
        self._retries[self.slot] += 1
        return True

    def tick(self) -> None:
        """A second passed: the oldest bucket is forgotten and becomes the current one."""
        slot = (self.slot + 1) % self._size
        self.requests[slot] = self._retries[slot] = 0
        self.slot = slot
