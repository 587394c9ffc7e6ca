import asyncio

import uvloop

from pillion.proxy.deadlines import Deadlines


def _run(coro: object) -> None:
    uvloop.run(coro)  # type: ignore[arg-type]


def test_fires_after_the_delay_and_never_early() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: dict[str, float] = {}

        def expire(item: str) -> None:
            fired[item] = loop.time()

        d: Deadlines[str] = Deadlines(loop, expire, 0.01)
        start = loop.time()
        d.add(0.05, "a")
        d.add(0.02, "b")
        await asyncio.sleep(0.15)
        assert set(fired) == {"a", "b"}
        assert 0.05 <= fired["a"] - start < 0.05 + 0.01 + 0.05  # resolution plus scheduling slack
        assert 0.02 <= fired["b"] - start < fired["a"] - start
        assert len(d) == 0

    _run(main())


def test_discarded_items_do_not_fire_and_share_buckets() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        d: Deadlines[int] = Deadlines(loop, fired.append, 0.05)
        buckets = [d.add(0.01, i) for i in range(100)]
        assert len({id(b) for b in buckets}) <= 2  # one timer for many deadlines
        for i in range(0, 100, 2):
            buckets[i].discard(i)
        assert len(d) == 50
        await asyncio.sleep(0.15)
        assert sorted(fired) == list(range(1, 100, 2))

    _run(main())


def test_an_expiry_may_cancel_a_later_one_in_the_same_bucket() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        buckets: dict[str, set[str]] = {}

        def expire(item: str) -> None:
            fired.append(item)
            other = "b" if item == "a" else "a"
            buckets[other].discard(other)

        d: Deadlines[str] = Deadlines(loop, expire, 0.05)
        buckets["a"] = d.add(0.01, "a")
        buckets["b"] = d.add(0.01, "b")
        await asyncio.sleep(0.12)
        assert len(fired) == 1

    _run(main())
