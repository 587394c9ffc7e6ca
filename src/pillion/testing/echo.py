"""A TCP echo server on a real loopback socket, the upstream for the TCP proxy's integration tests.

Theory of operation: every accepted connection gets an `_EchoConnection` protocol that writes back what it
reads, with flow control: when its send buffer fills it stops reading until the buffer drains, so a peer
that does not read makes the echo stop reading too, and a large stream holds one socket buffer here.
On EOF it sends `farewell` (if any) and closes, which is how a test sees that a half-close arrived and
that the other direction still flowed afterwards.

Observations for tests: `accepted` (connections so far), `connections` (open now), `resets` (connections
the peer reset), `received` (bytes read, all connections), `buffered()` (bytes waiting in send buffers).
`reset_all()` drops every open connection with a TCP RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self, cast


class _EchoConnection(asyncio.Protocol):
    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.server.accepted += 1
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.server.received += len(data)
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        assert self.transport is not None
        if self.server.farewell:
            self.transport.write(self.server.farewell)
        self.transport.close()  # after what is buffered has been sent
        return True

    def pause_writing(self) -> None:
        if self.transport is not None and not self.eof:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.eof and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.server.resets += 1
        self.server.connections.discard(self)


class EchoServer:
    """`async with EchoServer() as echo:` ... `echo.address` is `127.0.0.1:PORT`."""

    def __init__(self, host: str = "127.0.0.1", *, farewell: bytes = b"") -> None:
        self.host = host
        self.farewell = farewell
        self.accepted = 0
        self.resets = 0
        self.received = 0
        self.connections: set[_EchoConnection] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def buffered(self) -> int:
        """Bytes read but not yet sent back, over every open connection."""
        return sum(c.transport.get_write_buffer_size() for c in self.connections if c.transport is not None)

    def reset_all(self) -> None:
        for conn in list(self.connections):
            transport = conn.transport
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _EchoConnection(self), self.host, 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
