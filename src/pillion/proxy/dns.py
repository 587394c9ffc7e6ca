"""Host names among a cluster's endpoints: resolved at startup and again every `dns_refresh`.

Theory of operation: `resolve` turns a host into its addresses (an IP literal as is, without a lookup;
a name through the event loop's `getaddrinfo`). A `DnsRefresher` keeps a cluster's configured
`(host, port, weight)` entries and, for each, the addresses of its last good lookup. `first()` resolves
them once at startup; the background task started by `start()` resolves them again every `interval` and
calls `on_update` with the whole list (one `(address, port, weight)` per resolved address, IP-literal
entries passed through) only when it changed. getaddrinfo reports no TTL, so records are not cached by
their TTL: `interval` (the cluster's `dns_refresh`) is the re-resolution period, whatever the records say.

A lookup that fails or takes longer than `lookup_timeout` leaves its name's last good addresses in place,
so a DNS hiccup never empties a cluster; it is counted and logged (once when a name starts failing and
once when it recovers). A name that never resolved contributes nothing, and startup goes on without it.
Two entries that yield the same address and port become one, with their weights added. A change in
order alone is not a change: resolvers rotate answers, and the cluster need not rebuild for that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pillion.runtime.tasks import Worker
from pillion.telemetry.stats import CounterFamily, Registry

__all__ = ["LOOKUP_TIMEOUT", "MIN_INTERVAL", "DnsRefresher", "DnsStats", "Resolver", "Target", "resolve"]

log = logging.getLogger("pillion.dns")

Target = tuple[str, int, int]  # (host or address, port, weight)
Resolver = Callable[[str, int], Awaitable[list[str]]]

# getaddrinfo runs in a worker thread; past this the lookup is abandoned and counted as failed.
LOOKUP_TIMEOUT = 5.0
# A `dns_refresh` of 0 would query the resolver in a tight loop.
MIN_INTERVAL = 0.1


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int) -> list[str]:
    """The unique addresses of `host`, in the resolver's order; an IP literal is returned as is.
    Raises OSError (socket.gaierror) when the name does not resolve."""
    if is_ip_literal(host):
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no addresses")
    return addresses


@dataclass(slots=True)
class DnsStats:
    lookups: CounterFamily
    failures: CounterFamily

    @classmethod
    def declare(cls, registry: Registry) -> DnsStats:
        return cls(
            lookups=registry.counter(
                "pillion_dns_refreshes_total",
                "Host-name lookups of a cluster's endpoints (at startup and every dns_refresh).",
                ("cluster",),
            ),
            failures=registry.counter(
                "pillion_dns_failures_total",
                "Host-name lookups that failed or timed out; the name kept its last good addresses.",
                ("cluster",),
            ),
        )


class DnsRefresher:
    """Resolves one cluster's endpoint names; see the module docstring."""

    def __init__(
        self,
        cluster_name: str,
        names: Sequence[Target],
        interval: float,
        on_update: Callable[[list[Target]], None],
        stats: DnsStats,
        *,
        resolver: Resolver = resolve,
        lookup_timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self.cluster_name = cluster_name
        self.names = tuple(names)
        self.interval = max(float(interval), MIN_INTERVAL)
        self.on_update = on_update
        self.resolver = resolver
        self.lookup_timeout = lookup_timeout
        self._lookups = stats.lookups.labels(cluster_name)
        self._failures = stats.failures.labels(cluster_name)
        # Per entry, its last good addresses; IP literals are final from the start.
        self._good: list[list[str]] = [[host] if is_ip_literal(host) else [] for host, _, _ in self.names]
        self._to_resolve = [i for i, (host, _, _) in enumerate(self.names) if not is_ip_literal(host)]
        self._failing: set[int] = set()
        self._current: list[Target] = []
        self._worker = Worker(self._run, f"dns {cluster_name}")

    @property
    def addresses(self) -> list[Target]:
        """The list last returned by `first()` or passed to `on_update`."""
        return list(self._current)

    async def first(self) -> list[Target]:
        """Resolve every name once (concurrently); never raises. Also the baseline for change detection."""
        await self._resolve_all()
        self._current = self._merged()
        return list(self._current)

    def start(self) -> None:
        """Re-resolve every `interval` in one background task (none when every entry is an IP literal)."""
        if self._to_resolve:
            self._worker.start()

    def stop(self) -> None:
        """Cancel the task; idempotent. `await wait_closed()` to know it has ended."""
        self._worker.stop()

    async def wait_closed(self) -> None:
        await self._worker.wait_closed()

    async def refresh(self) -> bool:
        """One re-resolution; calls `on_update` and returns True when the list changed."""
        await self._resolve_all()
        merged = self._merged()
        if set(merged) == set(self._current):
            return False
        try:
            self.on_update(merged)
        except Exception:  # keep the old baseline, so the next round tries again
            log.exception("dns update failed", extra={"cluster": self.cluster_name})
            return False
        log.info(
            "endpoints resolved anew",
            extra={"cluster": self.cluster_name, "endpoints": [f"{a}:{p}" for a, p, _ in merged]},
        )
        self._current = merged
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def _resolve_all(self) -> None:
        await asyncio.gather(*(self._lookup(i) for i in self._to_resolve))

    async def _lookup(self, index: int) -> None:
        host, port, _ = self.names[index]
        self._lookups.value += 1
        error = ""
        try:
            async with asyncio.timeout(self.lookup_timeout):
                addresses = list(dict.fromkeys(await self.resolver(host, port)))
            if not addresses:
                error = "no addresses"
        except TimeoutError:
            error = f"no answer within {self.lookup_timeout:g}s"
        except OSError as exc:
            error = exc.strerror or repr(exc)
        except Exception as exc:  # a resolver's bug must not end the refresher
            error = repr(exc)
        extra = {"cluster": self.cluster_name, "host": host}
        if error:
            self._failures.value += 1
            if index not in self._failing:
                self._failing.add(index)
                kept = len(self._good[index])
                log.warning("dns lookup failed", extra={**extra, "error": error, "kept_addresses": kept})
            return
        if index in self._failing:
            self._failing.discard(index)
            log.info("dns lookup recovered", extra=extra)
        self._good[index] = addresses

    def _merged(self) -> list[Target]:
        weights: dict[tuple[str, int], int] = {}
        for (_, port, weight), addresses in zip(self.names, self._good, strict=True):
            for address in addresses:
                key = (address, port)
                weights[key] = weights.get(key, 0) + weight
        return [(address, port, weight) for (address, port), weight in weights.items()]
