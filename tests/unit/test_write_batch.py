import asyncio
import contextlib
from typing import Any, cast

import uvloop

from pillion.proxy.batch import PROBE_EVERY, SINGLE_PASSES, WriteBatch, join


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


class _Carrier:
    """Gathers writes like a multiplexed session: joins the flush under way, else flushes a pass later."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.joined: list[bool] = []

    def write(self) -> None:
        self.joined.append(join(self))

    def flush(self) -> None:
        self.log.append(self.name)


class _Feeding:
    """A connection whose bytes go into a carrier."""

    def __init__(self, name: str, log: list[str], carrier: _Carrier) -> None:
        self.name = name
        self.log = log
        self.carrier = carrier

    def send_pending(self) -> None:
        self.log.append(self.name)
        self.carrier.write()


def test_a_carrier_written_during_a_flush_leaves_after_its_phase_clients_before_upstreams() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        answers, requests = _Carrier("answers", log), _Carrier("requests", log)
        client: Any = _Feeding("client", log, answers)
        upstream: Any = _Feeding("upstream", log, requests)
        batch.add_upstream(upstream)
        batch.add_client(client)
        await asyncio.sleep(0)
        # The answers' carrier goes before any request is written (the app's wake-up comes after them),
        # and the requests' carrier in the same pass, not a pass later.
        assert log == ["client", "answers", "upstream", "requests"]
        assert answers.joined == [True] and requests.joined == [True]
        outside = _Carrier("outside", log)
        outside.write()
        assert outside.joined == [False]  # no flush under way: the carrier schedules its own
        assert log[-1] == "requests"

    uvloop.run(main())


def test_a_sender_that_raises_does_not_strand_a_joined_carrier() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        carrier = _Carrier("carrier", log)
        client: Any = _Feeding("client", log, carrier)

        class Broken:
            def send_pending(self) -> None:
                raise RuntimeError("broken")

        batch.add_client(client)
        batch.add_client(cast(Any, Broken()))
        with contextlib.suppress(RuntimeError):
            batch.flush()
        assert log == ["client", "carrier"]
        assert join(carrier) is False  # the flush is over

    uvloop.run(main())


def test_a_carrier_written_by_a_write_sent_at_once_leaves_with_it() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        await _single_passes(batch, log, SINGLE_PASSES)
        assert not batch.holding
        carrier = _Carrier("carrier", log)
        upstream: Any = _Feeding("upstream", log, carrier)
        batch.add_upstream(upstream)
        assert log[-2:] == ["upstream", "carrier"]  # at low load, not a pass later
        assert carrier.joined == [True]

    uvloop.run(main())


def test_a_carrier_that_raises_does_not_keep_the_others_from_flushing() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())

        class Failing(_Carrier):
            def flush(self) -> None:
                raise RuntimeError("a bug in one carrier")

        first, second = Failing("first", log), _Carrier("second", log)
        batch.add_client(cast(Any, _Feeding("a", log, first)))
        batch.add_client(cast(Any, _Feeding("b", log, second)))
        batch.add_upstream(cast(Any, sender("up", log)))
        batch.flush()  # (the failure is logged, not raised)
        assert log == ["a", "b", "second", "up"]

    uvloop.run(main())
