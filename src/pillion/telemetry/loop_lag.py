"""Event-loop lag: how late a periodic timer fires, the one number that says "the proxy is saturated".

Theory of operation: every request is handled on one event loop thread, so anything that holds that
thread -- a burst of CPU work, a blocking call slipped into the loop, the garbage collector -- delays
*every* request by the same amount. Latency histograms show the effect mixed with upstream time; this
gauge shows the cause alone. A background task asks to be woken every `INTERVAL` (0.5 s) and measures
how much later than asked it actually ran (`loop.time()` after the sleep minus the deadline it asked
for). That is exactly the wait a callback scheduled at that moment would have seen.

The gauge `pillion_event_loop_lag_seconds` is the largest lag of the last `WINDOW` samples (10 s), so a
single stall stays visible to a scraper that polls every 10-15 s instead of being overwritten by the
next, quiet sample; and it is set in the task itself, so a scrape costs nothing and several scrapers
see the same value. The cost is one timer wake-up, a subtraction and a `max` over 20 floats every
half second. A loop stalled for good never runs this task either: the gauge then freezes at its last
value, and the scrape itself, served by the same loop, times out -- which is the signal in that case.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pillion.runtime.tasks import Worker
from pillion.telemetry.stats import Registry

__all__ = ["INTERVAL", "WINDOW", "LoopLag"]

INTERVAL = 0.5  # seconds between samples
WINDOW = 20  # samples the gauge is the maximum of: 10 s at INTERVAL


class LoopLag:
    """The lag gauge and the worker that samples it; `start()` with the Runtime, `await stop()` after."""

    def __init__(self, registry: Registry, interval: float = INTERVAL, window: int = WINDOW) -> None:
        self._gauge = registry.gauge(
            "pillion_event_loop_lag_seconds",
            "How late the event loop ran a timer, in seconds: the largest delay sampled every "
            f"{interval:g}s over the last {interval * window:g}s.",
        ).labels()
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self._worker = Worker(self._run, name="event loop lag")

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        """Idempotent, and harmless if never started (shutdown runs after a failed start too)."""
        self._worker.stop()
        await self._worker.wait_closed()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        samples, gauge, interval = self._samples, self._gauge, self._interval
        while True:
            deadline = loop.time() + interval
            await asyncio.sleep(interval)
            # Never negative: a timer may fire up to the loop's clock resolution early.
            samples.append(max(loop.time() - deadline, 0.0))
            gauge.value = max(samples)
