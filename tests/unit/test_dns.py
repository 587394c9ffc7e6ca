"""Endpoint host names: the system resolver for `resolve`, and a scripted resolver (a real function that
answers from a table the test edits) for the refresher's keep-last-good and change-detection rules.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, TypeVar

import pytest

from pillion.proxy.dns import DnsRefresher, DnsStats, Target, resolve
from pillion.runtime.tasks import live_tasks
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry
from pillion.testing.loops import checked_runner

T = TypeVar("T")


run = checked_runner("uvloop")  # and fail if a task outlives the test


class Table:
    """A resolver answering from `answers`: a list of addresses, or an exception to raise; `hang` names
    hosts whose lookup never returns. `calls` records every lookup."""

    def __init__(self, **answers: list[str] | Exception) -> None:
        self.answers: dict[str, list[str] | Exception] = dict(answers)
        self.hang: set[str] = set()
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.hang:
            await asyncio.Event().wait()
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


class Updates:
    def __init__(self) -> None:
        self.calls: list[list[Target]] = []

    def __call__(self, addresses: list[Target]) -> None:
        self.calls.append(addresses)


def refresher(
    names: list[Target], table: Table | None = None, interval: float = 60.0, **kwargs: Any
) -> tuple[DnsRefresher, Updates, Registry]:
    registry = Registry()
    updates = Updates()
    extra: dict[str, Any] = {"resolver": table} if table is not None else {}
    dns = DnsRefresher("app", names, interval, updates, DnsStats.declare(registry), **extra, **kwargs)
    return dns, updates, registry


def counts(registry: Registry) -> tuple[str, str]:
    text = render(registry)
    lookups = next(line for line in text.splitlines() if line.startswith("pillion_dns_refreshes_total{"))
    failures = next(line for line in text.splitlines() if line.startswith("pillion_dns_failures_total{"))
    return lookups, failures


# -- resolve -------------------------------------------------------------------------------------


def test_localhost_resolves_to_loopback_addresses_without_duplicates() -> None:
    addresses = run(resolve("localhost", 8080))
    assert addresses and len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


@pytest.mark.parametrize("literal", ["10.1.2.3", "::1", "fe80::1%lo"])
def test_ip_literals_pass_through(literal: str) -> None:
    assert run(resolve(literal, 80)) == [literal]


def test_an_invalid_name_raises_os_error() -> None:
    with pytest.raises(OSError):
        run(resolve("no-such-host.invalid", 80))


# -- first ---------------------------------------------------------------------------------------


def test_first_resolves_names_passes_literals_and_skips_names_that_fail() -> None:
    names = [("localhost", 8080, 2), ("10.0.0.1", 80, 1), ("no-such-host.invalid", 80, 5)]
    dns, updates, registry = refresher(names)
    addresses = run(dns.first())
    local = [a for a in addresses if a[0] != "10.0.0.1"]
    assert local and all(ipaddress.ip_address(a).is_loopback and (p, w) == (8080, 2) for a, p, w in local)
    assert ("10.0.0.1", 80, 1) in addresses
    assert len(addresses) == len(local) + 1
    assert dns.addresses == addresses
    assert updates.calls == []
    # Two lookups (the literal needs none), one failed.
    assert counts(registry) == (
        'pillion_dns_refreshes_total{cluster="app"} 2',
        'pillion_dns_failures_total{cluster="app"} 1',
    )


def test_duplicate_addresses_merge_with_their_weights_added() -> None:
    table = Table(a=["10.0.0.1", "10.0.0.2"], b=["10.0.0.2", "10.0.0.3"])
    dns, _, _ = refresher([("a", 80, 1), ("b", 80, 3), ("10.0.0.3", 80, 10), ("b", 81, 1)], table)
    assert run(dns.first()) == [
        ("10.0.0.1", 80, 1),
        ("10.0.0.2", 80, 4),
        ("10.0.0.3", 80, 13),
        ("10.0.0.2", 81, 1),
        ("10.0.0.3", 81, 1),
    ]


# -- refresh -------------------------------------------------------------------------------------


def test_a_failed_lookup_keeps_the_last_good_addresses() -> None:
    table = Table(a=["10.0.0.1", "10.0.0.2"], b=["10.0.1.1"])
    dns, updates, registry = refresher([("a", 80, 1), ("b", 80, 1)], table)

    async def main() -> None:
        before = await dns.first()
        table.answers["a"] = OSError(-2, "Name or service not known")
        assert not await dns.refresh()
        table.answers["a"] = []  # an empty answer is no better
        assert not await dns.refresh()
        assert dns.addresses == before and updates.calls == []

        table.answers["b"] = ["10.0.1.2"]  # a change elsewhere still carries a's last good addresses
        assert await dns.refresh()
        assert updates.calls == [[("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1), ("10.0.1.2", 80, 1)]]

    run(main())
    assert counts(registry) == (
        'pillion_dns_refreshes_total{cluster="app"} 8',
        'pillion_dns_failures_total{cluster="app"} 3',
    )


def test_a_lookup_that_hangs_fails_at_the_lookup_timeout() -> None:
    table = Table(a=["10.0.0.1"])
    dns, updates, registry = refresher([("a", 80, 1)], table, lookup_timeout=0.1)

    async def main() -> None:
        await dns.first()
        table.hang.add("a")
        async with asyncio.timeout(2.0):
            assert not await dns.refresh()
        assert dns.addresses == [("10.0.0.1", 80, 1)]

    run(main())
    assert updates.calls == []
    assert counts(registry)[1] == 'pillion_dns_failures_total{cluster="app"} 1'


def test_a_name_that_failed_at_startup_joins_when_it_resolves() -> None:
    table = Table(a=OSError("down"), b=["10.0.1.1"])
    dns, updates, _ = refresher([("a", 80, 1), ("b", 80, 1)], table)

    async def main() -> None:
        assert await dns.first() == [("10.0.1.1", 80, 1)]
        table.answers["a"] = ["10.0.0.1"]
        assert await dns.refresh()

    run(main())
    assert updates.calls == [[("10.0.0.1", 80, 1), ("10.0.1.1", 80, 1)]]


def test_on_update_is_called_once_per_change_and_not_for_a_new_order() -> None:
    table = Table(a=["10.0.0.1", "10.0.0.2"])
    dns, updates, _ = refresher([("a", 80, 1)], table)

    async def main() -> None:
        await dns.first()
        assert not await dns.refresh()
        table.answers["a"] = ["10.0.0.2", "10.0.0.1"]
        assert not await dns.refresh()
        table.answers["a"] = ["10.0.0.2", "10.0.0.3"]
        assert await dns.refresh()
        assert not await dns.refresh()

    run(main())
    assert updates.calls == [[("10.0.0.2", 80, 1), ("10.0.0.3", 80, 1)]]


def test_a_failing_on_update_is_tried_again_next_round() -> None:
    table = Table(a=["10.0.0.1"])
    calls: list[list[Target]] = []

    def flaky(addresses: list[Target]) -> None:
        calls.append(addresses)
        if len(calls) == 1:
            raise RuntimeError("bug in the cluster")

    async def main() -> None:
        dns = DnsRefresher("app", [("a", 80, 1)], 60.0, flaky, DnsStats.declare(Registry()), resolver=table)
        await dns.first()
        table.answers["a"] = ["10.0.0.2"]
        assert not await dns.refresh()
        assert await dns.refresh()
        assert dns.addresses == [("10.0.0.2", 80, 1)]

    run(main())
    assert calls == [[("10.0.0.2", 80, 1)]] * 2


# -- the background task -------------------------------------------------------------------------


def test_the_task_re_resolves_every_interval_and_reports_a_change_once() -> None:
    table = Table(a=["10.0.0.1"])
    dns, updates, _ = refresher([("a", 80, 1), ("10.9.9.9", 80, 1)], table, interval=0.1)

    async def main() -> None:
        await dns.first()
        dns.start()
        dns.start()  # one task only
        await asyncio.sleep(0.25)
        table.answers["a"] = ["10.0.0.2"]
        await asyncio.sleep(0.3)
        dns.stop()
        dns.stop()
        async with asyncio.timeout(1.0):
            await dns.wait_closed()

    run(main())
    assert updates.calls == [[("10.0.0.2", 80, 1), ("10.9.9.9", 80, 1)]]
    assert 3 <= table.calls.count("a") <= 7  # first() plus one per 100 ms
    assert "10.9.9.9" not in table.calls


def test_no_task_when_every_entry_is_an_ip_literal() -> None:
    table = Table()
    dns, updates, _ = refresher([("10.0.0.1", 80, 1), ("::1", 80, 2)], table)

    async def main() -> None:
        assert await dns.first() == [("10.0.0.1", 80, 1), ("::1", 80, 2)]
        dns.start()
        assert not [t for t in live_tasks() if t.get_name() == "dns app"]
        dns.stop()
        await dns.wait_closed()

    run(main())
    assert table.calls == [] and updates.calls == []


def test_a_zero_interval_does_not_spin() -> None:
    dns, _, _ = refresher([("a", 80, 1)], Table(a=["10.0.0.1"]), interval=0.0)
    assert dns.interval == 0.1
