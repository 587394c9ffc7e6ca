"""An in-memory proxy for the fuzz harnesses: the real parsing code, no sockets, and the checks.

Theory of operation. One uvloop loop runs for the whole fuzz session. `World` holds a real
`HttpListener` and `Cluster` built from `CONFIG` (a direct-response route, a redirect route, and a
route to cluster `app`) and, per input, drives one `DownstreamConnection` over a `MemoryTransport`
that records what the proxy writes. The cluster's endpoint never opens a socket: its idle pool is
kept stocked with `UpstreamConnection`s on memory transports, so every forwarded request is written
to memory, read back with h11 (strict), and answered by a `responder` in bytes fed to the upstream
connection's `data_received`, like a real app on the other end.

Transports behave as uvloop's do where the proxy can tell: `close`/`abort` call `connection_lost`
on the next loop pass, a paused transport delivers nothing, a write after `write_eof` raises.

After each input everything is closed and `World.check` asserts (raising `Finding`):
  - nothing logged at ERROR by pillion (the proxy turns its own exceptions into a logged 400), and no
    exception reached the loop;
  - the client's output is a sequence of well-formed HTTP/1.1 responses, one per exchange the access
    log recorded (same status), cut short only if the connection was aborted;
  - a local reply for a framing error (4xx/5xx with x-pillion-error) is the last response, its
    connection is closed or half-closed, and no byte went upstream after it;
  - the request heads the proxy read agree with h11's reading of the same bytes (a prefix of them:
    the proxy may reject more), every request it forwarded is one h11 read, with the same method,
    target and (when complete) body, and is canonical: one Host, at most one framing field, no
    hop-by-hop field, bytes h11 parses;
  - nothing leaked: no connection, request in flight or pooled connection left anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h11
import uvloop

from pillion.config import load_config_text
from pillion.proxy.cluster import Cluster
from pillion.proxy.downstream import DownstreamConnection
from pillion.proxy.listener import HttpListener
from pillion.proxy.stats import ProxyStats
from pillion.proxy.upstream import UpstreamConnection
from pillion.telemetry.access_log import LogScope
from pillion.telemetry.stats import Registry
from pillion.testing.reference import (
    MAX_HEAD,
    BadResponse,
    SplitResponse,
    h11_requests,
    origin_form_of,
    split_responses,
)

CONFIG = """
service: fuzz
listeners:
  - name: fuzz
    address: 127.0.0.1:0
    limits:
      max_request_headers_size: 8KiB
      max_request_headers: 32
      max_uri_size: 2KiB
      max_request_body_size: 16KiB
    routes:
      - name: direct
        match: {prefix: /direct}
        direct_response: {status: 200, body: "direct\\n"}
      - name: redirect
        match: {prefix: /redirect}
        redirect: {prefix: /moved}
      - name: app
        match: {prefix: /}
        cluster: app
        request_headers_add: [{name: x-fuzz, value: "1"}]
        request_headers_remove: [x-drop]
clusters:
  - name: app
    endpoints: ["127.0.0.1:9"]
"""

# Statuses of the local replies that refuse a request's framing; after one the connection must end.
FRAMING_STATUSES = frozenset({400, 411, 413, 414, 431, 501, 505})
FORBIDDEN_UPSTREAM = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
SETTLE_ROUNDS = 10_000  # a bound against a loop that never settles; an input is far shorter


class Finding(AssertionError):
    """The proxy did something the checks forbid; the message says what."""


@dataclass
class Logged:
    """What the access log recorded of one exchange, in the order they ended."""

    method: bytes
    target: bytes
    status: int
    error: str
    route: str
    request_id: bytes
    forwarded: Forwarded | None = None  # the request the app got for it, once matched


class RecordingAccessLog:
    """Stands in for AccessLog: the listener's log_access calls write() once per exchange."""

    def __init__(self) -> None:
        self.exchanges: list[Logged] = []

    @staticmethod
    def scope(listener: str, route: str, cluster: str) -> LogScope:
        return LogScope(listener, route, cluster)

    def write(self, **fields: Any) -> None:
        def raw(value: str | bytes) -> bytes:  # the log takes the parser's bytes or text
            return value if isinstance(value, bytes) else value.encode("latin-1")

        self.exchanges.append(
            Logged(
                raw(fields["method"]),
                raw(fields["path"]),
                fields["status"],
                fields["error"],
                fields["scope"].route,
                raw(fields["request_id"]),
            )
        )


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class MemoryTransport:
    """Enough of a transport for the proxy's connections, writing into `data`."""

    def __init__(self, world: World, protocol: Any) -> None:
        self.world = world
        self.protocol = protocol
        self.data = bytearray()
        self.marks: list[tuple[int, int]] = []  # (offset, world write number) of each write
        self.closing = False
        self.aborted = False
        self.eof = False
        self.paused = False

    def write(self, data: bytes) -> None:
        if self.eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.closing or not data:
            return  # as uvloop: dropped once closing
        self.world.writes += 1
        self.marks.append((len(self.data), self.world.writes))
        self.data += data

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.world.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write_number_at(self, offset: int) -> int:
        """The world write number of the write that put byte `offset` here."""
        number = 0
        for start, n in self.marks:
            if start > offset:
                break
            number = n
        return number


@dataclass
class Forwarded:
    """A request as the app saw it (read by h11 from what the proxy wrote upstream)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    write_number: int
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    answered: bool = False
    answer: Answer | None = None


class App:
    """The far end of one upstream connection: reads requests with h11, answers via the responder."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.conn = UpstreamConnection(world.endpoint)
        self.transport = MemoryTransport(world, self.conn)
        self.conn.connection_made(cast(asyncio.Transport, self.transport))
        world.cluster.connections += 1  # as open_or_wait would have counted it
        self.reader = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.read = 0  # bytes of transport.data given to the reader
        self.current: Forwarded | None = None
        self.broken = False  # answered out of turn or fed junk: stop reading requests

    def read_requests(self) -> None:
        data = self.transport.data
        if self.broken or self.read == len(data):
            return
        number = self.transport.write_number_at(self.read)
        self.reader.receive_data(bytes(data[self.read :]))
        self.read = len(data)
        while True:
            try:
                event = self.reader.next_event()
            except h11.RemoteProtocolError as exc:
                self.broken = True
                self.world.findings.append(
                    f"the proxy wrote bytes upstream that h11 rejects: {exc}: {bytes(data)!r}"
                )
                return
            if isinstance(event, h11.Request):
                self.current = Forwarded(event.method, event.target, list(event.headers.raw_items()), number)
                self.world.forwarded.append(self.current)
                problem = canonical_problem(self.current)
                if problem:
                    self.world.findings.append(problem)
            elif isinstance(event, h11.Data):
                assert self.current is not None
                self.current.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self.current is not None
                self.current.complete = True
            else:
                return

    async def answer(self, final: bool) -> bool:
        """Answer the current request if it is complete (or, when `final`, at all); True if it did."""
        req = self.current
        if req is None or req.answered or not (req.complete or final):
            return False
        req.answered = True
        if self.conn.down is None or self.transport.closing:
            return False  # the proxy gave up on it meanwhile
        answer = req.answer = self.world.responder(req)
        if req.complete:
            # The next request on this connection starts a fresh message: a fresh reader, given what
            # the old one had read past this request (nothing, unless the proxy pipelined).
            trailing, _ = self.reader.trailing_data
            self.reader = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            if trailing:  # (receive_data(b"") would mean EOF)
                self.reader.receive_data(trailing)
        else:
            self.broken = True  # answered early: the rest of this request is not worth reading
        self.current = None
        for piece in answer.pieces:
            if self.transport.closing:
                break
            await self.world.call(self.conn.data_received, piece)
        if answer.close and not self.transport.closing:
            await self.world.call(self.conn.eof_received)
            await self.world.call(self.transport.close)
        return True


def canonical_problem(req: Forwarded) -> str:
    """What makes a forwarded head other than canonical, or ''."""
    names = [name.lower() for name, _ in req.headers]
    if names.count(b"host") != 1:
        return f"forwarded with {names.count(b'host')} Host fields: {req.headers!r}"
    framing = names.count(b"content-length") + names.count(b"transfer-encoding")
    if framing > 1:
        return f"forwarded with {framing} framing fields: {req.headers!r}"
    for name, value in req.headers:
        low = name.lower()
        if low in FORBIDDEN_UPSTREAM:
            return f"forwarded hop-by-hop field {name!r}: {req.headers!r}"
        if low == b"transfer-encoding" and value.lower() != b"chunked":
            return f"forwarded transfer-encoding {value!r}"
    return ""


@dataclass
class Answer:
    """What the app answers a request with."""

    pieces: list[bytes]  # the bytes, one read each
    close: bool = False  # then the app closes the connection
    expect: tuple[int, bytes] | None = None  # the status and body the client must get, when known


Responder = Callable[[Forwarded], Answer]

# Four ways to frame a 200 "ok\n" (or a 204), picked by a style number.
STYLES = 4


def plain_answer(req: Forwarded, style: int = 0) -> Answer:
    """A well-formed answer in framing `style`: 0 content-length, 1 chunked, 2 close-delimited, 3 204."""
    body = b"" if req.method == b"HEAD" else b"ok\n"
    if style == 1:
        chunks = b"3\r\nok\n\r\n0\r\n\r\n" if body else b""
        return Answer([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks], expect=(200, body))
    if style == 2:
        return Answer([b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body], True, (200, body))
    if style == 3:
        return Answer([b"HTTP/1.1 204 No Content\r\n\r\n"], expect=(204, b""))
    return Answer([b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n" + body], expect=(200, body))


class World:
    """The proxy, its loop and the in-memory app. One per fuzz session; `run` once per input."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.errors = ErrorLog()
        pillion_log = logging.getLogger("pillion")
        pillion_log.addHandler(self.errors)
        pillion_log.setLevel(logging.ERROR)
        pillion_log.propagate = False
        config = load_config_text(CONFIG, env={})
        stats = ProxyStats.declare(Registry())
        self.cluster = Cluster(config.clusters[0], stats)
        self.endpoint = self.cluster.endpoints[0]
        self.access_log = RecordingAccessLog()
        self.listener = HttpListener(config.listeners[0], {"app": self.cluster}, stats, None)
        self.listener.access_log = cast(Any, self.access_log)
        self.loop.run_until_complete(self._start())
        self.responder: Responder = plain_answer
        self._reset()

    async def _start(self) -> None:
        from pillion.proxy.batch import WriteBatch
        from pillion.proxy.deadlines import Deadlines

        # What HttpListener.start() sets up, without binding a socket.
        self.listener.deadlines = Deadlines(self.loop, DownstreamConnection.timed_out)
        self.listener.try_deadlines = Deadlines(self.loop, DownstreamConnection.try_timed_out)
        self.listener.batch = WriteBatch(self.loop)

    def _reset(self) -> None:
        self.writes = 0
        self.findings: list[str] = []  # found while the input runs, raised after it is cleaned up
        self.apps: list[App] = []
        self.forwarded: list[Forwarded] = []
        self.access_log.exchanges.clear()
        self.errors.records.clear()
        self.loop_errors.clear()

    # -- driving --------------------------------------------------------------------------------

    def stock(self) -> None:
        """Keep two usable idle connections in the pool, so no request ever opens a socket."""
        usable = sum(1 for c in self.endpoint.idle if c.reusable())
        for _ in range(2 - usable):
            app = App(self)
            self.apps.append(app)
            self.endpoint.idle.insert(0, app.conn)  # under the ones the proxy gave back (LIFO)

    async def call(self, fn: Callable[..., object], *args: Any) -> None:
        """`fn(*args)` (as the loop calls a protocol), then the callbacks it scheduled. An exception is a
        finding (a real transport would log it and close), raised after the clean-up."""
        try:
            fn(*args)
        except Exception:
            self.findings.append(f"{getattr(fn, '__qualname__', fn)} raised:\n{traceback.format_exc()}")
        await self.drain()

    async def drain(self) -> None:
        """Let the loop run the callbacks that are ready: two passes, as the write batch runs on the
        first and what its writes schedule (connection_lost) on the next."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def pump(self, final: bool = False) -> None:
        """Let the apps read and answer until nothing moves. One answer per round: an answer can start
        the next pipelined request, which takes a pooled connection, so the pool is restocked between."""
        for _ in range(SETTLE_ROUNDS):
            before = self.writes
            await self.drain()
            self.stock()
            for app in self.apps:
                app.read_requests()
            answered = False
            for app in self.apps:
                if await app.answer(final):
                    answered = True
                    break
            if not answered and self.writes == before:
                return
        self.findings.append(f"no quiet after {SETTLE_ROUNDS} rounds")

    def run(self, pieces: list[bytes]) -> None:
        """One input: the client sends `pieces` (one read each), then goes away; then the checks."""
        self._reset()
        ended, stuck = self.loop.run_until_complete(self._exchange(pieces))
        self.check(b"".join(pieces), self.client, ended=ended, stuck=stuck)

    async def _exchange(self, pieces: list[bytes]) -> tuple[bool, bool]:
        """The client's side of `run`: whether the proxy ended the connection, and whether it stopped
        reading with input left and nothing in flight."""
        self.stock()
        down = DownstreamConnection(self.listener)
        client = MemoryTransport(self, down)
        self.client = client  # for a look after the fact
        await self.call(down.connection_made, client)
        undelivered = 0
        for i, piece in enumerate(pieces):
            if client.closing:
                break
            if client.paused:
                undelivered = sum(map(len, pieces[i:]))
                break
            await self.call(down.data_received, piece)
            await self.pump()
        await self.pump(final=True)
        # The apps close the connections still in use, ending close-delimited and unfinished answers.
        for app in self.apps:
            if app.conn.down is not None and not app.transport.closing:
                await self.call(app.conn.eof_received)
                await self.call(app.transport.close)
        await self.pump(final=True)
        stuck = client.paused and not client.closing and not client.eof and undelivered > 0
        ended = client.closing or client.eof  # by the proxy, closed or half-closed
        if not client.closing:
            await self.call(client.close)  # the client goes away
        await self.pump(final=True)
        await self.call(self.endpoint.close_idle)
        return ended, stuck

    # -- checking -------------------------------------------------------------------------------

    def check(self, sent: bytes, client: MemoryTransport, *, ended: bool, stuck: bool) -> None:
        leaks = self._leaks()  # first, so that whatever else is wrong the next input starts clean
        if self.findings:
            raise Finding(self.findings[0])
        if self.errors.records:
            record = self.errors.records[0]
            raise Finding(f"logged: {record.getMessage()}\n{record.exc_text or ''}")
        if self.loop_errors:
            context = self.loop_errors[0]
            raise Finding(f"loop error: {context.get('message')}: {context.get('exception')!r}")
        if stuck:
            raise Finding("reading paused with nothing in flight that could resume it")
        finals = self._check_responses(client, ended)
        self._check_requests(sent)
        self._check_answers(finals)
        if leaks:
            raise Finding(f"leaked after the connection closed: {leaks}")

    def _check_responses(self, client: MemoryTransport, ended: bool) -> list[SplitResponse]:
        exchanges = self.access_log.exchanges
        out = bytes(client.data)
        try:
            split = split_responses(out, [e.method for e in exchanges])
        except BadResponse as exc:
            raise Finding(f"client output: {exc}; output {out[:2000]!r}") from None
        if split.rest and not client.aborted:
            raise Finding(f"a response cut short ({split.rest} bytes) on a connection not aborted: {out!r}")
        finals = [r for r in split.responses if not r.interim]
        for i, response in enumerate(finals):
            if response.status != exchanges[i].status:
                raise Finding(f"response {i} is {response.status}, the access log says {exchanges[i]}")
            error = next((v for n, v in response.headers if n.lower() == b"x-pillion-error"), None)
            if error is None or response.status not in FRAMING_STATUSES:
                continue
            if response is not finals[-1] or split.rest:
                raise Finding(f"a response after the local reply {error!r}: {out!r}")
            if not ended:
                raise Finding(f"connection kept open after the local reply {error!r}")
            replied = client.write_number_at(response.start)
            late = [a for a in self.apps if a.transport.marks and a.transport.marks[-1][1] > replied]
            if late:
                raise Finding(
                    f"bytes went upstream after the local reply {error!r}: {late[0].transport.data!r}"
                )
        return finals

    def _check_answers(self, finals: list[SplitResponse]) -> None:
        """Each response the client got for a forwarded request is the app's answer to that request."""
        for response, ex in zip(finals, self.access_log.exchanges, strict=False):
            if ex.error or ex.forwarded is None:
                continue
            answer = ex.forwarded.answer
            if answer is None:
                raise Finding(
                    f"{ex.method!r} {ex.target!r} got {response.status} {response.body!r}, which the app "
                    "never sent for it (bytes from an earlier answer on that connection?)"
                )
            if answer.expect is None:
                continue
            if (response.status, response.body) != answer.expect:
                raise Finding(
                    f"{ex.method!r} {ex.target!r} got {response.status} {response.body!r}; the app "
                    f"answered it {answer.expect}"
                )

    def _check_requests(self, sent: bytes) -> None:
        reference = h11_requests(sent)
        refs = reference.requests
        exchanges = self.access_log.exchanges
        # Exchanges made from a parsed head (a refusal before the head is whole has no method).
        parsed = [e for e in exchanges if e.method]
        accepted = [e for e in parsed if not (e.error and e.status in FRAMING_STATUSES)]
        for i, ex in enumerate(accepted):
            if i >= len(refs) or (refs[i].method, origin_form_of(refs[i].target)) != (ex.method, ex.target):
                raise Finding(
                    f"the proxy read request {i} as {ex.method!r} {ex.target!r}; h11 read "
                    f"{[(r.method, r.target) for r in refs]} then {reference.error!r}"
                )
        # Each forwarded request is a parsed exchange of route `app`, in order, and h11's reading of it.
        forwarded = sorted(self.forwarded, key=lambda f: f.write_number)
        k = 0
        for req in forwarded:
            ids = {v for n, v in req.headers if n.lower() == b"x-request-id"}
            while k < len(parsed) and not (
                parsed[k].route == "app"
                and (parsed[k].method, parsed[k].target) == (req.method, req.target)
                and parsed[k].request_id in ids
            ):
                k += 1
            if k == len(parsed):
                raise Finding(f"forwarded {req.method!r} {req.target!r}, which no exchange was: {parsed}")
            ref = refs[k] if k < len(refs) else None
            if ref is None or (ref.method, origin_form_of(ref.target)) != (req.method, req.target):
                raise Finding(f"forwarded {req.method!r} {req.target!r} where h11 read {ref}")
            parsed[k].forwarded = req
            if req.complete and not (ref.complete and ref.body == req.body):
                raise Finding(
                    f"forwarded {req.method!r} {req.target!r} with body {bytes(req.body)!r}; h11 read "
                    f"{bytes(ref.body)!r} ({'complete' if ref.complete else 'incomplete'})"
                )
            k += 1

    def _leaks(self) -> dict[str, int]:
        listener, cluster, endpoint = self.listener, self.cluster, self.endpoint
        leaks = {
            "listener.connections": len(listener.connections),
            "cluster.requests": cluster.requests,
            "cluster.pending": cluster.pending,
            "cluster.connections": cluster.connections,
            "cluster.retries_active": cluster.retries_active,
            "endpoint.active": endpoint.active,
            "endpoint.idle": len(endpoint.idle),
        }
        leaked = {name: n for name, n in leaks.items() if n}
        if leaked:
            # Put things right so one leak does not fail every input after it.
            listener.connections.clear()
            cluster.requests = cluster.pending = cluster.connections = cluster.retries_active = 0
            endpoint.active = 0
            endpoint.idle.clear()
        return leaked


def split_at(data: bytes) -> tuple[int, list[bytes]]:
    """Input layout: a control byte (`control >> 2` is left to the harness), then `control & 3` split
    offsets of two bytes each, then the payload; returns the control byte and the payload in pieces."""
    if not data:
        return 0, [b""]
    control = data[0]
    count = control & 3
    offsets_end = 1 + 2 * count
    payload = data[offsets_end:]
    cuts = sorted(
        int.from_bytes(data[1 + 2 * i : 3 + 2 * i], "big") % (len(payload) + 1) for i in range(count)
    )
    pieces = []
    start = 0
    for cut in [*cuts, len(payload)]:
        if cut > start:
            pieces.append(payload[start:cut])
            start = cut
    return control, pieces or [b""]
