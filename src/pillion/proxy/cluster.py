"""Clusters and endpoints: who can serve a request, how healthy they are, and the warm connections to them.

Theory of operation. A Cluster owns its Endpoints and a balancer over the *eligible* ones: healthy (active
health checks) and not ejected (outlier detection). Eligibility changes rarely, so the balancer is rebuilt
then and picking stays a cheap call. When no endpoint is eligible the cluster either fails (503
`no_healthy_endpoint`) or, in `panic`, balances over all of them.

Each Endpoint keeps a LIFO stack of idle keep-alive connections (the most recently used is the most
likely still open on the app's side) and opens new ones on demand, reporting the result through a
callback, because the requests that wait are callback-driven protocol objects, not coroutines.

The circuit breaker is four counters checked where a request would add to them: requests in flight,
connections (open or opening), requests waiting for a connection, retries in flight. Past a limit the
request fails fast with 503 `overflow`. At `max_connections` a request waits (within `max_pending`) for
a connection another request gives back.

Outlier detection is passive: every response head and connection failure is reported to its endpoint,
which counts consecutive failures and asks the cluster to eject it (for `base_ejection` x times ejected,
at most `max_ejection_percent` of the endpoints, at least one). The Runtime's once-a-second tick returns
endpoints whose ejection ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from pillion.config.model import Address
from pillion.config.model import Cluster as ClusterConfig
from pillion.proxy.balancer import Balancer, hash_key, make_balancer
from pillion.proxy.retry_budget import RetryBudget
from pillion.proxy.stats import ProxyStats
from pillion.runtime.tasks import spawn
from pillion.tls.origination import TlsFailure

if TYPE_CHECKING:
    from pillion.proxy.upstream import UpstreamConnection
    from pillion.telemetry.stats import Counter
    from pillion.tls.origination import UpstreamTls

log = logging.getLogger("pillion.cluster")

# (connection, None) on success, (None, reason) on failure; reasons are local-reply reasons.
ConnectCallback = Callable[["UpstreamConnection | None", str | None], None]


class Stoppable(Protocol):
    def stop(self) -> None: ...


MAX_EJECTION_SECONDS = 300.0  # Envoy's default max_ejection_time: a flapping endpoint still comes back


class Endpoint:
    """One upstream address, its health, and its pool of idle connections."""

    __slots__ = (
        "active",
        "address",
        "by_class",
        "cluster",
        "connect_failures",
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected_gauge",
        "ejected_until",
        "ejections",
        "healthy",
        "host",
        "idle",
        "label",
        "port",
        "removed",
        "requests",
        "times_ejected",
        "weight",
    )

    def __init__(self, cluster: Cluster, address: Address, weight: int, stats: ProxyStats) -> None:
        self.cluster = cluster
        self.address = address
        self.host = address.host
        self.port = address.port
        self.weight = weight
        self.label = str(address)
        self.idle: list[UpstreamConnection] = []
        self.requests = 0  # tries sent to this endpoint, for /clusters
        self.active = 0  # requests in flight here, for least_request
        self.healthy = True  # as far as active health checks know
        self.removed = False  # dropped from the cluster (DNS): connections given back are closed
        self.ejected_until = 0.0  # loop time it returns at; 0 while not ejected
        self.times_ejected = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        name = cluster.name
        self.connect_failures = stats.connect_failures.labels(name, self.label)
        self.ejections = stats.ejections.labels(name, self.label)
        self.ejected_gauge = stats.ejected.labels(name, self.label)
        family = stats.endpoint_requests
        self.by_class: list[Counter] = [family.labels(name, self.label, f"{c}xx") for c in range(6)]

    def drop_series(self, stats: ProxyStats) -> None:
        """Remove this endpoint's metric series (it left the cluster), so DNS churn cannot grow the
        scrape without bound."""
        name = self.cluster.name
        for family in (stats.connect_failures, stats.ejections, stats.ejected):
            family.remove(name, self.label)
        for c in range(6):
            stats.endpoint_requests.remove(name, self.label, f"{c}xx")

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0

    # -- outcomes, for outlier detection -----------------------------------------------------------

    def responded(self, status: int) -> None:
        """A response head arrived from this endpoint."""
        self.by_class[status // 100 if status < 600 else 5].value += 1
        if status < 500:
            self.consecutive_5xx = self.consecutive_gateway = 0
            return
        od = self.cluster.outlier
        if od is None:
            return
        self.consecutive_5xx += 1
        if status in (502, 503, 504):
            self.consecutive_gateway += 1
        else:
            self.consecutive_gateway = 0
        self._check_ejection()

    def failed(self) -> None:
        """A connection to this endpoint failed to open, or broke before a response head."""
        if self.cluster.outlier is None:
            return
        self.consecutive_5xx += 1
        self.consecutive_gateway += 1
        self._check_ejection()

    def _check_ejection(self) -> None:
        od = self.cluster.outlier
        assert od is not None
        if self.ejected:
            return
        if (od.consecutive_5xx and self.consecutive_5xx >= od.consecutive_5xx) or (
            od.consecutive_gateway_errors and self.consecutive_gateway >= od.consecutive_gateway_errors
        ):
            self.cluster.eject(self)

    # -- the idle pool -------------------------------------------------------------------------------

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
        return None

    def give_back(self, conn: UpstreamConnection, now: float) -> None:
        cluster = self.cluster
        if cluster.waiters:
            cluster.hand_over(conn)
        elif len(self.idle) < cluster.max_idle and not cluster.retired and not self.removed:
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

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def connect(self, on_done: ConnectCallback) -> None:
        """Open a new connection in the background; `on_done` hears the outcome exactly once."""
        spawn(self._connect(on_done), name=f"connect {self.cluster.name} {self.label}")

    async def _connect(self, on_done: ConnectCallback) -> None:
        from pillion.proxy.upstream import UpstreamConnection

        cluster = self.cluster
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(self)
        tls = cluster.tls
        try:
            async with asyncio.timeout(cluster.connect_timeout):
                if tls is None:
                    await loop.create_connection(lambda: cast(asyncio.Protocol, conn), self.host, self.port)
                else:
                    await tls.connect(lambda: cast(asyncio.Protocol, conn), self.host, self.port)
        except TimeoutError:
            reason = "upstream_connect_timeout"
        except TlsFailure as exc:
            log.warning("upstream TLS failed", extra={"endpoint": self.label, "error": str(exc)})
            cluster.tls_failures.value += 1
            reason = "upstream_tls_failure"
        except OSError as exc:
            log.debug("connect failed", extra={"endpoint": self.label, "error": str(exc)})
            reason = "upstream_connect_failure"
        else:
            on_done(conn, None)
            return
        self.connect_failures.value += 1
        if conn.transport is None:
            # Never made, so never counted down by its connection_lost: free its slot here (and let a
            # request waiting at max_connections have it).
            cluster.connection_closed()
        self.failed()
        on_done(None, reason)

    def view(self) -> dict[str, object]:
        return {
            "address": self.label,
            "weight": self.weight,
            "state": "ejected" if self.ejected else "healthy" if self.healthy else "unhealthy",
            "health_check": "healthy" if self.healthy else "unhealthy",
            "ejected": self.ejected,
            "times_ejected": self.times_ejected,
            "requests": self.requests,
            "active_requests": self.active,
            "idle_connections": len(self.idle),
            "connect_failures": self.connect_failures.value,
            "consecutive_5xx": self.consecutive_5xx,
        }


class Waiter:
    """A request's wait for an upstream connection (`Cluster.open_or_wait`): called once with the
    connection, or with None and the reason there is none; `cancel` when the request ends first.

    A class rather than two closures over shared state: compiled, such closures and their shared
    environment reference each other, a cycle that kept each request's connection alive until Python's
    cyclic collector ran."""

    __slots__ = ("cluster", "on_done", "waiting")

    def __init__(self, cluster: Cluster, on_done: ConnectCallback) -> None:
        self.cluster = cluster
        self.on_done = on_done
        self.waiting = True  # counted in cluster.pending

    def __call__(self, conn: UpstreamConnection | None, reason: str | None) -> None:
        self._stop_waiting()
        self.on_done(conn, reason)

    def cancel(self) -> None:
        if self._stop_waiting():
            with contextlib.suppress(ValueError):
                self.cluster.waiters.remove(self)  # a connect under way just completes: it is pooled

    def _stop_waiting(self) -> bool:
        """Leave cluster.pending, once; whether this call was the one that left."""
        if not self.waiting:
            return False
        self.waiting = False
        self.cluster.pending -= 1
        return True


class Cluster:
    """A named set of endpoints serving the same thing, with its balancer, limits and health."""

    __slots__ = (
        "active",
        "balancer",
        "budget",
        "config",
        "connect_timeout",
        "connections",
        "eligible",
        "endpoints",
        "hash_cookie",
        "hash_header",
        "hashed",
        "helpers",
        "idle_timeout",
        "limits",
        "max_idle",
        "name",
        "opened",
        "outlier",
        "overflow",
        "panic",
        "pending",
        "requests",
        "resets",
        "retired",
        "retries",
        "retries_active",
        "retries_refused",
        "stats",
        "timeouts",
        "tls",
        "tls_failures",
        "waiters",
    )

    def __init__(self, config: ClusterConfig, stats: ProxyStats) -> None:
        self.config = config
        self.stats = stats
        self.name = config.name
        self.tls: UpstreamTls | None = None  # set by the Runtime when the cluster's tls.mode is not off
        self.tls_failures = stats.tls_failures.labels("", self.name)
        self.connect_timeout = float(config.connect_timeout)
        self.idle_timeout = float(config.idle_timeout)
        self.max_idle = config.max_idle_connections
        self.limits = config.circuit_breaker
        self.outlier = config.outlier_detection
        self.panic = config.no_healthy_endpoint == "panic"
        self.hashed = config.lb == "ring_hash"  # only then is a per-request key computed
        self.hash_header = (config.hash_on.header or "").lower().encode()
        self.hash_cookie = (config.hash_on.cookie or "").encode()
        self.budget = RetryBudget(config.retry_budget)
        self.active = stats.upstream_active.labels(self.name)
        self.opened = stats.upstream_total.labels(self.name)
        self.timeouts = stats.upstream_timeouts.labels(self.name)
        self.resets = stats.upstream_resets.labels(self.name)
        self.retries = stats.retries.labels(self.name)
        self.retries_refused: dict[str, Counter] = {}
        self.overflow: dict[str, Counter] = {}
        self.requests = 0  # in flight, for max_requests
        self.connections = 0  # open or opening, for max_connections
        self.pending = 0  # waiting for a connection, for max_pending
        self.retries_active = 0  # for max_retries
        self.waiters: deque[Waiter] = deque()  # requests waiting at max_connections
        self.retired = False  # replaced by a reload: connections given back are closed
        self.helpers: list[Stoppable] = []  # its DNS refresher and health checker, stopped on retire
        self.endpoints = [Endpoint(self, e.address, e.weight, stats) for e in config.endpoints]
        self.eligible: list[Endpoint] = []
        self.balancer: Balancer[Endpoint] = make_balancer(config.lb, [])
        self.rebuild()

    # -- choosing an endpoint -------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Rebuild the balancer after the endpoint set or an endpoint's eligibility changed."""
        eligible = [e for e in self.endpoints if e.healthy and not e.ejected]
        if not eligible and self.panic:
            eligible = list(self.endpoints)
        self.eligible = eligible
        self.balancer = make_balancer(self.config.lb, eligible)

    def pick(self, key: int = 0, avoid: Endpoint | None = None) -> Endpoint | None:
        """An endpoint for the next try; a retry passes the endpoint that failed, to go elsewhere."""
        endpoint = self.balancer.pick(key)
        if avoid is not None and endpoint is avoid and len(self.eligible) > 1:
            for i in range(1, 4):  # bounded: a hash ring may land on the same endpoint again
                endpoint = self.balancer.pick(key + i * 0x9E3779B9)
                if endpoint is not avoid:
                    break
        return endpoint

    def hash_of(self, headers: list[tuple[bytes, bytes]], client_ip: bytes) -> int:
        """The ring-hash key of a request: its `hash_on` header or cookie, else the client address."""
        value = b""
        if self.hash_header:
            value = next((v for n, v in headers if n.lower() == self.hash_header), b"")
        elif self.hash_cookie:
            prefix = self.hash_cookie + b"="
            for n, v in headers:
                if n.lower() == b"cookie":
                    for part in v.split(b";"):
                        cookie = part.strip()
                        if cookie.startswith(prefix):
                            value = cookie[len(prefix) :]
                            break
        return hash_key(value or client_ip)

    def unavailable_reason(self) -> str:
        return "no_healthy_endpoint" if self.endpoints else "no_endpoint"

    def health_changed(self, endpoint: object) -> None:
        self.rebuild()

    # -- circuit breaking -----------------------------------------------------------------------------

    def count_overflow(self, limit: str) -> None:
        counter = self.overflow.get(limit)
        if counter is None:
            counter = self.overflow[limit] = self.stats.overflows.labels(self.name, limit)
        counter.value += 1

    def count_retry_refused(self, why: str) -> None:
        counter = self.retries_refused.get(why)
        if counter is None:
            counter = self.retries_refused[why] = self.stats.retries_refused.labels(self.name, why)
        counter.value += 1

    def open_or_wait(self, endpoint: Endpoint, on_done: ConnectCallback) -> Callable[[], None] | None:
        """Open a connection to `endpoint`, or wait for one at max_connections. Returns a function the
        caller calls if it stops waiting (its request ended first), or None when over a limit (the
        caller answers `overflow`)."""
        limits = self.limits
        if self.pending >= limits.max_pending:
            self.count_overflow("pending")
            return None
        self.pending += 1
        waiter = Waiter(self, on_done)
        if self.connections >= limits.max_connections:
            self.waiters.append(waiter)
        else:
            self.connections += 1
            endpoint.connect(waiter)
        return waiter.cancel

    def hand_over(self, conn: UpstreamConnection) -> None:
        """A connection came free while requests wait at max_connections: the first waiter gets it."""
        waiter = self.waiters.popleft()
        asyncio.get_running_loop().call_soon(waiter, conn, None)

    def connection_closed(self) -> None:
        self.connections -= 1
        if self.waiters and self.connections < self.limits.max_connections:
            endpoint = self.pick()
            waiter = self.waiters.popleft()
            if endpoint is None:
                waiter(None, self.unavailable_reason())
            else:
                self.connections += 1
                endpoint.connect(waiter)

    # -- outlier detection ----------------------------------------------------------------------------

    def eject(self, endpoint: Endpoint) -> None:
        od = self.outlier
        assert od is not None
        ejected = sum(e.ejected for e in self.endpoints)
        if ejected and (ejected + 1) * 100 > od.max_ejection_percent * len(self.endpoints):
            return  # over the limit; the first ejection is always allowed
        endpoint.times_ejected += 1
        seconds = min(
            float(od.base_ejection) * endpoint.times_ejected, max(MAX_EJECTION_SECONDS, od.base_ejection)
        )
        endpoint.ejected_until = asyncio.get_running_loop().time() + seconds
        endpoint.ejections.value += 1
        endpoint.ejected_gauge.value = 1.0
        endpoint.close_idle()
        log.warning(
            "endpoint ejected",
            extra={"cluster": self.name, "endpoint": endpoint.label, "seconds": seconds},
        )
        self.rebuild()

    def tick(self, now: float) -> None:
        """Once a second: return endpoints whose ejection ran out, close idle connections past their time."""
        self.budget.tick()
        returned = False
        for endpoint in self.endpoints:
            endpoint.expire_idle(now)
            if endpoint.ejected and endpoint.ejected_until <= now:
                endpoint.ejected_until = 0.0
                endpoint.consecutive_5xx = endpoint.consecutive_gateway = 0
                endpoint.ejected_gauge.value = 0.0
                returned = True
                log.info("endpoint returned", extra={"cluster": self.name, "endpoint": endpoint.label})
        if returned:
            self.rebuild()

    # -- membership ---------------------------------------------------------------------------------

    def set_endpoints(self, addresses: Sequence[tuple[str, int, int]]) -> None:
        """A new endpoint list (DNS): endpoints still present keep their pools and state."""
        by_key = {(e.host, e.port): e for e in self.endpoints}
        endpoints = []
        for host, port, weight in addresses:
            endpoint = by_key.pop((host, port), None)
            if endpoint is None:
                endpoint = Endpoint(self, Address(host, port), weight, self.stats)
            endpoint.weight = weight
            endpoints.append(endpoint)
        for gone in by_key.values():
            gone.removed = True
            gone.close_idle()
            gone.drop_series(self.stats)
        self.endpoints = endpoints
        self.rebuild()

    def close_idle(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close_idle()

    def retire(self) -> None:
        """Replaced by a reload: no new requests come here; connections close as they come free."""
        self.retired = True
        for helper in self.helpers:
            helper.stop()
        self.close_idle()
        if self.tls is not None:
            self.tls.retire()

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "lb": self.config.lb,
            "requests_active": self.requests,
            "connections": self.connections,
            "pending": self.pending,
            "retries_active": self.retries_active,
            "endpoints": [self._endpoint_view(e) for e in self.endpoints],
        }

    def _endpoint_view(self, endpoint: Endpoint) -> dict[str, object]:
        view = endpoint.view()
        sessions = self.tls.sessions if self.tls is not None else None
        if sessions is not None:  # its HTTP connections are streams of these (tls/mux.py)
            view["multiplexed_connections"], view["streams"] = sessions.count(endpoint.host, endpoint.port)
        return view
