"""The event-loop lag gauge: near zero on an idle loop, the stall's length after a blocking call, the
maximum of the window, and a worker that starts and stops cleanly."""

from __future__ import annotations

import asyncio
import time

import uvloop

from pillion.runtime.tasks import live_tasks
from pillion.telemetry.loop_lag import LoopLag
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry

INTERVAL = 0.02  # faster than production's 0.5 s, so the test takes a fraction of a second


def _gauge(registry: Registry) -> float:
    family = registry.get("pillion_event_loop_lag_seconds")
    assert family is not None and family.kind == "gauge"
    return family.labels().value


def test_idle_loop_then_a_stall() -> None:
    async def main() -> None:
        registry = Registry()
        lag = LoopLag(registry, interval=INTERVAL, window=1000)
        assert "pillion_event_loop_lag_seconds 0\n" in render(registry)  # exported (as 0) before start
        lag.start()
        try:
            await asyncio.sleep(INTERVAL * 5)
            assert 0.0 <= _gauge(registry) < 0.05  # idle: timer slack only (generous: CI machines are noisy)
            time.sleep(0.2)  # noqa: ASYNC251  # the stall being measured
            await asyncio.sleep(INTERVAL * 2)
            # The stall delayed one timer by up to its length (minus the part of the interval it overlapped).
            assert 0.2 - INTERVAL - 0.01 <= _gauge(registry) < 0.3
            await asyncio.sleep(INTERVAL * 5)
            assert _gauge(registry) >= 0.2 - INTERVAL - 0.01  # still the window's maximum
        finally:
            await lag.stop()
        assert not [t for t in live_tasks() if t.get_name() == "event loop lag"]

    uvloop.run(main())


def test_the_window_forgets_an_old_stall() -> None:
    async def main() -> None:
        registry = Registry()
        lag = LoopLag(registry, interval=INTERVAL, window=3)
        lag.start()
        try:
            await asyncio.sleep(INTERVAL * 2)
            time.sleep(0.1)  # noqa: ASYNC251
            await asyncio.sleep(INTERVAL * 2)
            assert _gauge(registry) >= 0.1 - INTERVAL - 0.01
            await asyncio.sleep(INTERVAL * 8)  # more than 3 quiet samples later
            assert _gauge(registry) < 0.05
        finally:
            await lag.stop()

    uvloop.run(main())


def test_stop_without_start_and_twice() -> None:
    async def main() -> None:
        lag = LoopLag(Registry())
        await lag.stop()  # what Runtime.shutdown does after a failed start
        lag.start()
        await lag.stop()
        await lag.stop()

    uvloop.run(main())
