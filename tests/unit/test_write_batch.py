import asyncio

import uvloop

from pillion.proxy.batch import WriteBatch


class _Sender:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def send_pending(self) -> None:
        self.log.append(self.name)


def test_senders_run_at_the_end_of_the_loop_pass_in_order() -> None:
    async def main() -> None:
        log: list[str] = []
        batch = WriteBatch(asyncio.get_running_loop())
        batch.add(_Sender("a", log))
        batch.add(_Sender("b", log))
        assert log == []  # nothing leaves while the pass's callbacks run
        await asyncio.sleep(0)
        assert log == ["a", "b"]
        batch.add(_Sender("c", log))
        batch.flush()  # early: the loop's own call then finds nothing
        await asyncio.sleep(0)
        assert log == ["a", "b", "c"]

    uvloop.run(main())
