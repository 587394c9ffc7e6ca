"""Coarse deadlines for many short-lived waits, at the cost of a set insert each.

A request's route timeout is armed for nearly every request and almost never fires. A loop timer per
request (create, then cancel) costs more than the rest of routing it; here a deadline goes into the
bucket of a time slot, and one loop timer per bucket fires it. Cancelling is removing the item from its
bucket. Nothing is scheduled while nothing waits, so an idle sidecar stays asleep.

Slots are wider for longer delays (a power of two of milliseconds, at most 1/32 of the delay, at least
`MIN_SLOT_MS`): a deadline fires late by at most that width, never early, and under steady load each
distinct delay keeps about 32-64 buckets alive rather than one per few milliseconds of the delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Generic, TypeVar

log: Final = logging.getLogger("pillion.deadlines")

T = TypeVar("T")

MIN_SLOT_MS: Final = 4  # timeouts are configured in tens of milliseconds and up


def slot_width_ms(delay: float) -> int:
    """The bucket width for a delay: the largest power of two of ms up to delay/32, at least MIN_SLOT_MS."""
    width = MIN_SLOT_MS
    while width * 2 <= delay * 1000 / 32:
        width *= 2
    return width


class Deadlines(Generic[T]):
    __slots__ = (
        "_buckets", "_expire", "_last", "_last_delay", "_last_fire", "_last_width", "_loop", "_widths",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[T], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._buckets: dict[int, set[T]] = {}  # by firing time, in ms of loop time
        self._widths: dict[float, int] = {}  # slot width by delay: routes have few distinct timeouts
        # The last delay with its width, and the last bucket with its firing time: consecutive adds
        # mostly share both, and comparing native numbers is a fraction of a dict lookup, which would
        # box and hash the float or int first. `_last_fire` is -1 once that bucket has fired.
        self._last_delay = -1.0
        self._last_width = MIN_SLOT_MS
        self._last_fire = -1
        self._last: set[T] = set()

    def add(self, delay: float, item: T, now: float) -> set[T]:
        """Call `expire(item)` once `delay` seconds past `now` (loop time, or the same clock's
        `perf_counter()`, read by the caller) have passed, unless it is removed from the returned bucket
        first (`bucket.discard(item)`)."""
        if delay == self._last_delay:
            width = self._last_width
        else:
            known = self._widths.get(delay)
            width = known if known is not None else slot_width_ms(delay)
            if known is None:
                self._widths[delay] = width
            self._last_delay, self._last_width = delay, width
        fire = (int((now + delay) * 1000) // width + 1) * width
        if fire == self._last_fire:
            bucket = self._last
        else:
            found = self._buckets.get(fire)
            if found is None:
                bucket = self._buckets[fire] = set()
                self._loop.call_at(fire / 1000, self._fire, fire)
            else:
                bucket = found
            self._last_fire, self._last = fire, bucket
        bucket.add(item)
        return bucket

    def _fire(self, fire: int) -> None:
        bucket = self._buckets.pop(fire)
        if fire == self._last_fire:
            self._last_fire = -1  # a later add for this slot, should the timer run early, makes a new one
        expire = self._expire
        for item in list(bucket):
            if item in bucket:  # an earlier expiry may have cancelled a later one
                try:
                    expire(item)
                except Exception:  # one failure must not keep the others from expiring
                    log.exception("timeout handling failed")
        bucket.clear()  # an owner still holding it finds nothing to discard

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    @property
    def buckets(self) -> int:
        """Buckets alive (for tests: the memory this costs is bounded)."""
        return len(self._buckets)
