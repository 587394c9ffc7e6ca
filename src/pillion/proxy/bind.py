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


BACKLOG = 1024  # pending connections the kernel queues for a listener (a burst of clients)


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
    sock = listen_socket(address.host, address.port, backlog=BACKLOG)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    # uvloop listens on the socket again, with its own default of 100 unless told
    return await asyncio.get_running_loop().create_server(factory, sock=sock, backlog=BACKLOG)


def listen_socket(host: str, port: int, *, backlog: int) -> socket.socket:
    """A non-blocking listening socket (IPv4 unless the host is an IPv6 literal; config hosts are ASCII).

    Opened here rather than by `loop.create_server(host, port)`: uvloop resolves the host through
    getaddrinfo with the `idna` codec, whose import (stringprep, unicodedata) costs about 0.5 MiB of
    memory for the life of the process; the socket module takes ASCII hosts as they are.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)  # sets SO_REUSEADDR
    sock.setblocking(False)
    return sock


def bound_port(server: Bound | None) -> int:
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]
    return port
