"""Opening a listener's socket, plaintext or TLS, the same way for HTTP and TCP listeners."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pillion.config.model import Address

if TYPE_CHECKING:
    from pillion.telemetry.stats import Counter
    from pillion.tls.termination import DownstreamTls


class Bound(Protocol):
    """What a listener keeps of its socket: asyncio.Server, or TlsAcceptor on a TLS listener."""

    @property
    def sockets(self) -> Any: ...

    def is_serving(self) -> bool: ...

    def close(self) -> None: ...


async def bind(
    address: Address,
    factory: Callable[[], asyncio.Protocol],
    tls: DownstreamTls | None,
    *,
    handshake_timeout: float,
    tls_failures: Counter,
) -> Bound:
    if tls is not None:
        from pillion.tls.acceptor import TlsAcceptor  # loaded only for TLS listeners

        return TlsAcceptor.bind(
            address.host, address.port, factory, tls, timeout=handshake_timeout, failures=tls_failures
        )
    server = await asyncio.get_running_loop().create_server(
        factory, address.host, address.port, reuse_address=True, backlog=1024
    )
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    return server


def bound_port(server: Bound | None) -> int:
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]
    return port
