"""One GET to the app over a fresh plain HTTP/1.1 connection, for the sidecar's own needs: the ready check
(runtime/ready_check.py) and metrics merging (runtime/metrics_merge.py).

Theory of operation: not on the data path, so plain asyncio streams and a new connection per call, asked
to close (`connection: close`): nothing is pooled and nothing outlives the call. The answer is read with
httptools' parser, so content-length, chunked and close-delimited bodies all work. Everything --
connecting, writing, reading -- happens within `limit` seconds, and no more than `max_body` bytes of
body (plus `HEAD_LIMIT` of head) are held. A call that gets no complete answer raises `FetchError`,
whose `reason` (`connect`, `timeout`, `too_large`, `invalid`) is fit for a metric label and whose
message is fit for a person.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools

__all__ = ["HEAD_LIMIT", "AppResponse", "FetchError", "fetch"]

HEAD_LIMIT = 64 * 1024  # bytes of status line and headers; an app's head is a few hundred
READ_SIZE = 64 * 1024


class FetchError(Exception):
    """No complete answer. `reason` is `connect`, `timeout`, `too_large` or `invalid`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AppResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated field keeps its last value
    body: bytes  # empty when only the head was asked for


class _Answer:
    """httptools callbacks for one response. Callbacks only record: an exception raised inside one would
    reach the caller as a bare HttpParserCallbackError, so the limits are checked after each feed."""

    __slots__ = ("body", "complete", "head_done", "headers", "parser")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_done = False
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_message_complete(self) -> None:
        self.complete = True

    def ends_at_close(self) -> bool:
        """A body with neither length nor chunking runs until the server closes (RFC 9112 6.3)."""
        return "content-length" not in self.headers and "transfer-encoding" not in self.headers

    def response(self, with_body: bool) -> AppResponse:
        body = bytes(self.body) if with_body else b""
        return AppResponse(self.parser.get_status_code(), self.headers, body)


async def fetch(
    host: str,
    port: int,
    path: str,
    limit: float,
    *,
    max_body: int | None,
    headers: tuple[tuple[str, str], ...] = (),
) -> AppResponse:
    """GET `path` from `host:port`. A body over `max_body` bytes is a `too_large` FetchError; with
    `max_body=None` the answer is the head alone and the body is left unread. Raises FetchError only."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise FetchError("connect", f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
            writer.write(_request(host, port, path, headers))
            return await _read(reader, max_body)
    except TimeoutError:
        raise FetchError("timeout", f"no answer from {host}:{port} within {limit:g}s") from None
    except OSError as exc:  # reset or broken pipe once connected
        raise FetchError("invalid", f"connection to {host}:{port} failed: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            writer.transport.abort()  # the answer is read, or given up on: nothing left to flush


def _request(host: str, port: int, path: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"GET {path} HTTP/1.1", f"host: {authority}", "connection: close", "user-agent: pillion"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read(reader: asyncio.StreamReader, max_body: int | None) -> AppResponse:
    answer = _Answer()
    received = 0
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            if answer.head_done and (max_body is None or answer.ends_at_close()):
                return answer.response(with_body=max_body is not None)
            raise FetchError("invalid", "the app closed the connection before a complete answer")
        received += len(data)
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise FetchError("invalid", "the app answered with a protocol upgrade") from None
        except httptools.HttpParserError as exc:
            raise FetchError("invalid", f"malformed answer from app: {exc}") from None
        if not answer.head_done:
            if received > HEAD_LIMIT:
                raise FetchError("too_large", f"a response head over {HEAD_LIMIT} bytes")
        elif max_body is None:
            return answer.response(with_body=False)
        elif len(answer.body) > max_body:
            raise FetchError("too_large", f"a body over {max_body} bytes")
        elif answer.complete:
            return answer.response(with_body=True)
