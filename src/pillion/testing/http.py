"""Small HTTP/1.1 client helpers for tests against real sockets.

Theory of operation: `raw_exchange` is for byte-exact tests (pipelining, smuggling, malformed input): it
writes the bytes while reading concurrently, and returns whatever came back before the peer closed, reset,
or the deadline passed. `ClientConnection` (and `http_request`, one request on a fresh connection) frames
requests properly and parses responses with httptools' response parser: content-length, chunked and
close-delimited bodies, 1xx interim responses skipped (their codes kept in `informational`), HEAD answered
by its head alone. Sending and receiving overlap, so a large upload to a server that streams its answer
(or answers early) cannot deadlock. `parse_responses` turns raw bytes back into `Response` objects.

A connection that ends before a response starts raises `NoResponseError`; one that ends inside a
response raises `IncompleteResponseError` with the partial response attached. Both are ConnectionErrors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import httptools

from pillion.runtime.tasks import spawn

READ_SIZE = 256 * 1024

HeadersArg = Mapping[str, str] | Sequence[tuple[str, str]] | None
BodyArg = bytes | Iterable[bytes] | AsyncIterable[bytes]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    reason: str = ""
    version: str = "1.1"
    body_length: int = 0
    body_sha256: str = ""
    informational: list[int] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive, or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class NoResponseError(ConnectionError):
    """The connection ended (EOF or reset) before any response byte arrived."""


class IncompleteResponseError(ConnectionError):
    """The connection ended inside a response; `partial` holds what was parsed."""

    def __init__(self, message: str, partial: Response | None) -> None:
        super().__init__(message)
        self.partial = partial


class _ResponseParser:
    """Feeds bytes to httptools and yields finished responses in order."""

    def __init__(self, *, store_body: bool = True) -> None:
        self.store_body = store_body
        self._parser = httptools.HttpResponseParser(self)
        self.finished: list[Response] = []
        self._informational: list[int] = []
        self._reset_message()

    def _reset_message(self) -> None:
        self._reason = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._trailers: list[tuple[str, str]] = []
        self._headers_done = False
        self._in_message = False
        self._status = 0
        self._version = "1.1"
        self._body = bytearray()
        self._length = 0
        self._digest = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    @property
    def mid_response(self) -> bool:
        """Some byte of a response not yet finished was seen (a 1xx counts)."""
        return self._in_message or bool(self._informational)

    @property
    def headers_done(self) -> bool:
        return self._headers_done

    def framed(self) -> bool:
        names = {name.lower() for name, _ in self._headers}
        return "content-length" in names or "transfer-encoding" in names

    def partial(self) -> Response | None:
        return self._build() if self._headers_done else None

    def finish_at_eof(self) -> Response:
        """The peer closed: a close-delimited body ends here; anything else is truncated."""
        if self._headers_done and not self.framed():
            response = self._build()
            self._reset_message()
            return response
        raise IncompleteResponseError("connection closed inside a response", self.partial())

    def head_only(self) -> Response:
        """For HEAD: the response is complete at the end of its head whatever its framing headers say."""
        response = self._build()
        self._reset_message()
        return response

    def _build(self) -> Response:
        return Response(
            status=self._status,
            headers=list(self._headers),
            body=bytes(self._body),
            reason=self._reason.decode("latin-1"),
            version=self._version,
            body_length=self._length,
            body_sha256=self._digest.hexdigest(),
            informational=list(self._informational),
            trailers=list(self._trailers),
        )

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("latin-1"), value.decode("latin-1"))
        (self._trailers if self._headers_done else self._headers).append(pair)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        self._version = self._parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self._length += len(body)
        self._digest.update(body)
        if self.store_body:
            self._body += body

    def on_message_complete(self) -> None:
        if self._status < 200:
            self._informational.append(self._status)
            self._reset_message()
            return
        self.finished.append(self._build())
        self._informational = []
        self._reset_message()


def parse_responses(data: bytes) -> list[Response]:
    """Every complete response in `data` (e.g. from raw_exchange), plus a trailing close-delimited one."""
    parser = _ResponseParser()
    parser.feed(data)
    responses = parser.finished
    if parser.mid_response:
        with contextlib.suppress(IncompleteResponseError):
            responses.append(parser.finish_at_eof())
    return responses


@dataclass
class RawExchange:
    data: bytes
    ending: Literal["eof", "reset", "timeout", "response"]


async def raw_exchange_detailed(
    host: str,
    port: int,
    data: bytes,
    *,
    read_timeout: float = 5.0,
    shutdown_write: bool = False,
    first_response: bool = False,
) -> RawExchange:
    """Like raw_exchange, and also says how the exchange ended. `shutdown_write` half-closes after sending;
    `first_response` stops reading at the end of the first complete response (ending "response"), for
    an answer on a connection that stays open."""
    reader, writer = await asyncio.open_connection(host, port)
    received = bytearray()
    ending: Literal["eof", "reset", "timeout", "response"] = "timeout"
    parser = _ResponseParser() if first_response else None

    async def send() -> None:
        writer.write(data)
        await writer.drain()
        if shutdown_write and writer.can_write_eof():
            writer.write_eof()

    sender = spawn(send(), name="raw_exchange send")
    try:
        async with asyncio.timeout(read_timeout):
            while chunk := await reader.read(READ_SIZE):
                received += chunk
                if parser is not None:
                    parser.feed(chunk)
                    if parser.finished:
                        break
            ending = "response" if parser is not None and parser.finished else "eof"
    except TimeoutError:
        ending = "timeout"
    except ConnectionError:
        ending = "reset"
    finally:
        await _settle(sender)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return RawExchange(bytes(received), ending)


async def raw_exchange(
    host: str, port: int, data: bytes, *, read_timeout: float = 5.0, shutdown_write: bool = False
) -> bytes:
    """Send `data` on a fresh connection; return everything read until the peer closes or `read_timeout`."""
    return (
        await raw_exchange_detailed(
            host, port, data, read_timeout=read_timeout, shutdown_write=shutdown_write
        )
    ).data


async def _settle(task: asyncio.Task[None]) -> None:
    """Stop a sender that may be blocked or failed; its errors matter less than what was read."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
        await task


class ClientConnection:
    """One keep-alive HTTP/1.1 connection; requests go one at a time. `async with` closes it.

    After a response that ended the connection, or one that arrived before the request was fully sent,
    `reusable` is False and further requests raise ConnectionError."""

    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.port = port
        self.reusable = True
        self._reader = reader
        self._writer = writer
        self._parser = _ResponseParser()
        # Bytes read but not given to the parser: only around HEAD, whose head is cut out by hand.
        self._buffer = bytearray()
        self._sent_all = False

    @classmethod
    async def open(cls, host: str, port: int, *, time_limit: float = 10.0) -> ClientConnection:
        async with asyncio.timeout(time_limit):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self.reusable = False
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersArg = None,
        body: BodyArg = b"",
        time_limit: float = 10.0,
        store_body: bool = True,
    ) -> Response:
        """Send one request and read its response. A non-bytes body goes out chunked (unless the caller set
        content-length). With store_body=False only body_length and body_sha256 are kept."""
        if not self.reusable:
            raise ConnectionError("this connection can carry no more requests")
        head, chunked = _request_head(method, path, headers, body, f"{self.host}:{self.port}")
        self._sent_all = False
        sender = spawn(self._send(head, body, chunked), name=f"http client send {method} {path}")
        try:
            async with asyncio.timeout(time_limit):
                return await self._read_response(method, store_body)
        except BaseException:
            self.reusable = False
            raise
        finally:
            # A sender still waiting for its last drain has handed every byte to the transport: fine. One
            # that has not was answered early (a 413, a reset), and the connection is spoilt.
            await _settle(sender)
            if not self._sent_all:
                self.reusable = False

    async def _send(self, head: bytes, body: BodyArg, chunked: bool) -> None:
        writer = self._writer
        if isinstance(body, bytes):
            # One write for head and body, so the request arrives in one piece as most clients send it.
            if chunked:
                body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
            writer.write(head + body)
        else:
            writer.write(head)
            async for chunk in _aiter(body):
                if chunk:
                    writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        self._sent_all = True
        await writer.drain()

    async def _read_response(self, method: str, store_body: bool) -> Response:
        if method.upper() == "HEAD":
            return await self._read_head_response()
        parser = self._parser
        parser.store_body = store_body
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            parser.feed(data)
        while not parser.finished:
            try:
                data = await self._reader.read(READ_SIZE)
            except ConnectionError as exc:
                self.reusable = False
                if not parser.mid_response:
                    raise NoResponseError(f"connection reset before a response: {exc}") from exc
                raise IncompleteResponseError(
                    f"connection reset inside a response: {exc}", parser.partial()
                ) from exc
            if not data:
                self.reusable = False
                if not parser.mid_response:
                    raise NoResponseError("connection closed before a response")
                return parser.finish_at_eof()
            parser.feed(data)
        response = parser.finished.pop(0)
        if (response.header("connection") or "").lower() == "close":
            self.reusable = False
        return response

    async def _read_head_response(self) -> Response:
        # httptools cannot be told that no body follows a HEAD response, so cut the head out by hand and
        # parse it alone with a throwaway parser (which also skips 1xx heads).
        parser = _ResponseParser()
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self._buffer = bytes(self._buffer[: end + 4]), self._buffer[end + 4 :]
                parser.feed(head)
                if parser.headers_done:
                    return parser.head_only()
                continue
            try:
                data = await self._reader.read(READ_SIZE)
            except ConnectionError as exc:
                data = b""
                cause: BaseException | None = exc
            else:
                cause = None
            if not data:
                self.reusable = False
                if not self._buffer and not parser.mid_response:
                    raise NoResponseError("connection closed before a response") from cause
                raise IncompleteResponseError("connection closed inside a response head", None) from cause
            self._buffer += data


async def _aiter(body: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(body, AsyncIterable):
        async for chunk in body:
            yield chunk
    else:
        for chunk in body:
            yield chunk


def _request_head(
    method: str, path: str, headers: HeadersArg, body: BodyArg, authority: str
) -> tuple[bytes, bool]:
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    names = {name.lower() for name, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("host", authority))
    chunked = any(name.lower() == "transfer-encoding" and "chunked" in value.lower() for name, value in pairs)
    if isinstance(body, bytes):
        if (
            not chunked
            and "content-length" not in names
            and (body or method.upper() in ("POST", "PUT", "PATCH"))
        ):
            pairs.append(("content-length", str(len(body))))
    elif not chunked and "content-length" not in names:
        pairs.append(("transfer-encoding", "chunked"))
        chunked = True
    lines = [f"{method} {path} HTTP/1.1\r\n", *(f"{name}: {value}\r\n" for name, value in pairs), "\r\n"]
    return "".join(lines).encode("latin-1"), chunked


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: HeadersArg = None,
    body: BodyArg = b"",
    time_limit: float = 10.0,
    store_body: bool = True,
) -> Response:
    """One request on a fresh connection, closed afterwards. See ClientConnection.request."""
    async with await ClientConnection.open(host, port, time_limit=time_limit) as conn:
        return await conn.request(
            method, path, headers=headers, body=body, time_limit=time_limit, store_body=store_body
        )
