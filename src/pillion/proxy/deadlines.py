"""Coarse deadlines for many short-lived waits, at the cost of a set insert each.

A request's route timeout is armed for nearly every request and almost never fires. A loop timer per
request (create, then cancel) costs more than the rest of routing it; here a deadline is put in the
bucket of its `resolution`-wide time slot, and one loop timer per non-empty slot fires the whole bucket.
Cancelling is removing the item from its bucket. A deadline fires up to `resolution` late, never early.
Nothing is scheduled while nothing waits, so an idle sidecar stays asleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

RESOLUTION = 0.004  # seconds: timeouts are configured in tens of milliseconds and up


class Deadlines(Generic[T]):
    __slots__ = ("_buckets", "_expire", "_loop", "_resolution")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, expire: Callable[[T], None], resolution: float = RESOLUTION
    ) -> None:
        self._loop = loop
        self._expire = expire
        self._resolution = resolution
        self._buckets: dict[int, set[T]] = {}

    def add(self, delay: float, item: T) -> set[T]:
        """Call `expire(item)` once `delay` seconds have passed, unless it is removed from the returned
        bucket first (`bucket.discard(item)`)."""
        slot = int((self._loop.time() + delay) / self._resolution) + 1
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            self._loop.call_at(slot * self._resolution, self._fire, slot)
        bucket.add(item)
        return bucket

    def _fire(self, slot: int) -> None:
        bucket = self._buckets.pop(slot)
        expire = self._expire
        for item in list(bucket):
            if item in bucket:  # an earlier expiry may have cancelled a later one
                expire(item)
        bucket.clear()  # an owner still holding it finds nothing to discard

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())
