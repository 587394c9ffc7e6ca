"""A minimal HTTP/1.1 POST client over one kept-alive connection, for exporters (OTLP).

Theory of operation: an `HttpPoster` is bound to one URL and sends one request at a time (its only
caller is a background task that awaits each answer before the next). It keeps the connection open
between posts, so a steady exporter costs one TCP (and TLS) handshake, not one per batch. A response
is read with httptools' parser, so content-length, chunked and close-delimited bodies all work; the
connection is reused only when the parser says the response allows it.

Everything `post` does -- connecting, writing, reading the answer -- happens within `timeout`; a failure
raises `PostError` with a short `reason` fit for a metric label (`connect`, `timeout`, `connection`)
and leaves no connection behind. A kept-alive connection the server has meanwhile closed fails at the
first read with no byte of response: that post is retried once on a fresh connection, as browsers and
HTTP libraries do, because the server never saw it.

`https` URLs are supported: the connection is wrapped with `ssl.create_default_context()` (the system's
trust store, hostname checked) unless the caller passes its own context. No proxies, no redirects, no
authentication beyond what headers the caller adds.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpPoster", "PostError"]

# A response bigger than this is not an exporter's answer: give up rather than buffer it.
MAX_RESPONSE_BYTES = 1024 * 1024
READ_SIZE = 64 * 1024


class PostError(Exception):
    """A post that got no complete answer. `reason` is `connect`, `timeout` or `connection`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: safe to send again on a new one."""


class _Answer:
    """httptools callbacks for one response."""

    __slots__ = ("body", "complete", "head_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.body = bytearray()
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.head_done = True
        # Read now: once the message is complete the parser resets and always says False.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_message_complete(self) -> None:
        self.complete = True


class HttpPoster:
    """`await poster.post(body)` -> (status, body). See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        content_type: str,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]  # never send userinfo
        lines = [
            f"POST {target} HTTP/1.1",
            f"host: {authority}",
            f"content-type: {content_type}",
            "user-agent: pillion",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send `body`; the answer's status and body. Raises PostError (and only that)."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is not None:
                    try:
                        return await self._exchange(body)
                    except _Stale:
                        self.close()
                await self._connect()
                try:
                    return await self._exchange(body)
                except _Stale as exc:
                    raise PostError("connection", "closed before answering") from exc
        except TimeoutError:
            self.close()
            raise PostError("timeout", f"no answer within {self.timeout}s") from None
        except PostError:
            self.close()
            raise
        except (OSError, httptools.HttpParserError) as exc:
            self.close()
            raise PostError("connection", repr(exc)) from exc
        except BaseException:
            self.close()  # cancelled: the connection is mid-exchange and cannot be reused
            raise

    def close(self) -> None:
        """Drop the kept-alive connection, if any (the next post opens a new one)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
            )
        except OSError as exc:
            raise PostError("connect", f"{self.host}:{self.port}: {exc!r}") from exc

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        answer = _Answer()
        parser = answer.parser
        received = 0
        try:
            writer.write(self._head + b"%d\r\n\r\n" % len(body) + body)
            await writer.drain()
            while not answer.complete:
                data = await reader.read(READ_SIZE)
                if not data:
                    if received == 0:
                        raise _Stale()
                    if answer.head_done:  # a close-delimited body ends here
                        self.close()
                        return parser.get_status_code(), bytes(answer.body)
                    raise PostError("connection", "closed in the middle of the response head")
                received += len(data)
                if received > MAX_RESPONSE_BYTES:
                    raise PostError("connection", f"response over {MAX_RESPONSE_BYTES} bytes")
                parser.feed_data(data)
        except ConnectionError:
            if received == 0:
                raise _Stale() from None
            raise
        if not answer.keep_alive:
            self.close()
        return parser.get_status_code(), bytes(answer.body)
