"""Clusters and endpoints: who can serve a request, and the warm connections to them.

A Cluster owns its Endpoints and picks one round robin. Each Endpoint keeps a LIFO stack of idle
keep-alive connections (the most recently used is the most likely still open on the app's side) and
opens new ones on demand, reporting the result to a waiter through a callback, because the requests
that wait are callback-driven protocol objects rather than coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pillion.config.model import Address
from pillion.config.model import Cluster as ClusterConfig
from pillion.proxy.stats import ProxyStats
from pillion.runtime.tasks import spawn

if TYPE_CHECKING:
    from pillion.proxy.upstream import UpstreamConnection

log = logging.getLogger("pillion.cluster")

# (connection, None) on success, (None, reason) on failure; reasons are local-reply reasons.
ConnectCallback = Callable[["UpstreamConnection | None", str | None], None]


class Endpoint:
    """One upstream address and its pool of idle connections."""

    __slots__ = ("address", "cluster", "connect_failures", "host", "idle", "label", "port", "requests")

    def __init__(self, cluster: Cluster, address: Address, stats: ProxyStats) -> None:
        self.cluster = cluster
        self.address = address
        self.host = address.host
        self.port = address.port
        self.label = str(address)
        self.idle: list[UpstreamConnection] = []
        self.requests = 0  # sent to this endpoint, for /clusters
        self.connect_failures = stats.connect_failures.labels(cluster.name, self.label)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
        return None

    def give_back(self, conn: UpstreamConnection, now: float) -> None:
        if len(self.idle) < self.cluster.max_idle:
            conn.idle_since = now
            self.idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        """A pooled connection closed on its own (the app timed it out): drop it from the stack."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def expire_idle(self, now: float) -> None:
        limit = now - self.cluster.idle_timeout
        stale = [c for c in self.idle if c.idle_since < limit]
        for conn in stale:
            self.idle.remove(conn)
            conn.close()

    def connect(self, on_done: ConnectCallback) -> None:
        """Open a new connection in the background; `on_done` hears the outcome exactly once."""
        spawn(self._connect(on_done), name=f"connect {self.cluster.name} {self.label}")

    async def _connect(self, on_done: ConnectCallback) -> None:
        from pillion.proxy.upstream import UpstreamConnection

        cluster = self.cluster
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(cluster.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        except TimeoutError:
            self.connect_failures.value += 1
            on_done(None, "upstream_connect_timeout")
        except OSError as exc:
            self.connect_failures.value += 1
            log.debug("connect failed", extra={"endpoint": self.label, "error": str(exc)})
            on_done(None, "upstream_connect_failure")
        else:
            on_done(conn, None)

    def view(self) -> dict[str, object]:
        return {
            "address": self.label,
            "state": "healthy",
            "requests": self.requests,
            "idle_connections": len(self.idle),
            "connect_failures": self.connect_failures.value,
        }


class Cluster:
    """A named set of endpoints serving the same thing, chosen round robin."""

    __slots__ = (
        "_next",
        "active",
        "config",
        "connect_timeout",
        "endpoints",
        "idle_timeout",
        "max_idle",
        "name",
        "opened",
        "resets",
        "timeouts",
    )

    def __init__(self, config: ClusterConfig, stats: ProxyStats) -> None:
        self.config = config
        self.name = config.name
        self.connect_timeout = float(config.connect_timeout)
        self.idle_timeout = float(config.idle_timeout)
        self.max_idle = config.max_idle_connections
        self.active = stats.upstream_active.labels(self.name)
        self.opened = stats.upstream_total.labels(self.name)
        self.timeouts = stats.upstream_timeouts.labels(self.name)
        self.resets = stats.upstream_resets.labels(self.name)
        self.endpoints = [Endpoint(self, e.address, stats) for e in config.endpoints]
        self._next = 0

    def pick(self) -> Endpoint | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        i = self._next
        self._next = (i + 1) % len(endpoints)
        return endpoints[i]

    def expire_idle(self, now: float) -> None:
        for endpoint in self.endpoints:
            endpoint.expire_idle(now)

    def close_idle(self) -> None:
        for endpoint in self.endpoints:
            while endpoint.idle:
                endpoint.idle.pop().close()

    def view(self) -> dict[str, object]:
        return {"name": self.name, "endpoints": [e.view() for e in self.endpoints]}
