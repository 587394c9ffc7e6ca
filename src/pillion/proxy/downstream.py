"""One client connection: parse requests, route them, stream them upstream, frame the responses.

Theory of operation. httptools parses the byte stream and calls back per message part. At the end of a
request head the request becomes an `Exchange`, whose upstream head is built right away (hop-by-hop
fields dropped, forwarding fields added). Exchanges are answered strictly in order: the first one is
`current`; requests pipelined behind it wait in `queue` with their bodies buffered, and reading pauses
so that buffer stays one socket read deep. When `current` finishes, the next one starts.

Bodies stream without buffering. Backpressure runs both ways through pause flags: an upstream whose
send buffer is full pauses reading from the client; a client whose send buffer is full pauses reading
from the upstream. Each reason to pause reading is one bit in `paused`, so reasons never cancel each
other out.

Every exchange ends in `_finish`, which counts it, logs it, and either starts the next exchange or
closes the connection. Errors become local replies (`x-pillion-error: <reason>`) while no response byte
has been sent, and a dropped connection after that.

Clock reads are few, and static calls: times are `perf_counter()` seconds, which on Linux is the same
CLOCK_MONOTONIC as the event loop's `time()`, so they compare with it (sweeps, `call_at`). A read's time
(`last_active`, set in `data_received`) is also the time of everything its parser callbacks do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NoReturn, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from pillion.http.headers import (
    CONNECTION,
    CONTENT_LENGTH,
    HOP_BY_HOP,
    HOST,
    RESPONSE_LENGTHS,
    SPECIAL,
    SPECIAL_LENGTHS,
    TRACE_HEADERS,
    X_FORWARDED_CLIENT_CERT,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_REQUEST_ID,
    field_line,
    line_name,
    lower_name,
    named_fields,
)
from pillion.http.local_reply import build_reply, local_reply, status_of
from pillion.http.request_id import request_id as new_request_id
from pillion.http.strict import host_is_valid, origin_form, parser_error_reason, transfer_coding_problem
from pillion.proxy.batch import gathers

log: Final = logging.getLogger("pillion.downstream")
# Module-level names are Final so that compiled code reads them from C statics, not the module dict.
perf_counter: Final = time.perf_counter

if TYPE_CHECKING:
    from pillion.proxy.cluster import Cluster, Endpoint
    from pillion.proxy.listener import HttpListener
    from pillion.proxy.router import RouteEntry
    from pillion.proxy.upstream import UpstreamConnection
    from pillion.telemetry.trace_context import TraceContext

LINGER_SECONDS: Final = 2.0  # how long a half-closed connection discards what the client still sends

# Reasons to stop reading from the client, one bit each.
_PIPELINED: Final = 1  # a request is queued behind the current one
_UPSTREAM_FULL: Final = 2  # the upstream's send buffer is full
_HOLDING: Final = 4  # the current request has no upstream yet and holds HOLD_LIMIT bytes of its body

# Body bytes the current request may hold while it has no upstream connection (connecting, waiting at
# max_connections, a retry's backoff, an injected delay) before reading from the client pauses. Reading
# goes on below it, so a client that gives up meanwhile is noticed at once.
HOLD_LIMIT: Final = 64 * 1024

_CRLF: Final = b"\r\n"
_STATUS_LINES: Final[dict[int, bytes]] = {}


def _status_line(status: int, phrase: bytes) -> bytes:
    """`HTTP/1.1 200 OK\\r\\n`, cached per status (the upstream's own phrase the first time seen)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %b\r\n" % (status, phrase)
        if len(_STATUS_LINES) < 64:
            _STATUS_LINES[status] = line
    return line


_LAST_CHUNK: Final = b"0\r\n\r\n"
# A response held as its head and one body piece shorter than this is joined and sent with one write(2):
# the copy costs less than a writev(2) of two pieces.
_JOIN_BELOW: Final = 4096
# Bytes sought in bytes by their int value: `b"#" in data` first tries its operand as an int, building
# and dropping a TypeError, which costs ~7x the search itself.
_HASH: Final = ord("#")
# The end of the x-forwarded-for line and the x-forwarded-proto line, per client protocol.
_PROTO_HTTP: Final = b"\r\nx-forwarded-proto: http\r\n"
_PROTO_HTTPS: Final = b"\r\nx-forwarded-proto: https\r\n"

# A parser with no connection behind it (no callbacks): what a closed connection's parser fields point
# at once it has let go of its own (see DownstreamConnection._unhook).
_DETACHED: Final = HttpRequestParser(None)


class _Rejected(Exception):
    """Raised from a parser callback to refuse the request with a local reply for `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _request_line(method: bytes, target: bytes) -> bytes:
    return b"%b %b HTTP/1.1\r\n" % (method, target)


def _drop_named(parts: list[bytes], start: int, named: set[bytes]) -> list[bytes]:
    """Remove the fields a Connection header named from a head being built as field lines after `start`
    leading lines. Rare, so done as a second pass instead of in the copy loop."""
    return parts[:start] + [line for line in parts[start:] if line_name(line) not in named]


class Exchange:
    """One request and its response, as far as they have got."""

    __slots__ = (
        "body_chunked",
        "body_in",
        "body_limit",
        "body_out",
        "cancel_wait",
        "cluster",
        "endpoint",
        "error",
        "fields_end",
        "flags",
        "head",
        "headers",
        "host",
        "http10",
        "in_retry",
        "is_head",
        "keep_alive",
        "length",
        "local",
        "method",
        "own_request_id",
        "pending",
        "pending_size",
        "replay",
        "replay_size",
        "replayable",
        "request_done",
        "request_id",
        "retried",
        "route",
        "sent",
        "sent_at",
        "start",
        "status",
        "target",
        "trace",
        "trace_lines",
        "trace_start",
        "tries",
        "upstream",
        "upstream_address",
        "upstream_duration",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.method = b""
        self.target = b""
        self.host = b""
        self.request_id = b""
        self.own_request_id = False  # made here (hex and dashes), not the client's
        self.head: list[bytes] = []
        self.pending: list[bytes] = []  # body bytes held until the request has an upstream
        self.pending_size = 0
        self.keep_alive = True
        self.is_head = False
        self.http10 = False
        self.body_chunked = False
        self.body_in = 0
        self.body_out = 0
        self.body_limit = 0  # most body bytes accepted (the listener's, then the route's); 0: no limit
        self.length = -1  # the Content-Length received, -1 when none
        self.request_done = False
        self.replayable = True
        self.retried = False
        self.status = 0
        self.error = ""
        self.local: str | None = None  # a local-reply reason decided while parsing
        self.route: RouteEntry | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_address = ""
        self.headers: list[tuple[bytes, bytes]] = []  # as received, for matching and hashing
        self.fields_end = 0  # end of the copied fields in `head`; Pillion's own fields follow
        self.cluster: Cluster | None = None  # counted in this cluster's requests in flight
        self.cancel_wait: Callable[[], None] | None = None  # while waiting for a connection
        self.endpoint: Endpoint | None = None  # serving the current try
        self.sent = False  # the current try's head was written upstream
        self.tries = 0  # retries made
        self.in_retry = False  # counted in the cluster's retries in flight
        self.replay: list[bytes] | None = None  # body bytes kept for a retry (retry routes only)
        self.replay_size = 0
        self.flags = ""  # access-log response flags decided along the way (URX)
        self.sent_at = 0.0  # when the current try's head went upstream
        # This hop's trace context, when tracing is on and the request brought a trace or is sampled
        # (a new root the sampler leaves out has only its line: see tracer.py `begin`).
        self.trace: TraceContext | None = None
        self.trace_lines = b""  # the trace header lines forwarded, when tracing is on
        self.trace_start = 0  # the span's start (ns), when sampled
        self.upstream_duration = -1.0  # the answering try: head sent to response head; -1 for none


class DownstreamConnection:
    """One client connection; an asyncio protocol by shape (no base class, so mypyc can compile it to a
    native class with fixed attribute slots)."""

    __slots__ = (
        "_feed",
        "_get_method",
        "_is_closing",
        "_keep_alive",
        "_upgrade",
        "_write",
        "_writelines",
        "admitted",
        "client_ip",
        "close_delimited",
        "closed",
        "current",
        "forwarded",
        "forwarded_line",
        "gathered",
        "head_size",
        "headers",
        "last_active",
        "lingering",
        "listener",
        "loop",
        "must_close",
        "out",
        "parser",
        "paused",
        "peer_id",
        "queue",
        "queued",
        "reading",
        "request_started",
        "response_chunked",
        "response_started",
        "started_at",
        "starting",
        "timer",
        "transport",
        "try_timer",
        "url",
        "write_paused",
        "xfcc",
    )

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.parser = parser = HttpRequestParser(self)
        # Bound methods of the parser and (in connection_made) the transport, called for every request:
        # compiled code calls a stored callable directly, but looks a method up by name at each call.
        self._feed: Callable[[bytes], None] = parser.feed_data
        self._get_method: Callable[[], bytes] = parser.get_method
        self._keep_alive: Callable[[], bool] = parser.should_keep_alive
        self._upgrade: Callable[[], bool] = parser.should_upgrade
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.admitted = False
        self.current: Exchange | None = None
        self.reading: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.must_close = False
        self.response_started = False
        self.response_chunked = False
        self.close_delimited = False
        self.out: list[bytes] | None = None  # bytes for the client, sent at the end of the loop pass
        self.queued = False  # registered with the listener's WriteBatch for this pass
        self.gathered = False  # the transport gathers writes itself (batch.gathers): never held here
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.head_size = 0
        self.started_at = 0.0  # loop time a request head began; 0 when none is being read
        self.request_started = 0.0  # loop time the request being read began; 0 when none is
        # A request whose head was parsed in the current read: it starts (goes upstream) only once the
        # whole read parsed cleanly, so a request broken within one read sends the upstream nothing.
        self.starting: Exchange | None = None
        self.last_active = perf_counter()
        self.timer: set[DownstreamConnection] | None = None  # the current request's route-timeout bucket
        self.try_timer: set[DownstreamConnection] | None = None  # the current try's per-try timeout
        self.lingering = False  # answered and half-closed; reading only to discard (see _linger)
        self.xfcc: bytes | None = None  # x-forwarded-client-cert for the app: the mTLS caller, if any
        self.peer_id: str | None = None  # the mTLS caller's SPIFFE ID, for authorization
        # The fields this listener adds to each request on this connection, formatted once (in
        # connection_made): `forwarded` goes after a client's own x-forwarded-for value; without one,
        # `forwarded_line` is sent.
        self.forwarded = self.forwarded_line = b""

    # -- connection lifecycle ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._write: Callable[[bytes], None] = t.write
        self._writelines: Callable[[list[bytes]], None] = t.writelines
        self._is_closing: Callable[[], bool] = t.is_closing
        self.gathered = gathers(t)
        # The head timer runs from accept, like nginx's client_header_timeout: a client that connects and
        # sends nothing is closed after request_headers_timeout, not idle_timeout.
        self.started_at = self.request_started = self.last_active
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if peer else b""
        self.admitted = self.listener.connection_opened(self)
        if not self.admitted:  # over the listener's max_connections: closed unread, counted there
            self.closed = True
            self.transport.close()
            return
        fields = _PROTO_HTTP  # (after x-forwarded-for's value; https once the connection is TLS)
        tls = self.listener.tls
        if tls is not None:
            from pillion.tls.termination import PeerRefused

            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None:  # (a permissive listener serves plaintext clients too)
                fields = _PROTO_HTTPS
            try:
                peer = tls.peer(sslobj)
            except PeerRefused as exc:
                # Not a caller this mesh knows: no HTTP answer, the connection just ends (counted).
                log.info("client refused", extra={"listener": self.listener.name, "reason": exc.reason})
                self.listener.tls_failures.value += 1
                self.transport.abort()
                return
            if peer is not None:
                self.peer_id, self.xfcc = peer
                fields += b"x-forwarded-client-cert: %b\r\n" % self.xfcc
        self.forwarded = self.client_ip + fields
        self.forwarded_line = b"x-forwarded-for: " + self.forwarded

    def connection_lost(self, exc: Exception | None) -> None:
        self._unhook()
        if not self.admitted:
            return
        self.closed = True
        ex = self.current
        if ex is not None:
            upstream = ex.upstream
            if upstream is not None:
                ex.upstream = None
                upstream.abort()
            if ex.status == 0 or not self.response_started:
                ex.status = 499  # nginx's code for "client closed the request"
            ex.error = ex.error or "client_disconnected"
            self._record(ex, perf_counter())
        self.current = None
        self.queue.clear()
        self.listener.connection_closed(self)

    def _unhook(self) -> None:
        """Let go of the parser. It holds this connection's methods as its callbacks, and the connection
        holds it and its methods: a reference cycle, which only Python's cyclic collector frees. Each
        closed connection left 18 objects (and the transport and buffers hanging off them) for it, so
        connection churn (clients without keep-alive, a slowloris wave) made its passes frequent, and
        the full ones then stopped the loop for tens of milliseconds. Without the cycle, reference
        counting frees the connection as soon as the transport drops it."""
        self.parser = parser = _DETACHED
        self._feed = parser.feed_data
        self._get_method = parser.get_method
        self._keep_alive = parser.should_keep_alive
        self._upgrade = parser.should_upgrade

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close (what asyncio.Protocol does by default)

    def idle(self) -> bool:
        return self.current is None and self.reading is None and self.started_at == 0.0

    def close_if_idle(self) -> None:
        """Draining: close now if nothing is in flight, else after the current response."""
        self.must_close = True
        if self.idle():
            self.close()

    def close(self) -> None:
        """Close once what is held for the client has been written."""
        self.send_pending()
        if self.transport is not None:
            self.transport.close()

    def _linger(self) -> None:
        """Close after answering a request that was not read to its end (413, a framing error).

        Closing at once would make the kernel answer the client's next bytes with a reset, which can
        destroy the reply before the client reads it. So, like nginx's lingering close, send the reply
        and a FIN, then read and discard until the client closes or `LINGER_SECONDS` pass (the
        listener's sweep ends it then)."""
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            self.close()
            return
        self.send_pending()
        self.lingering = True
        self.last_active = self.loop.time()
        transport.write_eof()
        transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.set_reading(True)

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def upstream_full(self, full: bool) -> None:
        if full:
            self._pause(_UPSTREAM_FULL)
        else:
            self._resume(_UPSTREAM_FULL)

    # -- request parsing: httptools callbacks ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a request already answered: discarded
        now = self.last_active = perf_counter()
        if not self.started_at and self.reading is None:
            # Bytes with no request in progress start the head timer, whatever they are: empty lines
            # and a lone first byte of a method must not hold a connection past the timeout either.
            self.started_at = self.request_started = now
        try:
            self._feed(data)
        except HttpParserUpgrade:
            self._reject("upgrade_not_supported")
        except HttpParserError as exc:
            # httptools wraps what a callback raised (HttpParserCallbackError); the cause is the context.
            cause = exc.__context__
            self._reject(cause.reason if isinstance(cause, _Rejected) else parser_error_reason(exc))
        except Exception:
            # A bug of ours must cost one connection, never the process.
            log.exception("request handling failed", extra={"listener": self.listener.name})
            self._reject("malformed_request")
        ex = self.starting
        if ex is not None:
            self.starting = None
            self._start(ex)

    def _reject(self, reason: str) -> None:
        """The byte stream cannot be trusted past this point: answer in turn, then close."""
        self._pause(_PIPELINED)  # and never resume: nothing after a framing error is read
        ex = self.reading
        self.reading = None
        self.started_at = self.request_started = 0.0
        if ex is not None and ex is self.starting:
            self.starting = None  # broke within the read that brought its head: it never starts
        if ex is not None and ex is self.current:
            # The body of the request being answered broke off mid-stream.
            if self.response_started:
                self._abort_current(reason)
                return
            upstream = ex.upstream
            if upstream is not None:
                ex.upstream = None
                upstream.abort()
            ex.keep_alive = False
            self._reply_locally(ex, reason)
            return
        if ex is not None:
            self.queue.remove(ex)  # a pipelined request whose body broke: it is replaced by the error
        err = Exchange(perf_counter())
        err.target = self.url
        err.local = reason
        err.keep_alive = False
        if self.current is None:
            self.current = err
            self._start(err)
        else:
            self.queue.append(err)

    def on_url(self, url: bytes) -> None:
        # No on_message_begin callback (one Python call less per request): the per-head state is
        # reset when a head completes, and the first piece of the URL marks when a head pipelined
        # behind another in the same read began (data_received marks the others).
        if not self.started_at:
            self.started_at = self.request_started = self.last_active  # (this read's time)
        # Nearly every URL comes in one piece: keep the parser's bytes rather than copy them onto b"".
        self.url = self.url + url if self.url else url
        self.head_size += len(url)
        listener = self.listener
        if len(self.url) > listener.max_uri_size:
            raise _Rejected("uri_too_long")
        if self.head_size > listener.max_head_size:
            raise _Rejected("request_headers_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        listener = self.listener
        if self.reading is not None:
            # A trailer field after a chunked body: dropped (RFC 9112 §7.1.2 lets a recipient that
            # removes the chunked coding discard them), but bounded like a head.
            if self.head_size > listener.max_head_size:
                raise _Rejected("request_headers_too_large")
            return
        headers = self.headers
        headers.append((name, value))
        if self.head_size > listener.max_head_size or len(headers) > listener.max_headers:
            raise _Rejected("request_headers_too_large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        ex = Exchange(self.last_active)  # the time of the read that completed the head
        self.started_at = 0.0
        headers = self.headers
        url = self.url
        self.headers = []
        self.head_size = 0
        self.url = b""
        method = self._get_method()
        ex.method = method
        ex.target = url
        ex.keep_alive = self._keep_alive()
        ex.is_head = method == b"HEAD"
        listener = self.listener

        head = [_request_line(method, url)]
        xff = request_id = None
        host = b""
        hosts = 0
        named: set[bytes] | None = None
        has_connection = False
        length = -1
        tracer = listener.tracer
        trace_headers: list[tuple[bytes, bytes]] | None = None
        for name, value in headers:
            if SPECIAL_LENGTHS >> len(name) & 1 and (lname := lower_name(name)) in SPECIAL:
                if lname == HOST:
                    host = value
                    hosts += 1
                elif lname == CONTENT_LENGTH:
                    if len(value) > 19:  # padded with zeros past any real length: refused like h11 does
                        self._refuse("invalid_content_length", url)
                    length = int(value)  # llhttp let through digits only, and one value
                    continue  # re-written below in canonical form (no leading zeros or whitespace)
                elif lname == X_FORWARDED_FOR:
                    xff = value
                    continue
                elif lname == X_REQUEST_ID:
                    # Trailing whitespace is not part of a field value (RFC 9112 §5.1): the id the log
                    # records must be the one the app parses. A blank id is replaced by a new one.
                    request_id = value.rstrip(b" \t") or None
                    if request_id is not None:
                        head.append(field_line(name, request_id))
                    continue
                elif lname in (X_FORWARDED_PROTO, X_FORWARDED_CLIENT_CERT):
                    continue  # ours to set: this listener knows the client's protocol and identity
                elif lname == b"transfer-encoding":
                    problem = transfer_coding_problem(value)
                    if problem is not None:
                        self._refuse(problem, url)
                    ex.body_chunked = True
                    continue
                elif lname == CONNECTION:
                    has_connection = True
                    named = named_fields(value, named)
                    continue
                elif lname in HOP_BY_HOP:
                    continue
                elif tracer is not None and lname in TRACE_HEADERS:
                    if trace_headers is None:
                        trace_headers = []
                    trace_headers.append((lname, value))
                    continue  # replaced by this hop's context below
            head.append(field_line(name, value))
        # llhttp keeps a connection alive only for HTTP/1.1, or HTTP/1.0 with a Connection header
        # asking for it, so a kept-alive request without one is HTTP/1.1: the (costly) version
        # string is read only for the others.
        if has_connection or not ex.keep_alive:
            version = parser.get_http_version()
            if version == "1.0":
                ex.http10 = True
                if ex.body_chunked:  # RFC 9112 §6.1: the framing of such a request is faulty
                    self._refuse("invalid_transfer_encoding", url)
            elif version != "1.1":
                self._refuse("invalid_request_line" if version < "1.0" else "http_version_not_supported", url)
        if hosts != 1 and not (hosts == 0 and ex.http10):
            self._refuse("duplicate_host" if hosts else "missing_host", url)  # RFC 9112 §3.2
        # A sidecar sees a handful of Host values: the last one passed is compared first (a memcmp),
        # then those already checked (a set lookup, which hashes the parser's new bytes).
        if hosts and host != listener.last_host:
            if host not in listener.valid_hosts:
                if not host_is_valid(host):
                    self._refuse("invalid_host", url)
                if len(listener.valid_hosts) < 256:
                    listener.valid_hosts.add(host)
            listener.last_host = host
        if self._upgrade():
            raise _Rejected("upgrade_not_supported")  # WebSocket and CONNECT come later
        if not url or url[0] != 47:  # not "/": absolute-form, asterisk-form, or junk
            host = self._other_form(ex, head, url, host)
        elif _HASH in url:  # a fragment is the client's own business (RFC 9110 §7.1): never sent
            self._refuse("invalid_uri", url)
        if length >= 0:
            head.append(b"content-length: %d\r\n" % length)
        if named is not None:
            head = _drop_named(head, 1, named)
        ex.fields_end = len(head)
        ex.headers = headers
        if request_id is None:
            request_id = new_request_id()
            ex.own_request_id = True
            head.append(b"x-request-id: %b\r\n" % request_id)
        head.append(b"x-forwarded-for: %b, %b" % (xff, self.forwarded) if xff else self.forwarded_line)
        if tracer is not None:
            ex.trace, lines, ex.trace_start = tracer.begin(trace_headers)
            ex.trace_lines = lines
            head.append(lines)
        ex.head = head
        ex.host = host
        ex.request_id = request_id
        # Matched now, while the head is at hand (it starts later): the route may set the body limit.
        route = listener.router.match(ex)
        ex.route = route
        limit = listener.max_body_size
        if route is not None and route.body_limit >= 0:
            limit = route.body_limit
        ex.body_limit = limit
        if ex.body_chunked:
            head.append(b"transfer-encoding: chunked\r\n")
            ex.replayable = False
        elif length > 0:
            ex.replayable = False
            ex.length = length
            if limit and length > limit:
                ex.local = "request_body_too_large"
        self.reading = ex
        if self.current is None:
            self.current = self.starting = ex
            self.response_started = False
        else:
            self.queue.append(ex)
            self._pause(_PIPELINED)

    def _refuse(self, reason: str, url: bytes) -> NoReturn:
        """Refuse the request whose head is being completed (the error reply names its target)."""
        self.url = url
        raise _Rejected(reason)

    def _other_form(self, ex: Exchange, head: list[bytes], url: bytes, host: bytes) -> bytes:
        """A target not in origin form: `*` for OPTIONS, or an absolute URI, which is routed and
        forwarded by its authority in place of any Host field (RFC 9112 §3.2.2, §3.2.4); the host
        the request is routed by is returned."""
        if url == b"*" and ex.method == b"OPTIONS":
            return host
        parts = origin_form(url)
        if parts is None:
            self._refuse("invalid_uri", url)
        authority, path = parts
        if _HASH in path:
            self._refuse("invalid_uri", url)  # a fragment is refused in every form
        ex.target = path
        head[0] = _request_line(ex.method, path)
        for i in range(1, len(head)):
            if line_name(head[i]) == HOST:
                head[i] = field_line(HOST, authority)
                break
        else:
            head.insert(1, field_line(HOST, authority))
        return authority

    def on_body(self, body: bytes) -> None:
        ex = self.reading
        if ex is None or ex.local is not None:
            return
        ex.body_in += len(body)
        limit = ex.body_limit
        if limit and ex.body_in > limit:
            raise _Rejected("request_body_too_large")
        self._body_out(ex, b"%x\r\n%b\r\n" % (len(body), body) if ex.body_chunked else body)

    def _body_out(self, ex: Exchange, data: bytes) -> None:
        """Request body bytes: to the upstream if the exchange is sending, else held; kept for replay."""
        replay = ex.replay
        if replay is not None:
            ex.replay_size += len(data)
            route = ex.route
            if route is not None and route.retry is not None and ex.replay_size > route.retry.buffer:
                ex.replay = None  # too long to keep: this request will not be retried
            else:
                replay.append(data)
        upstream = ex.upstream
        if upstream is not None and ex is self.current:
            assert upstream.transport is not None
            upstream.transport.write(data)
        else:
            ex.pending.append(data)
            ex.pending_size += len(data)
            if ex.pending_size > HOLD_LIMIT and ex is self.current:
                self._pause(_HOLDING)  # (a queued request's reading is paused as pipelined already)

    def on_message_complete(self) -> None:
        ex = self.reading
        if ex is None:
            return
        self.reading = None
        ex.request_done = True
        self.request_started = 0.0
        self.head_size = 0  # (trailer fields were counted in it)
        if ex.local is not None:
            return
        if ex.body_chunked:
            self._body_out(ex, _LAST_CHUNK)
        if ex is self.current and ex.cluster is not None:  # on its way upstream (or waiting to be)
            self._arm_timeout(ex, self.last_active)
            if ex.upstream is not None:
                self._arm_try_timeout(ex, self.last_active)

    # -- starting an exchange ---------------------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        self.response_started = False
        if ex.local is not None:
            self._reply_locally(ex, ex.local)
            return
        overload = self.listener.overload
        if overload is not None and overload.shedding:
            overload.shed_requests.value += 1
            self.must_close = True
            self._reply_locally(ex, "overloaded")
            return
        route = ex.route  # matched when the head arrived
        if route is None:
            self._reply_locally(ex, "no_route")
            return
        if route.variants:
            route = route.pick_variant()
            ex.route = route
        if route.body_limit > 0 and ex.body_in > route.body_limit:  # arrived before the route was known
            self._reply_locally(ex, "request_body_too_large")
            return
        if route.policies and not self._apply_policies(ex, route):
            return
        self._send_first(ex, route)

    def _send_first(self, ex: Exchange, route: RouteEntry) -> None:
        cluster = route.cluster
        assert cluster is not None
        if cluster.requests >= cluster.limits.max_requests:
            cluster.count_overflow("requests")
            self._reply_locally(ex, "overflow")
            return
        cluster.requests += 1
        ex.cluster = cluster
        if route.retry is not None:
            budget = cluster.budget
            budget.requests[budget.slot] += 1
            if not ex.replayable and ex.pending_size <= route.retry.buffer:
                ex.replay = list(ex.pending)  # kept for a replay, up to the policy's buffer
                ex.replay_size = ex.pending_size
        if ex.request_done:  # (a delayed or pipelined request) the route timeout runs from now
            self._arm_timeout(ex, perf_counter())
        self._send_upstream(ex)

    def _apply_policies(self, ex: Exchange, route: RouteEntry, *, delayed: bool = False) -> bool:
        """Rate limit, fault injection, local actions and request edits; False when answered here (or
        held by an injected delay, after which `_after_delay` carries on)."""
        authorizer = route.authorizer
        if authorizer is not None and not delayed:
            refused = authorizer.decide(self.peer_id, ex)
            if refused is not None:
                assert route.authz_denied is not None
                route.authz_denied.value += 1
                self._reply_locally(ex, refused)
                return False
        limiter = route.rate_limiter
        if limiter is not None and not delayed:
            wait = limiter.check(self._limit_key(ex, route))
            if wait:
                from pillion.filters.rate_limit import retry_after

                assert route.rate_limited is not None
                route.rate_limited.value += 1
                self._reply_locally(ex, "rate_limited", extra=b"retry-after: " + retry_after(wait) + _CRLF)
                return False
        fault = route.fault
        if fault is not None and not delayed:
            delay, abort = fault.decide()
            if delay:
                assert route.fault_delays is not None
                route.fault_delays.value += 1
                ex.flags = "DI"
                self.loop.call_later(delay, self._after_delay, ex, abort)
                return False
            if abort:
                assert route.fault_aborts is not None
                route.fault_aborts.value += 1
                self._reply_locally(ex, "fault_injected", status=abort)
                return False
        if route.direct is not None:
            d = route.direct
            self._reply_locally(ex, "", status=d.status, body=d.body.encode(), content_type=d.content_type)
            return False
        if route.redirect is not None:
            location = self._redirect_location(ex, route)
            self._reply_locally(ex, "", status=route.redirect.status, extra=b"location: " + location + _CRLF)
            return False
        self._edit_request(ex, route)
        return True

    def _after_delay(self, ex: Exchange, abort: int) -> None:
        if ex is not self.current or self.closed:
            return  # ended meanwhile
        route = ex.route
        assert route is not None
        if abort:
            assert route.fault_aborts is not None
            route.fault_aborts.value += 1
            self._reply_locally(ex, "fault_injected", status=abort)
        elif self._apply_policies(ex, route, delayed=True):
            self._send_first(ex, route)

    def _limit_key(self, ex: Exchange, route: RouteEntry) -> bytes:
        if route.rate_key == "client_address":
            return self.client_ip
        if route.rate_key == "header":
            name = route.rate_header
            for n, v in ex.headers:
                if n.lower() == name:
                    return v
            return b""
        return b""

    def _redirect_location(self, ex: Exchange, route: RouteEntry) -> bytes:
        r = route.redirect
        assert r is not None
        q = ex.target.find(b"?")
        path, query = (ex.target, b"") if q < 0 else (ex.target[:q], ex.target[q:])
        if r.path is not None:
            path = r.path.encode()
        elif r.prefix is not None and route.prefix is not None:
            path = r.prefix.encode() + path[len(route.prefix) :]
        if r.strip_query:
            query = b""
        if r.scheme is None and r.host is None:
            return path + query
        host = r.host.encode() if r.host is not None else ex.host
        return (r.scheme or "http").encode() + b"://" + host + path + query

    def _edit_request(self, ex: Exchange, route: RouteEntry) -> None:
        head = ex.head
        if route.prefix_rewrite is not None and route.prefix is not None:
            # (ex.target is the target as forwarded: origin form, whatever form the client used)
            head[0] = _request_line(ex.method, route.prefix_rewrite + ex.target[len(route.prefix) :])
        if route.host_rewrite is not None:
            line = field_line(HOST, route.host_rewrite)
            for i in range(1, ex.fields_end):
                if line_name(head[i]) == HOST:
                    head[i] = line
                    break
            else:
                head.insert(1, line)
                ex.fields_end += 1
            ex.host = route.host_rewrite
        if route.request_edit is not None:
            size = len(head)
            ex.head = route.request_edit.apply(head, 1, ex.fields_end)
            ex.fields_end += len(ex.head) - size

    def _send_upstream(self, ex: Exchange) -> None:
        route = ex.route
        assert route is not None
        cluster = route.cluster
        assert cluster is not None
        previous = ex.endpoint
        if previous is None and not cluster.hashed:
            endpoint = cluster.balancer.pick(0)  # the common case, in one call
        else:
            key = cluster.hash_of(ex.headers, self.client_ip) if cluster.hashed else 0
            endpoint = cluster.pick(key, previous)
            if previous is not None:
                previous.active -= 1
        ex.endpoint = endpoint
        if endpoint is None:
            self._reply_locally(ex, cluster.unavailable_reason())
            return
        endpoint.active += 1
        ex.upstream_address = endpoint.label
        endpoint.requests += 1
        if not ex.host:
            ex.head.insert(1, field_line(HOST, endpoint.label.encode()))
            ex.fields_end += 1
            ex.host = b"-"
        conn = endpoint.take_idle()
        if conn is not None:
            self._attach(ex, conn)
            return
        cancel = cluster.open_or_wait(endpoint, lambda c, reason: self._connected(ex, c, reason))
        if cancel is None:
            self._reply_locally(ex, "overflow")
        else:
            ex.cancel_wait = cancel

    def _connected(self, ex: Exchange, conn: UpstreamConnection | None, reason: str | None) -> None:
        if ex is not self.current or self.closed:
            if conn is not None:  # the request ended while we connected: keep the connection
                conn.endpoint.give_back(conn, self.loop.time())
            return
        ex.cancel_wait = None
        if conn is not None and not conn.reusable():
            self._send_upstream(ex)  # handed a connection that closed on the way: get another
            return
        if conn is None:
            assert reason is not None
            route = ex.route
            retry = route.retry if route is not None else None
            if retry is not None and retry.connect_failure and self._retry(ex, reached_app=False):
                return
            self._reply_locally(ex, reason)
            return
        self._attach(ex, conn)

    def _attach(self, ex: Exchange, conn: UpstreamConnection) -> None:
        ex.upstream = conn
        ex.sent = True
        ex.sent_at = now = perf_counter()
        if ex.endpoint is not conn.endpoint:  # handed over at max_connections from another endpoint
            if ex.endpoint is not None:
                ex.endpoint.active -= 1
            ex.endpoint = conn.endpoint
            conn.endpoint.active += 1
            ex.upstream_address = conn.endpoint.label
        conn.down = self
        conn.headers = []
        conn.expect_no_body = ex.is_head
        transport = conn.transport
        assert transport is not None
        # The head list is kept intact (a retry sends it again): the blank line and any held body
        # bytes are appended for the join and taken off again.
        head = ex.head
        head.append(_CRLF)
        if ex.pending:
            size = len(head) - 1
            head += ex.pending
            ex.pending = []
            ex.pending_size = 0
            self._resume(_HOLDING)
            data = b"".join(head)
            del head[size:]
        else:
            data = b"".join(head)
            head.pop()
        if ex.replayable and not conn.gathered:  # no body to follow: it can wait for the pass's others
            conn.pending = data
            self.listener.batch.add_upstream(conn)
        else:
            transport.write(data)
        if self.write_paused:
            conn.set_reading(False)
        if ex.request_done:
            self._arm_timeout(ex, now)
            self._arm_try_timeout(ex, now)

    def _arm_timeout(self, ex: Exchange, now: float) -> None:
        """The route timeout: from the end of the request, across connecting, waiting and every try."""
        route = ex.route
        if route is not None and route.timeout > 0 and self.timer is None and not self.response_started:
            self.timer = self.listener.deadlines.add(route.timeout, self, now)

    def _arm_try_timeout(self, ex: Exchange, now: float) -> None:
        route = ex.route
        retry = route.retry if route is not None else None
        if retry is not None and retry.per_try_timeout > 0 and not self.response_started:
            self._cancel_try_timeout()
            self.try_timer = self.listener.try_deadlines.add(retry.per_try_timeout, self, now)

    def _cancel_timeout(self) -> None:
        if self.timer is not None:
            self.timer.discard(self)
            self.timer = None
        if self.try_timer is not None:
            self._cancel_try_timeout()

    def _cancel_try_timeout(self) -> None:
        if self.try_timer is not None:
            self.try_timer.discard(self)
            self.try_timer = None

    def timed_out(self) -> None:
        """The current request's route timeout passed with no response head."""
        self.timer = None
        self._cancel_try_timeout()
        ex = self.current
        if ex is None or self.response_started:
            return
        if ex.route is not None and ex.route.cluster is not None:
            ex.route.cluster.timeouts.value += 1
        upstream = ex.upstream
        if upstream is not None:
            ex.upstream = None
            upstream.abort()
        self._reply_locally(ex, "upstream_timeout")

    def request_timed_out(self) -> None:
        """The request being read took longer than the listener's request_timeout (the sweep calls
        this): 408 while its answer has not started, else the connection is dropped."""
        ex = self.reading
        if ex is not None and ex is self.current and not self.response_started:
            self._reject("request_timeout")
        elif self.transport is not None:
            self.request_started = 0.0
            self.transport.abort()

    def try_timed_out(self) -> None:
        """The current try's per-try timeout passed with no response head: retry, or give up (504)."""
        self.try_timer = None
        ex = self.current
        if ex is None or self.response_started or ex.upstream is None:
            return
        route = ex.route
        assert route is not None and route.retry is not None and route.cluster is not None
        route.cluster.timeouts.value += 1
        upstream = ex.upstream
        ex.upstream = None
        upstream.abort()
        if route.retry.timeout_retry and self._retry(ex, reached_app=True):
            return
        self._reply_locally(ex, "upstream_timeout")

    # -- retries ----------------------------------------------------------------------------------

    def _retry(self, ex: Exchange, *, reached_app: bool) -> bool:
        """Send the current request again after a failed try, if the route's policy, the request and
        the cluster's limits allow; True when a retry is on its way."""
        route = ex.route
        assert route is not None
        rule, cluster = route.retry, route.cluster
        assert rule is not None and cluster is not None
        why = ""
        if ex.tries >= rule.attempts:
            why = "attempts"
        elif not (ex.replayable or ex.replay is not None):
            why = "body_not_kept"
        elif reached_app and not rule.may_replay(ex.method):
            why = "not_idempotent"
        elif not ex.in_retry and cluster.retries_active >= cluster.limits.max_retries:
            cluster.count_overflow("retries")
            why = "overflow"
        elif not cluster.budget.try_retry():
            why = "budget"
        if why:
            cluster.count_retry_refused(why)
            ex.flags = f"{ex.flags},URX" if ex.flags else "URX"
            return False
        ex.tries += 1
        cluster.retries.value += 1
        if not ex.in_retry:
            ex.in_retry = True
            cluster.retries_active += 1
        self._cancel_try_timeout()
        self._resume(_UPSTREAM_FULL)  # the dropped try's full send buffer no longer holds us back
        if ex.sent and ex.replay is not None:
            ex.pending = list(ex.replay)  # what was sent, and what arrived since: all of it again
            ex.pending_size = ex.replay_size
            if ex.pending_size > HOLD_LIMIT:
                self._pause(_HOLDING)
        ex.sent = False
        self.loop.call_later(rule.backoff(ex.tries), self._retry_now, ex)
        return True

    def _retry_now(self, ex: Exchange) -> None:
        if ex is self.current and not self.closed and not self.response_started:
            self._send_upstream(ex)

    # -- response side: called by the upstream connection -----------------------------------------

    def interim_response(self, status: int, phrase: bytes) -> None:
        self._emit(b"HTTP/1.1 %d %b\r\n\r\n" % (status, phrase))

    def response_head(
        self, status: int, phrase: bytes, headers: list[tuple[bytes, bytes]], keep: bool
    ) -> None:
        ex = self.current
        assert ex is not None
        endpoint = ex.endpoint
        if endpoint is not None:
            if status < 500 and not endpoint.consecutive_5xx:
                endpoint.by_class[status // 100].value += 1  # all responded() does for a success
            else:
                endpoint.responded(status)
        route = ex.route
        retry = route.retry if route is not None else None
        if retry is not None and status in retry.statuses and self._retry_response(ex, headers):
            return
        ex.upstream_duration = perf_counter() - ex.sent_at
        self._cancel_timeout()
        self.response_started = True
        ex.status = status
        # A response that starts before its request was read to the end (the app answered early, or
        # streams both ways) ends the connection: the rest of the request is read only to be dropped.
        close = not ex.keep_alive or self.must_close or self.listener.draining or not ex.request_done
        out = [_status_line(status, phrase)]
        has_length = chunked = False
        named: set[bytes] | None = None
        for name, value in headers:
            if RESPONSE_LENGTHS >> len(name) & 1:  # most fields cannot be special: not lower-cased
                lname = lower_name(name)
                if lname in HOP_BY_HOP:
                    if lname == b"transfer-encoding":
                        chunked = True
                    elif lname == CONNECTION:
                        named = named_fields(value, named)
                    continue
                if lname == CONTENT_LENGTH:
                    has_length = True
            out.append(field_line(name, value))
        if named is not None:
            out = _drop_named(out, 1, named)
        if route is not None and route.response_edit is not None:
            out = route.response_edit.apply(out, 1, len(out))
        body_allowed = not ex.is_head and status not in (204, 304)
        self.response_chunked = False
        self.close_delimited = body_allowed and not has_length and not chunked
        if body_allowed and not has_length:
            # Chunked upstream or close-delimited: re-frame as chunked for HTTP/1.1 clients; an
            # HTTP/1.0 client can only learn where the body ends from the connection closing.
            if not ex.http10:
                self.response_chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
            else:
                close = True
        if close:
            self.must_close = True
            out.append(b"connection: close\r\n\r\n")
        elif ex.http10:
            out.append(b"connection: keep-alive\r\n\r\n")
        else:
            out.append(_CRLF)
        # Held until the end of the loop pass: a small response then leaves in one write.
        self._emit(b"".join(out))

    def _retry_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> bool:
        """A try answered with a status the route retries: if a retry is allowed, the rest of this
        response is read and dropped (or its connection closed, when its end is unknown)."""
        conn = ex.upstream
        if conn is None or not self._retry(ex, reached_app=True):
            return False
        ex.upstream = None
        framed = any(n.lower() in (CONTENT_LENGTH, b"transfer-encoding") for n, _ in headers)
        if framed and ex.request_done:
            conn.discard()
        else:
            conn.abort()
        return True

    def response_body(self, body: bytes) -> None:
        ex = self.current
        assert ex is not None
        ex.body_out += len(body)
        out = self.out
        if out is None:
            out = self.out = []
        if self.response_chunked:
            out += (b"%x\r\n" % len(body), body, _CRLF)
        else:
            out.append(body)

    def _emit(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.out = [data]
        else:
            out.append(data)

    def flush(self) -> None:
        """Have what is held for the client sent at the end of this loop pass (once per upstream read);
        on a transport that gathers writes itself, hand it over now."""
        if self.out is not None and not self.queued:
            if self.gathered:
                self.send_pending()
                return
            self.queued = True
            self.listener.batch.add_client(self)

    def send_pending(self) -> None:
        """Write what is held for the client, in one call (the WriteBatch calls this)."""
        self.queued = False
        out = self.out
        if out is not None:
            self.out = None
            if self.transport is not None and not self._is_closing():
                if len(out) == 1:
                    self._write(out[0])
                elif len(out) == 2 and len(out[1]) < _JOIN_BELOW:  # a head and a short body
                    self._write(out[0] + out[1])
                else:
                    self._writelines(out)

    def response_complete(self, conn: UpstreamConnection, keep: bool) -> None:
        ex = self.current
        assert ex is not None
        if self.response_chunked:
            self._emit(_LAST_CHUNK)
        self.flush()
        ex.upstream = None
        now = perf_counter()
        if keep and ex.request_done and not self.close_delimited:
            conn.release(now)
        else:
            conn.close()
        self._finish(ex, now)

    def upstream_failed(self, conn: UpstreamConnection, reason: str) -> None:
        ex = self.current
        if ex is None or ex.upstream is not conn:
            return
        ex.upstream = None
        self._try_failed(ex, reason)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed while bound to our current request."""
        ex = self.current
        if ex is None or ex.upstream is not conn:
            return
        if self.response_started and self.close_delimited:
            conn.down = None
            self.response_complete(conn, keep=False)
            return
        ex.upstream = None
        if not self.response_started and conn.reused and ex.replayable and not ex.retried:
            # A pooled connection the app had already closed: the request never reached it, so it
            # is safe to send again on a fresh connection (no body, so nothing was consumed).
            ex.retried = True
            self._cancel_try_timeout()
            self._send_upstream(ex)
            return
        self._try_failed(ex, "upstream_reset")

    def _try_failed(self, ex: Exchange, reason: str) -> None:
        """The current try's connection broke: retry before a response started, else report."""
        route = ex.route
        if route is not None and route.cluster is not None:
            route.cluster.resets.value += 1
        if ex.endpoint is not None:
            ex.endpoint.failed()
        if self.response_started:
            self._abort_current(reason)
            return
        retry = route.retry if route is not None else None
        if retry is not None and retry.reset and self._retry(ex, reached_app=True):
            return
        self._reply_locally(ex, reason)

    # -- ending an exchange -----------------------------------------------------------------------

    def _reply_locally(
        self,
        ex: Exchange,
        reason: str,
        *,
        status: int = 0,
        extra: bytes = b"",
        body: bytes | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """Answer from here: an error named by `reason` (status from the reasons table unless given),
        or, with no reason, a configured response (redirect, direct response)."""
        # Keep the connection only if the request was read to its end and nothing is amiss. A request
        # without a body (`replayable`) is whole at its head, before httptools reports its end.
        done = ex.request_done or ex.replayable
        close = not (ex.keep_alive and done) or self.must_close or self.listener.draining
        if close:
            self.must_close = True
        self._cancel_timeout()
        ex.status = status or status_of(reason)
        ex.error = reason
        if reason:
            self.listener.count_local_reply(reason)
        if status or extra or body is not None:
            data = build_reply(
                ex.status,
                reason or None,
                close=close,
                head_only=ex.is_head,
                extra=extra,
                body=body,
                content_type=content_type,
            )
        else:
            data = local_reply(reason, close=close, head_only=ex.is_head)
        self._emit(data)
        self.flush()
        self._finish(ex)

    def _abort_current(self, reason: str) -> None:
        """Too late for a local reply: drop both connections."""
        ex = self.current
        assert ex is not None
        self.out = None
        ex.error = reason
        upstream = ex.upstream
        if upstream is not None:
            ex.upstream = None
            upstream.abort()
        self._record(ex, perf_counter())
        self.current = None
        self.queue.clear()
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, ex: Exchange, now: float = 0.0) -> None:
        """`now`: the clock read by the caller, if it has one."""
        if not now:
            now = perf_counter()
        self._record(ex, now)
        self.last_active = now
        if self.must_close or not ex.keep_alive:
            self.current = None
            self.queue.clear()
            if ex.request_done:
                self.close()
            else:
                self._linger()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.current = nxt
            if not self.queue:
                self._resume(_PIPELINED)
            self._start(nxt)
        else:
            self.current = None
            self._resume(_PIPELINED)

    def _record(self, ex: Exchange, now: float) -> None:
        """Count and log an exchange that ended, however it ended, at `now`."""
        self._cancel_timeout()
        if self.paused & _UPSTREAM_FULL:  # its upstream, full, will not say when it drains: not ours now
            self._resume(_UPSTREAM_FULL)
        if ex.cancel_wait is not None:  # ended while waiting for a connection: stop waiting
            ex.cancel_wait()
            ex.cancel_wait = None
        self._resume(_HOLDING)  # a pause for holding too much body was this exchange's
        cluster = ex.cluster
        if cluster is not None:
            ex.cluster = None
            cluster.requests -= 1
            if ex.in_retry:
                cluster.retries_active -= 1
        if ex.endpoint is not None:
            ex.endpoint.active -= 1
            ex.endpoint = None
        elapsed = now - ex.start
        route = ex.route
        listener = self.listener
        if ex.trace_start and ex.trace is not None and listener.tracer is not None:  # a sampled span
            listener.tracer.end(
                ex.trace,
                ex.trace_start,
                method=ex.method,
                target=ex.target,
                host=ex.host,
                status=ex.status,
                cluster=route.labels[2] if route is not None else "",
            )
        if listener.metrics:
            stats = route if route is not None else listener.unrouted
            stats.count(ex.status)
            stats.duration.observe(elapsed)
            stats.request_size.observe(ex.body_in)
            stats.response_size.observe(ex.body_out)
        if listener.access_log is not None:
            listener.log_access(ex, elapsed)
