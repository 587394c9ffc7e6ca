"""A mux Session's extra loop turn before it writes (pillion.tls.mux, `_scheduled_flush`): what is sent
during the turn joins the write; after LOOK_QUIET turns in a row that find nothing the session stops
taking them, and after LOOK_PROBE flushes without one it tries one again.

The loop is driven by hand (`HandLoop.turn` runs what `call_soon` queued, as one turn of a real loop
would), so each test says exactly which sends happened during which turn. The real loops' ordering is
covered by tests/integration/test_mux.py (one write, after two turns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from pillion.testing.transports import RecordingTransport
from pillion.tls.mux import DATA, LOOK_PROBE, LOOK_QUIET, Session


class HandLoop:
    """The part of an event loop a client Session uses to schedule its flush."""

    def __init__(self) -> None:
        self.queued: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.queued.append(callback)

    def turn(self) -> None:
        """Run the callbacks queued before this turn (those they queue wait for the next one)."""
        now, self.queued = self.queued, []
        for callback in now:
            callback()


def session() -> tuple[Session, HandLoop, RecordingTransport]:
    loop = HandLoop()
    made = Session(cast(asyncio.AbstractEventLoop, loop), None)
    transport = RecordingTransport()
    made.transport = cast(asyncio.Transport, transport)
    return made, loop, transport


def flush_alone(made: Session, loop: HandLoop, transport: RecordingTransport) -> int:
    """Send one frame with nothing else arriving; the turns the session took to write it."""
    before = len(transport.written)
    made.send(1, DATA, b"a")
    for turns in range(1, 4):
        loop.turn()
        if len(transport.written) > before:
            assert len(transport.written) == before + 1
            return turns
    raise AssertionError("not written within three turns")


def test_a_frame_sent_during_the_extra_turn_leaves_in_the_same_write() -> None:
    made, loop, transport = session()
    made.send(1, DATA, b"first")
    loop.turn()  # the end of the pass: the session looks once more instead of writing
    assert transport.written == []
    made.send(3, DATA, b"second")  # read during that turn
    loop.turn()
    assert len(transport.written) == 1
    assert 0 <= transport.written[0].index(b"first") < transport.written[0].index(b"second")
    assert loop.queued == []  # nothing left scheduled: the next send schedules afresh
    assert flush_alone(made, loop, transport) == 2


def test_quiet_turns_stop_the_looks_and_a_probe_every_look_probe_flushes_tries_again() -> None:
    made, loop, transport = session()
    for _ in range(LOOK_QUIET):
        assert flush_alone(made, loop, transport) == 2
    # Stopped: LOOK_PROBE flushes go out at the end of their pass.
    assert [flush_alone(made, loop, transport) for _ in range(LOOK_PROBE)] == [1] * LOOK_PROBE
    # The probe looks; it finds nothing, so the looks stop again at once.
    assert flush_alone(made, loop, transport) == 2
    assert flush_alone(made, loop, transport) == 1


def test_a_probe_that_finds_frames_turns_the_looks_back_on() -> None:
    made, loop, transport = session()
    for _ in range(LOOK_QUIET + LOOK_PROBE):
        flush_alone(made, loop, transport)
    made.send(1, DATA, b"probe")
    loop.turn()
    made.send(3, DATA, b"arrived")
    loop.turn()
    assert b"probe" in transport.written[-1] and b"arrived" in transport.written[-1]
    # Back on: quiet turns must again come LOOK_QUIET in a row before the looks stop.
    assert [flush_alone(made, loop, transport) for _ in range(LOOK_QUIET)] == [2] * LOOK_QUIET
    assert flush_alone(made, loop, transport) == 1


@pytest.mark.parametrize("end", ["close", "fail", "connection_lost"])
def test_a_session_ended_during_the_extra_turn_leaves_nothing_scheduled(end: str) -> None:
    """A close sends what is queued at once (fail and a lost connection drop it, as they always did);
    the turn's own call then writes nothing more, and the session is left with no flush pending."""
    made, loop, transport = session()
    made.send(1, DATA, b"queued")
    loop.turn()
    assert transport.written == []
    if end == "close":
        made.close()
        assert len(transport.written) == 1 and b"queued" in transport.written[0]
    elif end == "fail":
        made.fail(ConnectionError("test"))
    else:
        made.connection_lost(None)
    written = len(transport.written)
    loop.turn()
    assert len(transport.written) == written
    assert not made.scheduled and made.looked == -1 and loop.queued == []


def test_a_turn_that_finds_frames_restarts_the_quiet_count() -> None:
    made, loop, transport = session()
    for _ in range(LOOK_QUIET - 1):
        flush_alone(made, loop, transport)
    made.send(1, DATA, b"x")
    loop.turn()
    made.send(3, DATA, b"y")
    loop.turn()
    assert [flush_alone(made, loop, transport) for _ in range(LOOK_QUIET)] == [2] * LOOK_QUIET
    assert flush_alone(made, loop, transport) == 1
