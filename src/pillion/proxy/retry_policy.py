"""A route's retry policy, compiled: which failures are retried, how often, after how long.

Theory of operation: the config's `on` words become a set of status codes plus three flags (connect
failure, reset, per-try timeout), so deciding on a response head is one set lookup. Whether a request
may be replayed at all is decided per request in the downstream connection: its body must have been kept
(at most `buffer` bytes), and after a response or a reset its method must be idempotent unless
`non_idempotent` is set; a connect failure is always safe, since nothing reached the app.

Backoff is "full jitter" (AWS architecture blog): a uniform wait between 0 and `base x 2^(try-1)`, capped
at `max`, so the retries of many clients spread out instead of arriving in waves.
"""

from __future__ import annotations

import random
from typing import Final

from pillion.config.model import RetryPolicy

IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_GATEWAY: Final = (502, 503, 504)
_RETRIABLE_4XX: Final = (409,)


class RetryRule:
    __slots__ = (
        "attempts",
        "base",
        "buffer",
        "cap",
        "connect_failure",
        "non_idempotent",
        "per_try_timeout",
        "reset",
        "statuses",
        "timeout_retry",
    )

    def __init__(self, policy: RetryPolicy) -> None:
        statuses: set[int] = set()
        for word in policy.on:
            if word == "5xx":
                statuses.update(range(500, 600))
            elif word == "gateway-error":
                statuses.update(_GATEWAY)
            elif word == "retriable-4xx":
                statuses.update(_RETRIABLE_4XX)
            elif word.isdigit():
                statuses.add(int(word))
        self.statuses = frozenset(statuses)
        self.connect_failure = "connect-failure" in policy.on
        # A 5xx policy covers resets too: the app failed to answer, which is what 5xx means to a client.
        self.reset = "reset" in policy.on or "5xx" in policy.on or "gateway-error" in policy.on
        self.timeout_retry = "per-try-timeout" in policy.on
        self.attempts = policy.attempts
        self.per_try_timeout = float(policy.per_try_timeout)
        self.base = float(policy.backoff.base)
        self.cap = float(policy.backoff.max)
        self.buffer = int(policy.buffer)
        self.non_idempotent = policy.non_idempotent

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return random.uniform(0.0, min(self.cap, self.base * (1 << min(retry - 1, 30))))

    def may_replay(self, method: bytes) -> bool:
        """After the app may have seen the request: only idempotent methods, unless configured."""
        return self.non_idempotent or method in IDEMPOTENT
