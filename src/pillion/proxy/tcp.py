"""A TCP listener: every accepted connection's bytes forwarded both ways to an endpoint of one cluster.

Theory of operation: each accepted socket gets a `TcpConnection` (the client side's protocol), which
pauses reading from the client and starts one task that opens a connection to an endpoint (up to
`CONNECT_TRIES` endpoints, each within the cluster's `connect_timeout`). The upstream side is an
`UpstreamSide` protocol; from the moment it is connected the two protocols write straight into each
other's transport, so no coroutine runs per byte. Backpressure is the transports' own: a side whose send
buffer fills (`pause_writing`) pauses reading from the other side until it drains, so a gigabyte stream
holds a few socket buffers, not the gigabyte.

An EOF from one side is passed on with `write_eof` and the other direction keeps flowing; once both
sides have sent EOF both are closed. A TLS side cannot half-close (Python's TLS shutdown also reads the
peer's close_notify, dropping data that comes first), so an EOF for it is held: the other direction
keeps flowing until that side closes, or the idle timeout ends the connection. A reset (a connection
lost with an error) on one side is passed on as a reset (SO_LINGER 0, then abort) to the other. Idle
connections are found by the listener's once-a-second sweep: data sets a flag, the sweep turns flags
into times, so no clock is read per chunk and no timer exists per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pillion.config.model import Listener as ListenerConfig
from pillion.proxy.bind import Bound, bind, bound_port
from pillion.runtime.tasks import spawn
from pillion.telemetry.stats import CounterFamily, GaugeFamily, Registry
from pillion.tls.origination import TlsFailure

if TYPE_CHECKING:
    from pillion.proxy.cluster import Cluster, Endpoint
    from pillion.runtime.overload import Overload
    from pillion.tls.termination import DownstreamTls

log = logging.getLogger("pillion.tcp")

CONNECT_TRIES = 3  # the first endpoint and up to two others
# Picks spent looking for an endpoint not tried yet before trying a failed one again (a cluster of one).
_REPICKS = 8
# SO_LINGER on, 0 seconds: close() sends a reset instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(slots=True)
class TcpStats:
    active: GaugeFamily
    total: CounterFamily
    received: CounterFamily
    sent: CounterFamily
    connect_failures: CounterFamily
    rejected: CounterFamily
    idle_timeouts: CounterFamily
    tls_failures: CounterFamily  # shared with HTTP listeners (ProxyStats)

    @classmethod
    def declare(cls, registry: Registry, tls_failures: CounterFamily) -> TcpStats:
        by = ("listener",)
        return cls(
            tls_failures=tls_failures,
            active=registry.gauge("pillion_tcp_connections_active", "TCP client connections open now.", by),
            total=registry.counter(
                "pillion_tcp_connections_total", "TCP client connections accepted and proxied.", by
            ),
            received=registry.counter(
                "pillion_tcp_received_bytes_total", "Bytes received from TCP clients.", by
            ),
            sent=registry.counter("pillion_tcp_sent_bytes_total", "Bytes sent to TCP clients.", by),
            connect_failures=registry.counter(
                "pillion_tcp_connect_failures_total",
                "TCP client connections closed because no endpoint could be connected to (every try failed).",
                by,
            ),
            rejected=registry.counter(
                "pillion_tcp_connections_rejected_total",
                "TCP client connections closed on accept because the listener was at max_connections.",
                by,
            ),
            idle_timeouts=registry.counter(
                "pillion_tcp_idle_timeouts_total",
                "TCP connections closed after no bytes moved either way for the idle timeout.",
                by,
            ),
        )


def _reset(transport: asyncio.Transport) -> None:
    """Close with a reset, so the peer sees the failure the other side saw."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def _pass_eof(transport: asyncio.Transport) -> None:
    """Half-close `transport` once what it holds is sent; held (nothing done) on a TLS one, which cannot."""
    if transport.can_write_eof():
        transport.write_eof()


class UpstreamSide(asyncio.Protocol):
    """The connection to the endpoint: what it sends goes to the client."""

    __slots__ = ("cluster", "conn", "refused", "transport")

    def __init__(self, conn: TcpConnection, cluster: Cluster) -> None:
        self.conn = conn
        self.cluster = cluster  # counted in its max_connections until this connection is lost
        self.transport: asyncio.Transport | None = None
        self.refused: TlsFailure | None = None  # a mesh endpoint that is not the expected peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        tls = self.cluster.tls
        if tls is not None:
            try:
                tls.verify(transport)  # before a client byte can reach it
            except TlsFailure as exc:
                self.refused = exc
                self.transport.abort()
                return
        self.conn.upstream_made(self)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.moved = True
        conn.sent.value += len(data)
        client = conn.transport
        if client is not None and not client.is_closing():
            client.write(data)

    def eof_received(self) -> bool:
        self.conn.upstream_eof_received()
        return True  # keep the socket: the client may still be sending

    def pause_writing(self) -> None:
        self.conn.pause_client(True)

    def resume_writing(self) -> None:
        self.conn.pause_client(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cluster.connection_closed()
        self.conn.upstream_lost(self, exc)


class TcpConnection(asyncio.Protocol):
    """One client connection and, once connected, its upstream side."""

    __slots__ = (
        "_connecting",
        "admitted",
        "client_eof",
        "closed",
        "last_active",
        "listener",
        "moved",
        "pending",
        "received",
        "sent",
        "transport",
        "upstream",
        "upstream_eof",
    )

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.received = listener.received
        self.sent = listener.sent
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamSide | None = None
        self.pending: list[bytes] = []  # read before the upstream was open (at most one read)
        self.admitted = False
        self.closed = False
        self.client_eof = False
        self.upstream_eof = False
        self.moved = False  # bytes moved since the last sweep
        self.last_active = 0.0
        self._connecting: asyncio.Task[None] | None = None

    # -- the client side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if not self.listener.admit(self):
            transport.close()
            return
        self.admitted = True
        tls = self.listener.tls
        if tls is not None:
            from pillion.tls.termination import PeerRefused

            try:
                tls.peer(transport.get_extra_info("ssl_object"))
            except PeerRefused as exc:
                log.info("client refused", extra={"listener": self.listener.name, "reason": exc.reason})
                self.listener.tls_failures.value += 1
                transport.abort()
                return
        transport.pause_reading()  # until the upstream is open
        self._connecting = spawn(self._open_upstream(), name=f"tcp connect {self.listener.name}")

    def data_received(self, data: bytes) -> None:
        self.moved = True
        self.received.value += len(data)
        up = self.upstream
        if up is None:
            self.pending.append(data)
            return
        upstream = up.transport
        if upstream is not None and not upstream.is_closing():
            upstream.write(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        up = self.upstream
        if up is not None:
            upstream = up.transport
            if upstream is not None and not upstream.is_closing():
                _pass_eof(upstream)
            if self.upstream_eof:
                self._finish()
        return True  # keep the socket: the upstream may still be sending

    def pause_writing(self) -> None:
        self._pause_upstream(True)

    def resume_writing(self) -> None:
        self._pause_upstream(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.closed = True
        self.listener.connection_closed(self)
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        up = self.upstream
        if up is not None and up.transport is not None and not up.transport.is_closing():
            # The client reset, or the drain timeout cut it: the upstream gets the same.
            if exc is not None:
                _reset(up.transport)
            else:
                up.transport.abort()

    # -- the upstream side -------------------------------------------------------------------------

    async def _open_upstream(self) -> None:
        listener = self.listener
        cluster = listener.cluster
        loop = listener.loop
        failed: list[Endpoint] = []
        for _ in range(CONNECT_TRIES):
            endpoint = _next_endpoint(cluster, failed)
            if endpoint is None:
                break
            if cluster.connections >= cluster.limits.max_connections:
                cluster.count_overflow("connections")  # the circuit breaker, shared with HTTP
                break
            cluster.connections += 1
            side = UpstreamSide(self, cluster)
            try:
                async with asyncio.timeout(cluster.connect_timeout):
                    factory = functools.partial(_same, side)
                    if cluster.tls is None:
                        await loop.create_connection(factory, endpoint.host, endpoint.port)
                    else:
                        await cluster.tls.create_connection(factory, endpoint.host, endpoint.port)
                    if side.refused is not None:
                        raise side.refused
            except asyncio.CancelledError:  # the client left while we connected
                if side.transport is None:
                    cluster.connection_closed()
                raise
            except (OSError, TimeoutError) as exc:
                if self.upstream is not None:
                    # The connect won the race with the timeout: it is attached, and if create_connection
                    # closed it again, its connection_lost closes the client.
                    return
                if side.transport is None:  # never made: its connection_lost will not free the slot
                    cluster.connection_closed()
                endpoint.connect_failures.value += 1
                endpoint.failed()  # outlier detection, as for HTTP
                failed.append(endpoint)
                extra = {
                    "listener": listener.name,
                    "endpoint": endpoint.label,
                    "error": str(exc) or repr(exc),
                }
                if isinstance(exc, TlsFailure):  # a configuration problem, not a passing blip: say so
                    cluster.tls_failures.value += 1
                    log.warning("upstream TLS failed", extra=extra)
                else:
                    log.debug("tcp connect failed", extra=extra)
                continue
            self._connecting = None
            return  # UpstreamSide.connection_made has attached it
        self._connecting = None
        listener.connect_failures.value += 1
        log.debug("tcp connect gave up", extra={"listener": listener.name, "cluster": cluster.name})
        if self.transport is not None:
            self.transport.close()

    def upstream_made(self, up: UpstreamSide) -> None:
        assert up.transport is not None
        if self.closed or self.upstream is not None:
            up.transport.abort()  # the client left while we were connecting
            return
        self.upstream = up
        upstream = up.transport
        for data in self.pending:
            upstream.write(data)
        self.pending = []
        if self.client_eof:
            _pass_eof(upstream)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def upstream_eof_received(self) -> None:
        self.upstream_eof = True
        client = self.transport
        if client is not None and not client.is_closing():
            _pass_eof(client)
        if self.client_eof:
            self._finish()

    def upstream_lost(self, up: UpstreamSide, exc: Exception | None) -> None:
        client = self.transport
        if up is not self.upstream or self.closed or client is None or client.is_closing():
            return
        if exc is not None:
            _reset(client)  # the upstream reset: so does the client
        else:
            client.close()

    # -- flow control and closing ------------------------------------------------------------------

    def pause_client(self, pause: bool) -> None:
        """The upstream's send buffer filled (or drained): stop (or resume) reading from the client."""
        client = self.transport
        if client is None or client.is_closing() or self.client_eof:
            return
        if pause:
            client.pause_reading()
        else:
            client.resume_reading()

    def _pause_upstream(self, pause: bool) -> None:
        up = self.upstream
        if up is None or up.transport is None or up.transport.is_closing() or self.upstream_eof:
            return
        if pause:
            up.transport.pause_reading()
        else:
            up.transport.resume_reading()

    def _finish(self) -> None:
        """Both sides sent EOF: close both once what they hold is sent."""
        for transport in (self.transport, self.upstream.transport if self.upstream else None):
            if transport is not None and not transport.is_closing():
                transport.close()

    def abort(self) -> None:
        """Cut both sides now (idle timeout); held bytes are dropped."""
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.abort()
        if self.transport is not None:
            self.transport.abort()


def _next_endpoint(cluster: Cluster, failed: list[Endpoint]) -> Endpoint | None:
    """An endpoint not tried yet if the cluster offers one within a few picks, else one tried before."""
    endpoint = None
    for _ in range(_REPICKS):
        endpoint = cluster.pick()
        if endpoint is None or endpoint not in failed:
            return endpoint
    return endpoint


def _same(side: UpstreamSide) -> UpstreamSide:
    return side


class TcpListener:
    """A bound socket whose connections are forwarded to `config.cluster`."""

    def update(self, config: ListenerConfig, clusters: dict[str, Cluster]) -> None:
        self.prepare(config, clusters)()

    def prepare(self, config: ListenerConfig, clusters: dict[str, Cluster]) -> Callable[[], None]:
        """A (reloaded) config, put in force by the returned function: new connections go to its
        cluster; open ones stay where they are."""
        assert config.cluster is not None  # validated
        cluster = clusters[config.cluster]

        def commit() -> None:
            self.config = config
            self.cluster = cluster
            self.max_connections = config.max_connections
            self.idle_timeout = float(config.limits.idle_timeout)

        return commit

    def __init__(
        self,
        config: ListenerConfig,
        clusters: dict[str, Cluster],
        stats: TcpStats,
        *,
        overload: Overload | None = None,
        tls: DownstreamTls | None = None,
    ) -> None:
        self.name = config.name
        self.overload = overload  # process-wide limits, shared with every listener
        self.tls = tls  # TLS termination (plaintext to the cluster: the Cloud SQL Auth Proxy case, reversed)
        self.update(config, clusters)
        name = self.name
        self.active = stats.active.labels(name)
        self.total = stats.total.labels(name)
        self.received = stats.received.labels(name)
        self.sent = stats.sent.labels(name)
        self.connect_failures = stats.connect_failures.labels(name)
        self.rejected = stats.rejected.labels(name)
        self.idle_timeouts = stats.idle_timeouts.labels(name)
        self.tls_failures = stats.tls_failures.labels(name, "")
        self.connections: set[TcpConnection] = set()
        self.draining = False
        self.server: Bound | None = None
        self.loop: asyncio.AbstractEventLoop  # set in start()

    @property
    def bound(self) -> bool:
        return self.server is not None and self.server.is_serving()

    @property
    def port(self) -> int:
        return bound_port(self.server)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        address = self.config.address
        self.server = await bind(
            address,
            lambda: TcpConnection(self),
            self.tls,
            handshake_timeout=10.0,
            tls_failures=self.tls_failures,
        )
        log.info(
            "tcp listener bound",
            extra={
                "listener": self.name,
                "address": f"{address.host}:{self.port}",
                "cluster": self.cluster.name,
            },
        )

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted carry on until they end."""
        self.draining = True
        if self.server is not None:
            self.server.close()

    def start_draining(self) -> None:
        """Draining, socket still open (outbound): TCP connections simply carry on until they end."""
        self.draining = True

    def admit(self, conn: TcpConnection) -> bool:
        if self.max_connections and len(self.connections) >= self.max_connections:
            self.rejected.value += 1
            return False
        if self.overload is not None and not self.overload.admit():
            return False
        conn.last_active = self.loop.time()
        self.connections.add(conn)
        self.active.value += 1
        self.total.value += 1
        return True

    def connection_closed(self, conn: TcpConnection) -> None:
        self.connections.discard(conn)
        self.active.value -= 1
        if self.overload is not None:
            self.overload.released()

    def sweep(self, now: float) -> None:
        """Abort connections with no bytes moved either way for idle_timeout (0 disables). A connection is
        seen active at the sweep after its last bytes, so it is closed up to one sweep late, never early."""
        if self.idle_timeout <= 0:
            return
        limit = now - self.idle_timeout
        for conn in list(self.connections):
            if conn.moved:
                conn.moved = False
                conn.last_active = now
            elif conn.last_active <= limit:
                self.idle_timeouts.value += 1
                log.debug("tcp idle timeout", extra={"listener": self.name})
                conn.abort()

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "protocol": "tcp",
            "address": str(self.config.address),
            "cluster": self.cluster.name,
            "bound": self.bound,
            "connections": len(self.connections),
        }
