"""Named background tasks that are kept until they finish.

asyncio holds only weak references to tasks, so a task nobody keeps can vanish mid-flight; and an unnamed
task that fails is invisible. `spawn` keeps a strong reference, names the task, and logs its failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
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
