import asyncio

import uvloop

from pillion.proxy.deadlines import MIN_SLOT_MS, Deadlines, slot_width_ms


def _run(coro: object) -> None:
    uvloop.run(coro)  # type: ignore[arg-type]


def test_fires_after_the_delay_and_never_early() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: dict[str, float] = {}

        def expire(item: str) -> None:
            fired[item] = loop.time()

        d: Deadlines[str] = Deadlines(loop, expire)
        start = loop.time()
        d.add(0.05, "a", loop.time())
        d.add(0.02, "b", loop.time())
        await asyncio.sleep(0.15)
        assert set(fired) == {"a", "b"}
        assert 0.05 <= fired["a"] - start < 0.05 + MIN_SLOT_MS / 1000 + 0.05  # slot plus scheduling slack
        assert 0.02 <= fired["b"] - start < fired["a"] - start
        assert len(d) == 0

    _run(main())


def test_discarded_items_do_not_fire_and_share_buckets() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        d: Deadlines[int] = Deadlines(loop, fired.append)
        buckets = [d.add(0.01, i, loop.time()) for i in range(100)]
        assert d.buckets <= 2  # one timer for many deadlines
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

        d: Deadlines[str] = Deadlines(loop, expire)
        buckets["a"] = d.add(0.01, "a", loop.time())
        buckets["b"] = d.add(0.01, "b", loop.time())
        await asyncio.sleep(0.12)
        assert len(fired) == 1

    _run(main())


def test_an_add_for_a_slot_that_already_fired_gets_a_bucket_that_fires() -> None:
    """The last bucket is remembered for the next add; once it fired, an add for its slot (a caller's
    clock behind the loop's, or a timer run early) must not go into it, where nothing would fire."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        d: Deadlines[str] = Deadlines(loop, fired.append)
        past = loop.time() - 1.0  # the slot's time has passed: its timer runs at once
        d.add(0.01, "first", past)
        await asyncio.sleep(0.02)
        assert fired == ["first"] and d.buckets == 0
        d.add(0.01, "second", past)  # the same slot again
        await asyncio.sleep(0.02)
        assert fired == ["first", "second"] and len(d) == 0

    _run(main())


def test_slots_widen_with_the_delay_so_long_timeouts_keep_few_buckets() -> None:
    assert slot_width_ms(0.01) == MIN_SLOT_MS
    assert slot_width_ms(1.0) == 16  # <= 1000/32
    assert slot_width_ms(15.0) == 256  # <= 15000/32

    async def main() -> None:
        loop = asyncio.get_running_loop()
        d: Deadlines[int] = Deadlines(loop, lambda item: None)
        for i in range(200):  # requests arriving over ~1 s, each with a 15 s timeout
            d.add(15.0, i, loop.time())
            if i % 20 == 0:
                await asyncio.sleep(0.1)
        assert d.buckets <= 6
        assert len(d) == 200

    _run(main())
