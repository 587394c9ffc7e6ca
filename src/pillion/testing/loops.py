"""Running a test's coroutine on a fresh event loop, then checking that no task outlived it.

`checked_runner("uvloop")` (or `"asyncio"`) returns a function that runs one coroutine to completion
on a new loop of that kind and fails if a task spawned through `pillion.runtime.tasks` is still
running afterwards: the check that background work (health checks, DNS refreshes, connects) is
stopped by whoever started it. tests/conftest.py offers it as the `run` fixture, on each loop of
`LOOPS`: both, unless `PILLION_TEST_LOOPS` names fewer (`make test` runs its second pass, on the
compiled build, on uvloop only: the loop `pillion run` always uses; both loops are checked on the first).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import uvloop

from pillion.runtime.tasks import live_tasks

T = TypeVar("T")
ALL_LOOPS = ("asyncio", "uvloop")


def _loops(names: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(names.split()))  # each once, in the order given
    unknown = set(chosen) - set(ALL_LOOPS)
    if not chosen or unknown:
        raise ValueError(
            f"PILLION_TEST_LOOPS={names!r}: name one or both of {' '.join(ALL_LOOPS)}, separated by spaces"
        )
    return chosen


LOOPS = _loops(os.environ.get("PILLION_TEST_LOOPS", " ".join(ALL_LOOPS)))


class Run(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T]) -> T: ...


def checked_runner(loop: str) -> Run:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop

    async def checked(coro: Coroutine[Any, Any, T]) -> T:
        result = await coro
        await asyncio.sleep(0)
        leaked = [task.get_name() for task in live_tasks() if not task.done()]
        assert not leaked, f"tasks outlived the test: {leaked}"
        return result

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(checked(coro))

    return runner


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll `condition` every 10 ms, for state that changes without an event to wait on; TimeoutError
    after `limit` seconds (a bounded loop)."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"not true within {limit}s")


def bounded(run: Run, coro: Coroutine[Any, Any, None], limit: float = 10.0) -> None:
    """Run `coro` with `run` (the test's loop), failing it after `limit` seconds or if the loop's
    exception handler was called (an error raised out of a callback, an unretrieved task exception)."""

    async def main() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        async with asyncio.timeout(limit):
            await coro
        assert not errors, f"reported to the loop's exception handler: {errors}"

    run(main())
