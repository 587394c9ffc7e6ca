import asyncio
from typing import Any

import uvloop

from pillion.proxy.batch import BUSY_FROM, BUSY_WINDOW, PROBE_EVERY, SINGLE_PASSES, WriteBatch


class _Sender:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def send_pending(self) -> None:
        self.log.append(self.name)


def sender(name: str, log: list[str]) -> Any:  # stands in for either connection class
    return _Sender(name, log)


class _Clocks:
    """Wall and CPU time the test moves by hand; `share` of each wall second is CPU time."""

    def __init__(self, share: float) -> None:
        self.wall = 1000.0
        self.cpu = 0.0
        self.share = share

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.cpu += seconds * self.share


def busy_batch(loop: asyncio.AbstractEventLoop, share: float = 1.0) -> tuple[WriteBatch, _Clocks]:
    """A batch whose loop looks busy (`share` of a core) once a first window has passed."""
    clocks = _Clocks(share)
    batch = WriteBatch(loop, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    batch.add_client(sender("first", []))  # the first look: nothing measured yet, so not busy
    clocks.tick(BUSY_WINDOW)
    batch.add_client(sender("second", []))  # the second look sees `share` of a core
    batch.add_client(sender("third", []))  # (a pass holding two: no count toward SINGLE_PASSES)
    return batch, clocks


def test_senders_run_at_the_end_of_the_loop_pass_clients_first_each_side_in_order() -> None:
    async def main() -> None:
        log: list[str] = []
        batch, _ = busy_batch(asyncio.get_running_loop())
        await asyncio.sleep(0)
        batch.add_upstream(sender("up1", log))
        batch.add_client(sender("a", log))
        batch.add_upstream(sender("up2", log))
        batch.add_client(sender("b", log))
        assert log == []  # nothing leaves while the pass's callbacks run
        await asyncio.sleep(0)
        assert log == ["a", "b", "up1", "up2"]
        batch.add_client(sender("c", log))
        batch.flush()  # early: the loop's own call then finds nothing
        await asyncio.sleep(0)
        assert log == ["a", "b", "up1", "up2", "c"]
        batch.add_client(sender("d", log))  # a pass after an early flush is scheduled again
        await asyncio.sleep(0)
        assert log[-1] == "d"

    uvloop.run(main())


async def _single_passes(batch: WriteBatch, log: list[str], count: int) -> None:
    """`count` loop passes that each hold one client's bytes."""
    for i in range(count):
        batch.add_client(sender(f"s{i}", log))
        assert log[-1:] != [f"s{i}"]  # held until the end of the pass
        await asyncio.sleep(0)
        assert log[-1] == f"s{i}"


def test_at_low_load_writes_go_out_at_once_and_a_periodic_held_pass_looks_at_the_load() -> None:
    async def main() -> None:
        log: list[str] = []
        batch, _ = busy_batch(asyncio.get_running_loop())
        await asyncio.sleep(0)
        await _single_passes(batch, log, SINGLE_PASSES - 1)
        assert batch.holding  # one pass short
        await _single_passes(batch, log, 1)
        assert not batch.holding
        for i in range(PROBE_EVERY):  # sent at once, in call order
            batch.add_upstream(sender(f"up{i}", log))
            assert log[-1] == f"up{i}"
        # The next write is held: a probe. It finds a second connection in its pass, so holding stays on.
        batch.add_client(sender("probe", log))
        batch.add_upstream(sender("other", log))
        assert log[-1] == f"up{PROBE_EVERY - 1}"
        await asyncio.sleep(0)
        assert log[-2:] == ["probe", "other"] and batch.holding
        # Back at low load, a probe that finds one connection returns to sending at once.
        await _single_passes(batch, log, SINGLE_PASSES)
        assert not batch.holding
        for i in range(PROBE_EVERY):
            batch.add_client(sender(f"c{i}", log))
        await _single_passes(batch, log, 1)
        assert not batch.holding

    uvloop.run(main())


def test_a_pass_holding_two_connections_starts_the_count_again() -> None:
    async def main() -> None:
        log: list[str] = []
        batch, _ = busy_batch(asyncio.get_running_loop())
        await asyncio.sleep(0)
        await _single_passes(batch, log, SINGLE_PASSES - 1)
        batch.add_client(sender("a", log))
        batch.add_client(sender("b", log))
        await asyncio.sleep(0)
        await _single_passes(batch, log, SINGLE_PASSES - 1)
        assert batch.holding
        batch.add_upstream(sender("u", log))
        batch.flush()  # an early flush counts its pass; the loop's own call then holds nothing
        await asyncio.sleep(0)
        assert not batch.holding and log[-1] == "u"

    uvloop.run(main())


def test_writes_go_out_at_once_unless_the_loop_used_more_than_busy_from_of_a_core() -> None:
    async def main() -> None:
        log: list[str] = []
        loop = asyncio.get_running_loop()
        batch = WriteBatch(loop)  # the real clocks: a fresh batch has measured nothing, so not busy
        batch.add_client(sender("a", log))
        batch.add_upstream(sender("b", log))
        assert log == ["a", "b"] and not batch.holding
        # Just under the share: still at once, window after window.
        batch, clocks = busy_batch(loop, share=BUSY_FROM * 0.9)
        for i in range(3):
            clocks.tick(BUSY_WINDOW)
            batch.add_client(sender(f"u{i}", log))
            assert log[-1] == f"u{i}" and not batch.holding
        # Over it: the next window's first write is held until the end of the pass.
        clocks.share = BUSY_FROM * 1.1
        clocks.tick(BUSY_WINDOW)
        batch.add_client(sender("h1", log))
        batch.add_upstream(sender("h2", log))
        assert log[-1] == "u2" and batch.holding
        await asyncio.sleep(0)
        assert log[-2:] == ["h1", "h2"]
        # Within a window nothing is measured again: still holding.
        clocks.share = 0.0
        clocks.tick(BUSY_WINDOW / 2)
        batch.add_client(sender("h3", log))
        assert log[-1] == "h2"
        await asyncio.sleep(0)
        # The loop idled for the rest of the window and past it: at once again.
        clocks.tick(BUSY_WINDOW)
        batch.add_client(sender("idle", log))
        assert log[-1] == "idle" and not batch.holding

    uvloop.run(main())
