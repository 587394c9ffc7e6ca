import asyncio
from typing import Any

import uvloop

from pillion.proxy.batch import WriteBatch


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
