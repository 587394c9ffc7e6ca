"""A scriptable HTTP/1.1 upstream on a real loopback socket, for the proxy's integration tests.

Theory of operation: `ScriptableUpstream` is an `HttpServer` (pillion.testing.server) that records
everything it receives and answers each request with a *behaviour*. A behaviour is spelled as a path, so
one vocabulary serves every way of choosing it:

    /status/NNN         that status, body "status NNN\\n" (none for 204/304)
    /delay/SECONDS      wait (float seconds), then the default answer
    /bytes/N            N bytes of pattern data with content-length, written 64 KiB at a time under flow
    /chunked/N          control; the same with transfer-encoding: chunked. See pattern_bytes().
    /echo               the request body streamed back (content-length if the request had one, else chunked)
    /headers            JSON {"method", "target", "version", "headers": [[name, value], ...]}
    /sha256             consumes any body in bounded memory; JSON {"length": N, "sha256": hex}
    /reset              no answer: the connection is dropped with a TCP RST as soon as the head is parsed
    /close-after-head   a head promising content-length 100, then 10 bytes, then FIN
    /close              the default answer with `connection: close`, then FIN
    /early              200 "early\n" as soon as the head is parsed; the body is read (and dropped) after
    /response-headers?k=v&...   200 "ok\\n" carrying the query's pairs as response headers
    /healthz            200 "ok\\n", or 503 while `up.healthy` is False
    anything else       the default answer: 200, "METHOD TARGET\\n", content-length

`ScriptableUpstream(idle_timeout=S)` closes keep-alive connections idle for S seconds, like a real
server, to exercise a proxy pool's stale-connection handling.

Every answer carries `x-upstream: NAME` (NAME defaults to the address), so a test behind a load
balancer can tell which endpoint served it. A request's behaviour is, in order of precedence:

    1. its `x-pillion-behaviour` header, e.g. `x-pillion-behaviour: /status/503` (sent through the proxy);
    2. the next entry of `up.script`, a deque of one-shot behaviours:
       `up.script.extend(["/reset", "/status/503"])`;
    3. `up.override`, a sticky behaviour for every request until set back to None;
    4. the request's own target.

`/healthz` requests skip 2 and 3, so a proxy's health checks never eat a script meant for real traffic.

Recording: `up.requests` gets a `RecordedRequest` as soon as a head is parsed; its body fields fill in as
the body arrives, whether or not the behaviour reads it. The body bytes are kept up to 1 MiB (`body` is None
beyond that); `body_length` and `body_sha256` are always exact. `up.raw[i]` is the first 1 MiB received on
connection i, `up.connections_accepted` counts connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pillion.testing.server import Header, HeaderLike, HttpServer, ServerRequest, ServerResponse, header_value

BEHAVIOUR_HEADER = "x-pillion-behaviour"
RECORDED_BODY_LIMIT = 1024 * 1024
RAW_LIMIT = 1024 * 1024
WRITE_CHUNK = 64 * 1024

# The pattern is byte i = i % 251: a prime period, so chunks that are lost, repeated or reordered at any
# power-of-two boundary change the digest.
_PERIOD = 251
_PATTERN = bytes(i % _PERIOD for i in range(WRITE_CHUNK + _PERIOD))


def pattern_chunks(length: int, chunk_size: int = WRITE_CHUNK) -> Iterator[bytes]:
    """The pattern body of `length` bytes, in pieces of at most min(chunk_size, 64 KiB)."""
    size = max(1, min(chunk_size, WRITE_CHUNK))
    offset = 0
    while offset < length:
        n = min(size, length - offset)
        phase = offset % _PERIOD
        yield _PATTERN[phase : phase + n]
        offset += n


def pattern_bytes(length: int) -> bytes:
    """What `/bytes/N` and `/chunked/N` send, in memory: for small N."""
    return b"".join(pattern_chunks(length))


def pattern_sha256(length: int) -> str:
    """The sha256 hex digest of `pattern_bytes(length)`, computed without holding it."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(length):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(eq=False)
class RecordedRequest:
    """What the upstream saw of one request. Body fields grow while the body is still arriving."""

    method: str
    target: str
    version: str
    headers: list[Header]
    connection: int  # index into ScriptableUpstream.raw
    behaviour: str = ""  # filled in when the request's turn comes
    received_at: float = field(default_factory=time.monotonic)
    trailers: list[Header] = field(default_factory=list)
    body_length: int = 0
    complete: bool = False  # the whole body arrived
    _body: bytearray | None = field(default_factory=bytearray, repr=False)
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def body(self) -> bytes | None:
        """The body, or None when it grew past 1 MiB (see body_length, body_sha256)."""
        return None if self._body is None else bytes(self._body)

    @property
    def body_sha256(self) -> str:
        return str(self._digest.copy().hexdigest())

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive, or None."""
        return header_value(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self.headers if key.lower() == wanted]

    # BodyListener
    def feed(self, chunk: bytes) -> None:
        self.body_length += len(chunk)
        self._digest.update(chunk)
        if self._body is not None:
            if self.body_length > RECORDED_BODY_LIMIT:
                self._body = None
            else:
                self._body += chunk

    def finish(self) -> None:
        self.complete = True


class ScriptableUpstream(HttpServer):
    """See the module docstring. `async with ScriptableUpstream() as up:`, then aim a proxy at up.address."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        super().__init__(host, port, name=name, idle_timeout=idle_timeout)
        self._label = name
        self.requests: list[RecordedRequest] = []
        self.script: deque[str] = deque()
        self.override: str | None = None
        self.healthy = True
        self._raw: list[bytearray] = []
        self._arrived = asyncio.Event()

    @property
    def raw(self) -> list[bytes]:
        """Bytes received per connection, in accept order, each capped at 1 MiB."""
        return [bytes(buf) for buf in self._raw]

    def clear(self) -> None:
        """Forget recorded requests and raw bytes (connection indexes keep counting)."""
        self.requests.clear()
        for buf in self._raw:
            buf.clear()

    async def wait_for_requests(self, count: int, time_limit: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least `count` request heads were recorded; TimeoutError otherwise."""
        async with asyncio.timeout(time_limit):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    # HttpServer hooks

    def default_headers(self) -> list[Header]:
        return [(b"x-upstream", (self._label or self.address).encode("latin-1"))]

    def connection_opened(self, index: int) -> None:
        while len(self._raw) <= index:
            self._raw.append(bytearray())

    def raw_received(self, index: int, data: bytes) -> None:
        buf = self._raw[index]
        room = RAW_LIMIT - len(buf)
        if room > 0:
            buf += data[:room]

    def request_received(self, request: ServerRequest) -> None:
        record = RecordedRequest(
            method=request.method,
            target=request.target,
            version=request.version,
            headers=request.headers,
            connection=request.connection_index,
            trailers=request.trailers,
        )
        request.listener = record
        self.requests.append(record)
        self._arrived.set()

    def _choose(self, request: ServerRequest) -> str:
        chosen = request.header(BEHAVIOUR_HEADER)
        if chosen:
            return chosen
        if request.path == "/healthz":
            return request.target
        if self.script:
            return self.script.popleft()
        if self.override is not None:
            return self.override
        return request.target

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        behaviour = self._choose(request)
        if isinstance(request.listener, RecordedRequest):
            request.listener.behaviour = behaviour
        path, _, query = behaviour.partition("?")
        parts = path.strip("/").split("/")
        try:
            match parts:
                case ["status", code]:
                    await self._status(request, response, int(code))
                case ["delay", seconds]:
                    delay = float(seconds)
                    await request.discard()
                    await asyncio.sleep(delay)
                    await self._default(request, response)
                case ["bytes", size]:
                    await self._bytes(request, response, int(size), chunked=False)
                case ["chunked", size]:
                    await self._bytes(request, response, int(size), chunked=True)
                case ["echo"]:
                    await self._echo(request, response)
                case ["headers"]:
                    await request.discard()
                    await _send_json(response, 200, _describe(request))
                case ["sha256"]:
                    await self._sha256(request, response)
                case ["reset"]:
                    response.abort()
                case ["close-after-head"]:
                    await request.discard()
                    await response.start(200, [("content-type", "text/plain"), ("content-length", "100")])
                    await response.write(b"x" * 10)
                    response.close()
                case ["close"]:
                    await self._default(request, response, [("connection", "close")])
                case ["early"]:
                    await response.send(200, b"early\n")
                    await request.discard()
                case ["response-headers"]:
                    await request.discard()
                    extra: list[HeaderLike] = list(parse_qsl(query, keep_blank_values=True))
                    await response.send(200, b"ok\n", extra)
                case ["healthz"]:
                    await request.discard()
                    if self.healthy:
                        await response.send(200, b"ok\n")
                    else:
                        await response.send(503, b"unhealthy\n")
                case _:
                    await self._default(request, response)
        except ValueError:
            if response.started:
                raise
            await request.discard()
            await response.send(400, f"bad behaviour {behaviour!r}\n".encode())

    async def _default(
        self, request: ServerRequest, response: ServerResponse, headers: list[HeaderLike] | None = None
    ) -> None:
        await request.discard()
        await response.send(200, f"{request.method} {request.target}\n".encode(), headers or [])

    async def _status(self, request: ServerRequest, response: ServerResponse, code: int) -> None:
        if not 200 <= code <= 599:
            raise ValueError(code)
        await request.discard()
        await response.send(code, f"status {code}\n".encode())

    async def _bytes(
        self, request: ServerRequest, response: ServerResponse, size: int, *, chunked: bool
    ) -> None:
        if size < 0:
            raise ValueError(size)
        await request.discard()
        framing = ("transfer-encoding", "chunked") if chunked else ("content-length", str(size))
        await response.start(200, [("content-type", "application/octet-stream"), framing])
        for chunk in pattern_chunks(size):
            await response.write(chunk)
        await response.end()

    async def _echo(self, request: ServerRequest, response: ServerResponse) -> None:
        length = request.header("content-length")
        framing = ("content-length", length) if length is not None else ("transfer-encoding", "chunked")
        content_type = request.header("content-type") or "application/octet-stream"
        await response.start(200, [("content-type", content_type), framing])
        async for chunk in request.stream():
            await response.write(chunk)
        await response.end()

    async def _sha256(self, request: ServerRequest, response: ServerResponse) -> None:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
        await _send_json(response, 200, {"length": length, "sha256": digest.hexdigest()})


def _describe(request: ServerRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "target": request.target,
        "version": request.version,
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in request.headers],
    }


async def _send_json(response: ServerResponse, status: int, payload: object) -> None:
    body = json.dumps(payload).encode() + b"\n"
    await response.send(status, body, content_type="application/json")
