"""ProcessRunner: readiness waits, error reports, and stopping that never leaks a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from pillion.testing import ProcessRunner, ProcessStartError, free_port, python_module

HOST = "127.0.0.1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_waits_for_a_port_and_stops_on_exit() -> None:
    port = free_port()
    with ProcessRunner(
        python_module("http.server", "--bind", HOST, str(port)), wait_port=(HOST, port)
    ) as proc:
        pid = proc.pid
        assert proc.returncode is None
    assert not _alive(pid)
    assert proc.returncode == -signal.SIGTERM


def test_early_exit_reports_the_stderr_tail() -> None:
    code = "import sys; sys.stderr.write('boom: bad config\\n'); sys.exit(3)"
    runner = ProcessRunner([sys.executable, "-c", code], wait_port=(HOST, free_port()))
    with pytest.raises(ProcessStartError, match=r"(?s)exited with code 3.*boom: bad config"), runner:
        pass


def test_readiness_timeout_stops_the_process() -> None:
    runner = ProcessRunner(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        wait_url=f"http://{HOST}:{free_port()}/ready",
        startup_timeout=0.3,
    )
    with pytest.raises(ProcessStartError, match="timed out"), runner:
        pass
    assert runner.returncode is not None


def test_a_process_ignoring_sigterm_is_killed() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
        "time.sleep(60)"
    )
    runner = ProcessRunner([sys.executable, "-c", code], stop_timeout=0.3)
    with runner:
        deadline = time.monotonic() + 10
        while "up" not in runner.stdout_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "up" in runner.stdout_text()  # SIGTERM is ignored from here on
    assert runner.returncode == -signal.SIGKILL


def test_async_use_keeps_the_loop_running() -> None:
    async def scenario() -> int | None:
        port = free_port()
        runner = ProcessRunner(
            python_module("pillion.demo.app", "--port", str(port), "--quiet"),
            wait_url=f"http://{HOST}:{port}/healthz",
        )
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        try:
            async with runner:
                pass
        finally:
            ticker.cancel()
        assert ticks > 1
        return runner.returncode

    assert asyncio.run(scenario()) == 0


def test_a_missing_program_raises_at_start() -> None:
    with pytest.raises(FileNotFoundError), ProcessRunner(["/nonexistent/pillion-binary"]):
        pass
