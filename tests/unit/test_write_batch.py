import asyncio

import uvloop

from pillion.proxy.batch import WriteBatch


class _Transport:
    def __init__(self, closing: bool = False) -> None:
        self.written: list[bytes] = []
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


def test_writes_wait_for_the_end_of_the_loop_pass_and_keep_their_order() -> None:
    async def main() -> None:
        batch = WriteBatch(asyncio.get_running_loop())
        a, b, gone = _Transport(), _Transport(), _Transport(closing=True)
        batch.write(a, b"1")  # type: ignore[arg-type]
        batch.write(b, b"2")  # type: ignore[arg-type]
        batch.write(gone, b"x")  # type: ignore[arg-type]
        batch.write(a, b"3")  # type: ignore[arg-type]
        assert a.written == [] and b.written == []
        await asyncio.sleep(0)
        assert a.written == [b"1", b"3"] and b.written == [b"2"]
        assert gone.written == []  # a transport closed meanwhile is skipped, not written to
        batch.write(b, b"4")  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert b.written == [b"2", b"4"]

    uvloop.run(main())
