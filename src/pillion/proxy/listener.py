"""An HTTP listener: a bound socket, its routes and limits, and the connections it accepted.

The listener is what the downstream connections read their per-request settings from (router, limits,
access log), so a connection holds one reference instead of many. It also runs the housekeeping that
would otherwise cost a timer per request: once a second it closes connections that sat idle too long or
took too long to send a request head.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from pillion.config.model import Listener as ListenerConfig
from pillion.http.headers import trace_id_of
from pillion.http.local_reply import FLAGS
from pillion.proxy.batch import WriteBatch
from pillion.proxy.bind import Bound, bind, bound_port
from pillion.proxy.deadlines import Deadlines
from pillion.proxy.downstream import LINGER_SECONDS, DownstreamConnection, Exchange
from pillion.proxy.router import Router, RouteStats, compile_route
from pillion.proxy.stats import ProxyStats

if TYPE_CHECKING:
    from pillion.proxy.cluster import Cluster
    from pillion.proxy.router import RouteEntry
    from pillion.runtime.overload import Overload
    from pillion.telemetry.access_log import AccessLog, LogScope
    from pillion.telemetry.stats import Counter
    from pillion.telemetry.tracer import Tracer
    from pillion.tls.termination import DownstreamTls

log: Final = logging.getLogger("pillion.listener")


class HttpListener:
    def __init__(
        self,
        config: ListenerConfig,
        clusters: dict[str, Cluster],
        stats: ProxyStats,
        access_log: AccessLog | None,
        *,
        overload: Overload | None = None,
        tls: DownstreamTls | None = None,
        tracer: Tracer | None = None,
        metrics: bool = True,
    ) -> None:
        self.name = config.name
        self.metrics = metrics  # count and time each request (`metrics.enabled`)
        self.tracer = tracer  # spans and trace propagation, when tracing is configured
        self.valid_hosts: set[bytes] = set()  # Host values already checked (bounded: clients choose them)
        # The Host value that passed the check last (see DownstreamConnection.on_headers_complete);
        # None, not b"", before the first: an empty Host must be checked too.
        self.last_host: bytes | None = None
        self.overload = overload  # process-wide limits; None for a listener built alone (tools, fuzzing)
        self.tls = tls  # TLS termination, and for mTLS the check of each client
        self.tls_failures = stats.tls_failures.labels(self.name, "")
        self.stats = stats
        # Each route's access-log fields, rendered on its first request (None: no route matched);
        # emptied when a reload puts new routes in force, so it holds at most the current ones.
        self._log_scopes: dict[RouteEntry | None, LogScope] = {}
        self.update(config, clusters)
        self.unrouted = RouteStats(**stats.route_fields((self.name, "", "")))
        self.access_log = access_log
        self._access_log_errors = stats.access_log_errors
        self._local_replies = stats.local_replies
        self._local_by_reason: dict[str, Counter] = {}
        self.active = stats.downstream_active.labels(self.name)
        self.accepted = stats.downstream_total.labels(self.name)
        self.rejected = stats.downstream_rejected.labels(self.name)
        self.head_timeouts = stats.downstream_timeouts.labels(self.name, "request_headers")
        self.request_timeouts = stats.downstream_timeouts.labels(self.name, "request")
        self.idle_timeouts = stats.downstream_timeouts.labels(self.name, "idle")
        self.connections: set[DownstreamConnection] = set()
        self.draining = False
        self.server: Bound | None = None
        # Both need the running loop, so they are made in start().
        self.deadlines: Deadlines[DownstreamConnection]  # route timeouts
        self.try_deadlines: Deadlines[DownstreamConnection]  # per-try timeouts
        self.batch: WriteBatch  # writes to both sides, sent once per loop pass

    def update(self, config: ListenerConfig, clusters: dict[str, Cluster]) -> None:
        self.prepare(config, clusters)()

    def prepare(self, config: ListenerConfig, clusters: dict[str, Cluster]) -> Callable[[], None]:
        """Compile a (reloaded) config now; the returned function puts it in force. From then on the
        routes and limits apply to the next request of every connection, and the socket stays bound."""
        authz = config.authorization
        router = Router([compile_route(self.name, r, clusters, self.stats, authz) for r in config.routes])

        def commit() -> None:
            self.config = config
            limits = config.limits
            self.max_head_size = int(limits.max_request_headers_size)
            self.max_headers = limits.max_request_headers
            self.max_uri_size = int(limits.max_uri_size)
            self.max_body_size = int(limits.max_request_body_size)
            self.headers_timeout = float(limits.request_headers_timeout)
            self.request_timeout = float(limits.request_timeout)
            self.idle_timeout = float(limits.idle_timeout)
            self.max_connections = config.max_connections
            self.router = router
            self._log_scopes.clear()  # the old routes' scopes

        return commit

    @property
    def bound(self) -> bool:
        return self.server is not None and self.server.is_serving()

    @property
    def port(self) -> int:
        return bound_port(self.server)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(loop, DownstreamConnection.timed_out)
        self.try_deadlines = Deadlines(loop, DownstreamConnection.try_timed_out)
        self.batch = WriteBatch(loop)
        address = self.config.address
        self.server = await bind(
            address,
            lambda: cast(asyncio.Protocol, DownstreamConnection(self)),
            self.tls,
            handshake_timeout=self.headers_timeout,
            tls_failures=self.tls_failures,
        )
        log.info("listener bound", extra={"listener": self.name, "address": f"{address.host}:{self.port}"})

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted carry on."""
        self.start_draining()
        if self.server is not None:
            self.server.close()

    def start_draining(self) -> None:
        """Every response from now on closes its connection; idle connections close now. The socket
        stays open (an outbound listener keeps serving the app until the end of the drain)."""
        self.draining = True
        for conn in list(self.connections):
            conn.close_if_idle()

    def connection_opened(self, conn: DownstreamConnection) -> bool:
        """Admit a new connection; False (and counted) when the listener is at max_connections."""
        if self.max_connections and len(self.connections) >= self.max_connections:
            self.rejected.value += 1
            return False
        if self.overload is not None and not self.overload.admit():
            return False
        if self.draining:
            conn.must_close = True
        self.connections.add(conn)
        self.active.value += 1
        self.accepted.value += 1
        return True

    def connection_closed(self, conn: DownstreamConnection) -> None:
        self.connections.discard(conn)
        self.active.value -= 1
        if self.overload is not None:
            self.overload.released()

    def count_local_reply(self, reason: str) -> None:
        counter = self._local_by_reason.get(reason)
        if counter is None:
            counter = self._local_by_reason[reason] = self._local_replies.labels(self.name, reason)
        counter.value += 1

    def log_access(self, ex: Exchange, elapsed: float) -> None:
        assert self.access_log is not None
        route = ex.route
        # The outcome's flag, then those decided along the way (DI, URX): one must not hide the other.
        flags = FLAGS.get(ex.error, "") if ex.error else ""
        if ex.flags:
            flags = f"{flags},{ex.flags}" if flags else ex.flags
        scope = self._log_scopes.get(route)
        if scope is None:
            scope = self._log_scope(route)
        self.access_log.write(
            scope=scope,
            method=ex.method,
            path=ex.target,
            status=ex.status,
            bytes_received=ex.body_in,
            bytes_sent=ex.body_out,
            duration=elapsed,
            upstream=ex.upstream_address,
            request_id=ex.request_id,
            request_id_safe=ex.own_request_id,
            # An exchange with a method had its head accepted by the parser, whose target is visible
            # ASCII only; one made for a broken request (no method) may hold anything.
            path_visible=bool(ex.method),
            error=ex.error,
            flags=flags,
            upstream_duration=ex.upstream_duration if ex.upstream_duration >= 0.0 else None,
            trace_id=trace_id_of(ex.trace_lines),
            start=ex.start,
        )

    def _log_scope(self, route: RouteEntry | None) -> LogScope:
        name, cluster = (route.name, route.labels[2]) if route is not None else ("", "")
        assert self.access_log is not None
        scope = self._log_scopes[route] = self.access_log.scope(self.name, name, cluster)
        return scope

    def sweep(self, now: float) -> None:
        """Close connections idle past idle_timeout, stuck in a request head past headers_timeout, in
        a request past request_timeout, or lingering after an early reply longer than LINGER_SECONDS."""
        idle_limit = now - self.idle_timeout
        head_limit = now - self.headers_timeout
        request_limit = now - self.request_timeout if self.request_timeout else 0.0
        linger_limit = now - LINGER_SECONDS
        for conn in list(self.connections):
            if conn.lingering:
                if conn.last_active < linger_limit:
                    conn.close()
            elif conn.started_at and conn.started_at < head_limit:
                # No reply: a client this slow to send a head is not waiting for one (slowloris).
                self.head_timeouts.value += 1
                conn.close()
            elif conn.request_started and conn.request_started < request_limit:
                self.request_timeouts.value += 1
                conn.request_timed_out()
            elif conn.idle() and conn.last_active < idle_limit:
                self.idle_timeouts.value += 1
                conn.close()

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": str(self.config.address),
            "bound": self.bound,
            "connections": len(self.connections),
        }
