"""The admin HTTP/1.1 server: an asyncio Protocol around `httptools.HttpRequestParser`.

Theory of operation: each connection feeds received bytes to llhttp. A completed request is appended to a
per-connection queue; one task per busy connection (started with `spawn`) answers the queue in order, so
pipelined requests get their responses in sequence, and the task ends when the queue is empty. Responses
always carry `content-length` and `cache-control: no-cache`; keep-alive follows the request
(`should_keep_alive`: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`).

Bad input never raises out of the protocol: a parse error (malformed line, bad method, an oversized URL,
header block or body, an Upgrade or CONNECT) queues an error response -- 400, or 413/414/431 for limits --
after any requests already parsed; once it is written the connection closes and further bytes are
ignored. The admin surface is tiny, so the limits are small. A connection with no request in progress for
`IDLE_TIMEOUT` seconds is closed, which also ends connections that trickle a request in too slowly. When
the peer stops reading, writing pauses (asyncio flow control) until the transport drains, so a large
`/metrics` body cannot pile up without bound; reading pauses while too many requests are queued.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from http import HTTPStatus
from typing import NoReturn, cast
from urllib.parse import parse_qs

import httptools

from pillion.admin.handlers import Request, Response, dispatch, text
from pillion.admin.target import AdminTarget
from pillion.proxy.bind import listen_socket
from pillion.runtime.tasks import spawn

__all__ = ["IDLE_TIMEOUT", "AdminServer", "start_admin"]

log = logging.getLogger("pillion.admin")

IDLE_TIMEOUT = 60.0  # seconds without a request being answered before a connection is closed
MAX_URL = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024  # admin requests carry no body worth reading; the bytes are counted and dropped
MAX_QUEUED = 16  # pipelined requests parsed ahead of their answers before reading pauses


# A parser with no connection behind it, for closed connections to point at (see connection_lost).
_DETACHED = httptools.HttpRequestParser(None)


class _RejectError(Exception):
    """Raised inside a parser callback to stop parsing; the status to answer is on the connection."""


class _Connection(asyncio.Protocol):
    def __init__(self, target: AdminTarget, connections: set[_Connection]) -> None:
        self.target = target
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        # (request, keep-alive) pairs, or an error status to answer before closing the connection.
        self.queue: deque[tuple[Request, bool] | int] = deque()
        self.busy = False
        self.done = False  # no more requests will be parsed on this connection
        self.reading_paused = False
        self.writable: asyncio.Event = asyncio.Event()
        self.writable.set()
        self.idle: asyncio.TimerHandle | None = None
        self.reject_status = 0
        self._reset_message()

    # -- connection lifecycle ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not registered as an asyncio.Transport subclass, but is one in all
        # but name, so this is a cast rather than an isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client = str(peer[0])
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.done = True
        self.queue.clear()
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None  # (the handle holds self.close: a cycle)
        self.writable.set()  # wake a task waiting to write, so it sees the connection is gone
        # The parser holds this connection's methods as callbacks: let go of it, so the connection is
        # freed by reference counting rather than left to the cyclic collector (see docs/architecture.md).
        self.parser = _DETACHED

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.loop.call_later(IDLE_TIMEOUT, self.close)

    # -- parsing -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (e.g. websocket) or CONNECT: the request was parsed; answer it, then close, since
            # what follows is not HTTP.
            self._finish_after_queue(0)
        except httptools.HttpParserError:
            self._finish_after_queue(self.reject_status or 400)
        if len(self.queue) >= MAX_QUEUED and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._kick()

    def _finish_after_queue(self, status: int) -> None:
        if self.done:
            return  # e.g. bytes after a `Connection: close` request: ignored, not an error
        self.done = True
        if status:
            self.queue.append(status)
        elif self.queue and isinstance(last := self.queue[-1], tuple):
            self.queue[-1] = (last[0], False)
        else:
            self.queue.append(400)

    def _reset_message(self) -> None:
        self.url = b""
        self.header_bytes = 0
        self.header_count = 0
        self.body_bytes = 0

    def _reject(self, status: int) -> NoReturn:
        self.reject_status = status
        raise _RejectError

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            self._reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > MAX_HEADERS or self.header_bytes > MAX_HEADER_BYTES:
            self._reject(431)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:
            self._reject(413)

    def on_message_complete(self) -> None:
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self._reject(400)
        query = parse_qs(parsed.query.decode("latin-1")) if parsed.query else {}
        request = Request(
            self.parser.get_method().decode("ascii"), parsed.path.decode("latin-1"), query, self.client
        )
        keep = self.parser.should_keep_alive()
        self.queue.append((request, keep))
        if not keep:
            self.done = True  # anything after a closing request is ignored

    # -- answering ---------------------------------------------------------------------------------

    def _kick(self) -> None:
        if self.queue and not self.busy:
            self.busy = True
            if self.idle is not None:
                self.idle.cancel()
            spawn(self._answer_queue(), name="admin-request")

    async def _answer_queue(self) -> None:
        try:
            while self.queue and self.transport is not None and not self.transport.is_closing():
                item = self.queue.popleft()
                if self.reading_paused and len(self.queue) < MAX_QUEUED // 2:
                    self.reading_paused = False
                    self.transport.resume_reading()
                if isinstance(item, int):
                    self._write(text(item, f"{HTTPStatus(item).phrase.lower()}\n"), head=False, close=True)
                    self.transport.close()
                    return
                request, keep = item
                response = await dispatch(self.target, request)
                if self.transport.is_closing():
                    return
                self._write(response, head=request.method == "HEAD", close=not keep)
                if response.after is not None:
                    try:
                        response.after()
                    except Exception:
                        log.exception("admin action failed", extra={"path": request.path})
                if not keep:
                    self.transport.close()
                    return
                await self.writable.wait()
        finally:
            self.busy = False
            if self.transport is not None and not self.transport.is_closing():
                self._arm_idle()

    def _write(self, response: Response, *, head: bool, close: bool) -> None:
        assert self.transport is not None
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-type: {response.content_type}",
            f"content-length: {len(response.body)}",
            "cache-control: no-cache",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if close:
            lines.append("connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head_bytes if head else head_bytes + response.body)


class AdminServer:
    """A running admin server: its bound sockets and port, and `close()`."""

    def __init__(self, server: asyncio.Server, connections: set[_Connection]) -> None:
        self._server = server
        self._connections = connections

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection, idle keep-alive ones included."""
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()


async def start_admin(target: AdminTarget, host: str, port: int) -> AdminServer:
    """Bind `host:port` (port 0 picks a free one) and serve `target` until `close()`."""
    connections: set[_Connection] = set()
    loop = asyncio.get_running_loop()
    sock = listen_socket(host, port, backlog=64)
    server = await loop.create_server(lambda: _Connection(target, connections), sock=sock, backlog=64)
    log.debug("admin server listening", extra={"address": f"{host}:{server.sockets[0].getsockname()[1]}"})
    return AdminServer(server, connections)
