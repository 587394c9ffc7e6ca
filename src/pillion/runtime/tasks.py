"""Named background tasks that are kept until they finish.

asyncio holds only weak references to tasks, so a task nobody keeps can vanish mid-flight; and an unnamed
task that fails is invisible. `spawn` keeps a strong reference, names the task, and logs its failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("pillion.tasks")
_live: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _live.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _live.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task failed", extra={"task": task.get_name(), "error": repr(exc)}, exc_info=exc)


def live_tasks() -> set[asyncio.Task[Any]]:
    """The tasks still running, for shutdown and for tests that check nothing leaks."""
    return set(_live)


class Worker:
    """One named background task of a long-lived object (a health checker, a DNS refresher): started at
    most once at a time, stopped idempotently, awaited after stopping."""

    __slots__ = ("_name", "_run", "_task")

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = spawn(self._run(), name=self._name)

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait for the task `stop()` cancelled (or that ended on its own)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
