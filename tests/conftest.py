"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from pillion.testing.loops import LOOPS, Run, checked_runner


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on a fresh loop (each test once per loop kind); fail if a task outlives it."""
    return checked_runner(request.param)
