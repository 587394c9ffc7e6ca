"""TLS from Pillion to a cluster's endpoints: mTLS to another sidecar (`mesh`) or TLS to an outside
service (`simple`).

`connect` is the one place both the HTTP pool and the TCP proxy open an upstream connection through, so
TLS is handled the same for both: Pillion's TLS transport (tls/transport.py) connects and runs the
handshake, then a `mesh` peer's certificate must carry the configured SPIFFE ID (or any of this trust
domain). Every TLS failure, handshake or identity, becomes `TlsFailure`, which the callers report as
`upstream_tls_failure`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from pillion.config.model import ClusterTls
from pillion.tls import contexts

if TYPE_CHECKING:
    from pillion.telemetry.stats import Gauge
    from pillion.tls.mux import ClientSessions
    from pillion.tls.workload import WorkloadIdentity


class TlsFailure(OSError):
    """The TLS handshake to an endpoint failed, or the endpoint is not the peer the cluster expects."""


class UpstreamTls:
    __slots__ = ("_context", "config", "identity", "sessions")

    def __init__(
        self, config: ClusterTls, identity: WorkloadIdentity | None, mux_connections: Gauge | None = None
    ) -> None:
        """`mux_connections`: the gauge of this cluster's multiplexed connections (mesh, `multiplex`)."""
        self.config = config
        self.identity = identity if config.mode == "mesh" else None  # set: the peer's SPIFFE ID is checked
        self._context = contexts.simple_client(config.ca) if config.mode == "simple" else None
        self.sessions: ClientSessions | None = None  # mesh HTTP connections as streams of a few sessions
        if self.identity is not None and config.multiplex:
            from pillion.tls.mux import ClientSessions

            self.sessions = ClientSessions(mux_connections)

    def context(self) -> ssl.SSLContext:
        if self._context is not None:
            return self._context
        assert self.identity is not None  # (validated: mesh needs an identity)
        ctx: ssl.SSLContext = self.identity.client_context()
        return ctx  # the identity in service now: rotation applies

    async def create_connection(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> asyncio.BaseTransport:
        """Connect and handshake; TlsFailure when the handshake fails. The peer is not checked yet."""
        from pillion.tls.transport import open_client

        sni = (self.config.sni or host) if self.config.mode == "simple" else None
        try:
            transport = await open_client(factory, host, port, self.context(), sni)
        except ssl.SSLError as exc:
            raise TlsFailure(f"TLS handshake with {host}:{port} failed: {exc.reason or exc}") from None
        return cast(asyncio.BaseTransport, transport)  # (asyncio.Transport's methods, not a subclass)

    def verify(self, transport: asyncio.BaseTransport) -> None:
        """For `mesh`: TlsFailure unless the endpoint's certificate carries the expected SPIFFE ID. Called
        before anything is sent on the connection."""
        if self.identity is None:
            return
        from pillion.tls.spiffe import SvidError

        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        try:
            if der is None:
                raise SvidError("no_certificate", "the endpoint presented no certificate")
            self.identity.peer_id(der, self.config.peer)
        except SvidError as exc:
            raise TlsFailure(f"not the expected peer: {exc}") from None

    async def connect(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> asyncio.BaseTransport:
        """Connect, handshake and check the peer (for protocols that send nothing until told to). For a
        multiplexing mesh cluster (HTTP only) the connection is a stream of a session to the endpoint."""
        if self.sessions is not None:
            assert self.identity is not None
            return await self.sessions.open(
                factory(), host, port, self.identity.current, lambda: self._dial(host, port)
            )
        transport = await self.create_connection(factory, host, port)
        try:
            self.verify(transport)
        except TlsFailure:
            cast(asyncio.Transport, transport).abort()
            raise
        return transport

    def retire(self) -> None:
        """The cluster was replaced: its multiplexed connections close as their last streams end."""
        if self.sessions is not None:
            self.sessions.retire()

    async def _dial(self, host: str, port: int) -> asyncio.BaseTransport:
        """A new TLS connection to host:port, its peer checked: its protocol a Session, or PLAIN_PENDING
        when the peer did not select `pillion-mux/1` (then it is for one HTTP connection's use)."""
        from pillion.tls.mux import ALPN, PLAIN_PENDING, Session
        from pillion.tls.transport import open_client

        assert self.identity is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await open_client(
                lambda: Session(loop, None), host, port, self.identity.client_context(mux=True), None
            )
        except ssl.SSLError as exc:
            raise TlsFailure(f"TLS handshake with {host}:{port} failed: {exc.reason or exc}") from None
        try:
            self.verify(cast(asyncio.BaseTransport, transport))
        except TlsFailure:
            transport.abort()
            raise
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is None or sslobj.selected_alpn_protocol() != ALPN:
            transport.set_protocol(PLAIN_PENDING)
        return cast(asyncio.BaseTransport, transport)
