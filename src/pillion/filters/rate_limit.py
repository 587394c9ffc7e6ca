"""Local rate limiting: a token bucket per key (the route, a client address, or a header's value).

Theory of operation: a bucket holds up to `burst` tokens and gains `requests_per_second` of them per
second; a request takes one or is refused (429) with the time until the next token, for `retry-after`.
Refill is lazy: a bucket stores its level and when it was last touched, and `check` adds what accrued
since, so there is no timer. The buckets live in a dict bounded to `MAX_KEYS`: when it is full, buckets
that have refilled are dropped first (a full bucket and no bucket decide the same, so that loses
nothing), and if that frees less than an eighth of the table, the ones idle longest go too. Memory is
bounded whatever the clients send; the price is that a flood of more distinct keys than the table holds
can make an evicted key start over with a full bucket, so the limit errs towards letting through.
"""

from __future__ import annotations

import heapq
import math
import time
from _blake2 import blake2b  # not hashlib, which loads OpenSSL (see pillion.tls.loading)
from collections.abc import Callable
from dataclasses import dataclass

from pillion.config.model import RateLimit
from pillion.telemetry.stats import CounterFamily, Registry

MAX_KEYS = 10_000
# Keys longer than this (header values can be kilobytes) are stored as a 16-byte digest, so the table's
# memory is bounded by its key count.
MAX_KEY_BYTES = 64
# retry-after is capped at a day; the longest honest wait is one token's time, 1 / requests_per_second.
MAX_RETRY_AFTER = 86_400


@dataclass(slots=True)
class RateLimitStats:
    limited: CounterFamily

    @classmethod
    def declare(cls, registry: Registry) -> RateLimitStats:
        return cls(
            limited=registry.counter(
                "pillion_rate_limited_total",
                "Requests refused with 429 by a route's local rate limit.",
                ("listener", "route"),
            )
        )


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class RateLimiter:
    """The token buckets of one route's `rate_limit`."""

    __slots__ = ("_buckets", "_burst", "_clock", "_max_keys", "_rate", "config")

    def __init__(
        self, config: RateLimit, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self.config = config
        self._rate = float(config.requests_per_second)
        self._burst = float(config.burst if config.burst > 0 else max(1, math.ceil(self._rate)))
        self._clock = clock
        self._max_keys = max(1, max_keys)
        self._buckets: dict[bytes, _Bucket] = {}

    def __len__(self) -> int:
        """Buckets held now."""
        return len(self._buckets)

    def check(self, key: bytes) -> float:
        """Take a token from `key`'s bucket (b"" when the limit is per route): 0.0 when allowed, else the
        seconds until a token is available (> 0), and nothing is taken."""
        if len(key) > MAX_KEY_BYTES:
            key = blake2b(key, digest_size=16).digest()
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._make_room(now)
            self._buckets[key] = _Bucket(self._burst - 1, now)
            return 0.0
        tokens = bucket.tokens
        elapsed = now - bucket.last
        if elapsed > 0:  # a clock that steps back adds nothing rather than taking tokens away
            tokens = min(self._burst, tokens + elapsed * self._rate)
            bucket.last = now
        if tokens >= 1:
            bucket.tokens = tokens - 1
            return 0.0
        bucket.tokens = tokens
        if self._rate <= 0:  # validation forbids it; refuse with the longest wait rather than divide by 0
            return float(MAX_RETRY_AFTER)
        return (1 - tokens) / self._rate

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        rate, burst = self._rate, self._burst
        refilled = [k for k, b in buckets.items() if b.tokens + (now - b.last) * rate >= burst]
        for k in refilled:
            del buckets[k]
        # Free an eighth of the table at least, so a flood of new keys pays for a full scan only once
        # per max_keys/8 of them.
        excess = len(buckets) - (self._max_keys - max(1, self._max_keys // 8))
        if excess > 0:
            for k in heapq.nsmallest(excess, buckets, key=lambda k: buckets[k].last):
                del buckets[k]


def retry_after(seconds: float) -> bytes:
    """The `retry-after` value for a wait of `seconds`: whole seconds, rounded up, at least 1."""
    if not seconds < MAX_RETRY_AFTER:  # also NaN
        return str(MAX_RETRY_AFTER).encode()
    return str(max(1, math.ceil(seconds))).encode()
