import asyncio
import logging
from typing import Any

import pytest
import uvloop

from pillion.proxy.batch import PROBE_EVERY, SINGLE_PASSES, WriteBatch
from pillion.testing.transports import RecordingTransport


class _Sender:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def send_pending(self) -> None:
        self.log.append(self.name)


def sender(name: str, log: list[str]) -> Any:  # stands in for either connection class
    return _Sender(name, log)


def test_senders_run_at_the_end_of_the_loop_pass_clients_first_each_side_in_order() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
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
        batch = WriteBatch(asyncio.get_running_loop())
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
        batch = WriteBatch(asyncio.get_running_loop())
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


class _Raising(_Sender):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name, log)
        self.transport = RecordingTransport()

    def send_pending(self) -> None:
        self.log.append(self.name)
        raise RuntimeError(f"{self.name} broke")


def raising(name: str, log: list[str]) -> Any:
    return _Raising(name, log)


def test_a_connection_that_raises_does_not_strand_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """The others are sent, in order; the broken ones are aborted; the first error reaches the loop's
    exception handler, a later one is logged."""
    errors: list[BaseException | None] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: errors.append(ctx.get("exception"))
        )
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        bad_client, bad_up = raising("bad-client", log), raising("bad-up", log)
        batch.add_client(sender("a", log))
        batch.add_client(bad_client)
        batch.add_client(sender("b", log))
        batch.add_upstream(bad_up)
        batch.add_upstream(sender("up", log))
        await asyncio.sleep(0)
        assert log == ["a", "bad-client", "b", "bad-up", "up"]
        assert bad_client.transport.aborted and bad_up.transport.aborted
        batch.add_client(sender("next", log))  # the batch itself goes on working
        await asyncio.sleep(0)
        assert log[-1] == "next"

    with caplog.at_level(logging.ERROR, logger="pillion.batch"):
        uvloop.run(main())
    assert [str(e) for e in errors] == ["bad-client broke"]
    later = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [str(e) for e in later] == ["bad-up broke"]


def test_a_direct_flush_raises_the_error_after_sending_the_others() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        batch.add_client(raising("bad", log))
        batch.add_upstream(sender("up", log))
        with pytest.raises(RuntimeError, match="bad broke"):
            batch.flush()
        assert log == ["bad", "up"]

    uvloop.run(main())
