"""A small HTTP/1.1 server on asyncio, shared by the test upstream and the demo app.

Theory of operation: each accepted socket gets one `_Connection`, which is both the asyncio protocol and
the httptools parser's callback object. Bytes are parsed as they arrive; every request whose head is
complete is queued in arrival order, and one task per connection takes them one at a time and awaits the
server's `handle(request, response)`. So pipelined requests are answered strictly in order while the
bytes of the requests behind them keep being parsed. A handler gets its request as soon as the head is
parsed; the body arrives through `request.read_chunk()` / `request.stream()`.

Flow control runs both ways, so a handler that moves a gigabyte holds a few chunks, not the gigabyte:
when more than `READ_HIGH_WATER` body bytes wait unread the connection pauses reading until the handler
catches up, and `ServerResponse.write` waits for the transport's resume_writing when its buffer is full.

Framing of a response follows its headers: with content-length it is written as is, with
`transfer-encoding: chunked` `write` chunk-encodes, with neither it is close-delimited. Keep-alive follows
the request (httptools' should_keep_alive) unless the response says `connection: close`. After each
response any unread request body is drained, so the next request starts on a message boundary. A parse
error is answered 400 in its turn in the queue, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Protocol, Self, cast

import httptools

from pillion.runtime.tasks import spawn

log = logging.getLogger("pillion.testing.server")

Header = tuple[bytes, bytes]
HeaderLike = tuple[str | bytes, str | bytes]

# Reading pauses above this many unread body bytes per connection and resumes below the low mark.
READ_HIGH_WATER = 1024 * 1024
READ_LOW_WATER = 256 * 1024
# A larger write buffer than asyncio's 64 KiB default: fewer pause/resume round trips on big bodies.
WRITE_HIGH_WATER = 256 * 1024
# How long close() lets connections flush before aborting them.
CLOSE_GRACE_SECONDS = 1.0


def _b(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def header_value(headers: Iterable[Header], name: str) -> str | None:
    """The first value of header `name` (case-insensitive), decoded as latin-1, or None."""
    wanted = name.lower().encode("latin-1")
    for key, value in headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


class BodyListener(Protocol):
    """Sees a request body as it is parsed, whether or not the handler reads it (used for recording)."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


class ServerRequest:
    """One parsed request head plus a flow-controlled body stream."""

    def __init__(
        self,
        conn: _Connection,
        *,
        method: str,
        target: str,
        version: str,
        headers: list[Header],
        keep_alive: bool,
    ) -> None:
        self.connection_index = conn.index
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.trailers: list[Header] = []
        self.keep_alive = keep_alive
        self.listener: BodyListener | None = None
        expect = header_value(headers, "expect")
        self.expects_continue = version == "1.1" and expect is not None and expect.lower() == "100-continue"
        self.continue_sent = False
        self.responded = False
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    @property
    def body_complete(self) -> bool:
        """True once the whole body has been parsed (not necessarily read by the handler)."""
        return self._done

    async def read_chunk(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises ConnectionError if the peer left mid-body."""
        self._maybe_send_continue()
        while not self._chunks:
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._conn.consumed(len(chunk))
        return chunk

    async def stream(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    async def read(self) -> bytes:
        """The whole body in memory: for small bodies only."""
        parts = [chunk async for chunk in self.stream()]
        return b"".join(parts)

    async def discard(self) -> int:
        """Consume the body without keeping it; returns its length."""
        total = 0
        while chunk := await self.read_chunk():
            total += len(chunk)
        return total

    def _maybe_send_continue(self) -> None:
        # Like most servers, promise "100 Continue" only when the handler actually wants the body.
        if self.expects_continue and not self.continue_sent and not self.responded and not self._done:
            self.continue_sent = True
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # Called by the connection as the parser produces the body.
    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        if self.listener is not None:
            self.listener.feed(chunk)
        self._wake()

    def _finish(self) -> None:
        self._done = True
        if self.listener is not None:
            self.listener.finish()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class ServerResponse:
    """Writes one response: `send` for a whole body, or `start` + `write`... + `end` to stream one."""

    def __init__(self, conn: _Connection, request: ServerRequest, extra_headers: list[Header]) -> None:
        self._conn = conn
        self._request = request
        self._extra = extra_headers
        self.status: int | None = None
        self.started = False
        self.finished = False
        self.closed = False
        self.keep_alive = request.keep_alive
        self._chunked = False
        self._send_body = True

    async def start(
        self, status: int, headers: Iterable[HeaderLike] = (), *, reason: str | None = None
    ) -> None:
        """Write the head. Framing comes from `headers` (see the module docstring)."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self._request.responded = True
        self.status = status
        request = self._request
        out = [(_b(name).lower(), _b(value)) for name, value in headers]
        names = {name for name, _ in out}
        chunked = any(name == b"transfer-encoding" and b"chunked" in value.lower() for name, value in out)
        no_body_status = status < 200 or status in (204, 304)
        self._send_body = not no_body_status and request.method != "HEAD"
        keep_alive = request.keep_alive and not any(
            name == b"connection" and b"close" in value.lower() for name, value in out
        )
        if chunked and request.version == "1.0":
            # HTTP/1.0 has no chunked coding: fall back to a close-delimited body.
            out = [(name, value) for name, value in out if name != b"transfer-encoding"]
            chunked = False
            keep_alive = False
        framed = chunked or b"content-length" in names
        if not framed and not no_body_status and request.method != "HEAD":
            keep_alive = False
        if request.expects_continue and not request.continue_sent and not request.body_complete:
            # The client may still be holding the body back for our 100: we cannot find the next request.
            keep_alive = False
        if not keep_alive and b"connection" not in names:
            out.append((b"connection", b"close"))
        elif keep_alive and request.version == "1.0" and b"connection" not in names:
            out.append((b"connection", b"keep-alive"))
        self.keep_alive = keep_alive
        self._chunked = chunked and self._send_body
        phrase = reason if reason is not None else _reason(status)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("latin-1"))]
        lines.extend(name + b": " + value + b"\r\n" for name, value in [*out, *self._extra])
        lines.append(b"\r\n")
        self._conn.write(b"".join(lines))
        await self._conn.drain()

    async def write(self, data: bytes) -> None:
        if not self.started:
            raise RuntimeError("write() before start()")
        if not data or not self._send_body:
            return
        if self._chunked:
            self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._conn.write(data)
        await self._conn.drain()

    async def end(self) -> None:
        if self.finished:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        self.finished = True
        if self._chunked:
            self._conn.write(b"0\r\n\r\n")
            await self._conn.drain()

    async def send(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[HeaderLike] = (),
        *,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """A whole response with content-length (and no body for 1xx/204/304 or HEAD)."""
        out: list[HeaderLike] = list(headers)
        if not (status < 200 or status in (204, 304)):
            if content_type:
                out.append(("content-type", content_type))
            out.append(("content-length", str(len(body))))
        await self.start(status, out)
        await self.write(body)
        await self.end()

    def abort(self) -> None:
        """Drop the connection with a TCP RST and no (further) response bytes."""
        self.closed = self.finished = True
        self._conn.abort()

    def close(self) -> None:
        """Flush what was written, then close the connection with a FIN."""
        self.closed = self.finished = True
        self._conn.close_transport()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _BadRequest:
    def __init__(self, message: str) -> None:
        self.message = message


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer, index: int) -> None:
        self.server = server
        self.index = index
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: deque[ServerRequest | _BadRequest] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._url = bytearray()
        self._head: list[Header] = []
        self._parsing: ServerRequest | None = None
        self._in_message = False  # some byte of a request not yet complete has been parsed
        self._stopped_parsing = False
        self._eof = False
        self._lost = False
        self._buffered = 0
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio protocol side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server._connection_opened(self)
        self._task = spawn(self._serve(), name=f"{self.server.name} connection {self.index}")

    def data_received(self, data: bytes) -> None:
        self.server.raw_received(self.index, data)
        if self._stopped_parsing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or Upgrade: this server speaks no tunnels. Answer the request as usual, then close.
            self._stopped_parsing = True
            if self._parsing is not None:
                self._parsing.keep_alive = False
                if not self._parsing.body_complete:
                    self._parsing._finish()
        except httptools.HttpParserError as exc:
            self._stopped_parsing = True
            if self._parsing is not None:
                self._parsing._fail(ConnectionError(f"malformed request: {exc}"))
            self._queue.append(_BadRequest(str(exc)))
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        if self._parsing is not None:
            self._parsing._fail(ConnectionResetError("peer closed in the middle of a request"))
        self._wake()
        # Stay open for writing: a half-closed client still gets the answers to what it sent.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._parsing is not None:
            self._parsing._fail(ConnectionResetError("connection lost in the middle of a request"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._wake()
        if self._task is not None:
            self._task.cancel()
        self.server._connection_closed(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # httptools callback side

    def on_message_begin(self) -> None:
        self._url.clear()
        self._head = []
        self._parsing = None
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:
            self._parsing.trailers.append((name, value))
        else:
            self._head.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = ServerRequest(
            self,
            method=parser.get_method().decode("latin-1"),
            target=self._url.decode("latin-1"),
            version=parser.get_http_version(),
            headers=self._head,
            keep_alive=parser.should_keep_alive(),
        )
        self._parsing = request
        self.server.request_received(request)
        self._queue.append(request)
        self._wake()

    def on_body(self, body: bytes) -> None:
        assert self._parsing is not None
        self._buffered += len(body)
        self._parsing._feed(body)
        if self._buffered > READ_HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing._finish()
        self._parsing = None
        self._in_message = False

    # used by requests and responses

    def consumed(self, size: int) -> None:
        self._buffered -= size
        if self._reading_paused and self._buffered <= READ_LOW_WATER:
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._writing_paused and not self._lost:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self._lost or self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("connection closed")

    def abort(self) -> None:
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into a RST even when no unread data is queued.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def shutdown(self) -> None:
        """Stop serving: cancel the handler and close (flushing what is already written)."""
        if self._task is not None:
            self._task.cancel()
        self.close_transport()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # the per-connection request loop

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _next(self) -> ServerRequest | _BadRequest | None:
        """The next request in arrival order, or None when the connection is done (EOF, lost, idle)."""
        idle_timeout = self.server.idle_timeout
        while not self._queue:
            if self._eof or self._lost:
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                if idle_timeout is None:
                    await self._wakeup
                    continue
                done, _ = await asyncio.wait([self._wakeup], timeout=idle_timeout)
            finally:
                self._wakeup = None
            if not done and not self._queue and not self._in_message:
                return None  # idle keep-alive connection: close it, as real servers do
        return self._queue.popleft()

    async def _serve(self) -> None:
        try:
            while True:
                item = await self._next()
                if item is None:
                    return
                if isinstance(item, _BadRequest):
                    await self._bad_request(item)
                    return
                if not await self._answer(item):
                    return
        except ConnectionError:
            pass  # the peer left; nothing to answer
        finally:
            self.close_transport()

    async def _answer(self, request: ServerRequest) -> bool:
        """Run the handler for one request; True if the connection may carry another."""
        response = ServerResponse(self, request, self.server.default_headers())
        try:
            await self.server.handle(request, response)
        except ConnectionError:
            return False
        except Exception:
            log.exception("handler failed", extra={"target": request.target})
            if response.started:
                self.abort()
            else:
                response.keep_alive = False
                await response.send(500, b"handler failed\n", [("connection", "close")])
            return False
        if response.closed:
            return False
        if not response.started:
            log.error("handler returned without a response", extra={"target": request.target})
            await response.send(500, b"no response\n", [("connection", "close")])
            return False
        await response.end()
        if not response.keep_alive:
            return False
        await request.discard()
        return True

    async def _bad_request(self, item: _BadRequest) -> None:
        body = f"bad request: {item.message}\n".encode()
        self.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
        )
        await self.drain()


class HttpServer:
    """Base class: override `handle`. `async with` starts and stops it; `close()` drops every connection."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        """`idle_timeout`: close a keep-alive connection after this many seconds without a request."""
        self.host = host
        self.port = port
        self.name = name or type(self).__name__
        self.idle_timeout = idle_timeout
        self.connections_accepted = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        """host:port as a proxy configuration would spell it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connections_open(self) -> int:
        return len(self._connections)

    def close_connections(self) -> None:
        """Close every open connection with a FIN, as an app does when its keep-alive timeout fires."""
        for conn in list(self._connections):
            conn.close_transport()

    async def start(self) -> Self:
        """Bind and listen. Starting again after close() reuses the same port."""
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, close every connection (abort those that cannot flush in time)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.shutdown()
        if connections:
            _, pending = await asyncio.wait([conn.lost for conn in connections], timeout=CLOSE_GRACE_SECONDS)
            if pending:
                for conn in connections:
                    if not conn.lost.done():
                        conn.abort()
        tasks = [conn.task for conn in connections if conn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE_SECONDS)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        """Answer one request. Subclasses override; the default says 404."""
        await request.discard()
        await response.send(404, b"not found\n")

    # hooks for subclasses

    def default_headers(self) -> list[Header]:
        """Headers added to every response."""
        return []

    def connection_opened(self, index: int) -> None:
        """A connection was accepted; `index` counts from 0 in accept order."""

    def raw_received(self, index: int, data: bytes) -> None:
        """Bytes arrived on connection `index`, before parsing."""

    def request_received(self, request: ServerRequest) -> None:
        """A request head was parsed (before its body and before its turn to be handled)."""

    # internals

    def _new_connection(self) -> _Connection:
        conn = _Connection(self, self.connections_accepted)
        self.connections_accepted += 1
        return conn

    def _connection_opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.connection_opened(conn.index)

    def _connection_closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
