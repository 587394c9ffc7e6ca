"""Many connections between two sidecars over one mTLS connection: `pillion-mux/1`.

Theory of operation. Between sidecars, each pooled HTTP/1.1 connection used to be its own TLS connection,
so every request and every response paid its own TLS record, its own `SSL_read` (two `read` calls) and
`SSL_write`, and its own wake-up of the loop. Here a mesh cluster's connections to one endpoint are
*streams* of one TLS connection (a `Session`), like the streams of an HTTP/2 connection or of Istio's
HBONE tunnels: the requests a loop pass sends to that endpoint leave as one TLS record, and the peer reads
them with one `SSL_read`. Each stream is an asyncio transport (`Stream`) to an unchanged HTTP protocol
(`UpstreamConnection` on the client, `DownstreamConnection` on the server), so framing, pooling, limits
and the idle sweep are what they are for any connection.

The protocol is offered by ALPN. A client offers `pillion-mux/1` and `http/1.1`; a Pillion HTTP listener
selects the first, and anything else (a TCP listener, an older Pillion, another proxy) selects the second
or nothing, and the connection is used as one plain HTTP/1.1 connection.

Frames: a 9-byte head (stream id: u32, type: u8, payload length: u32, big-endian), then the payload, at
most `MAX_FRAME` bytes. Only the client opens streams, with ids rising from 1, each announced by an empty
`DATA` frame when it is opened (so ids reach the server in order); the server takes a `DATA` frame on an
id above every id it has seen as a new stream, and drops frames for ids it no longer knows (a stream it
already closed).
- `DATA`: stream bytes.
- `CLOSE`: the sender is done with the stream both ways (a connection's close; TLS cannot half-close
  either). The receiver's protocol gets `eof_received()` and `connection_lost(None)`.
- `RESET`: the sender aborted the stream; the receiver's protocol gets `connection_lost` with an error.
- `WINDOW`: a u32 of credit: the sender may send that many more bytes on the stream. Each direction of a
  stream starts with `WINDOW_SIZE`; a receiver gives credit back once bytes reach its protocol, so a
  protocol that paused reading holds at most one window, and a stream whose credit is spent keeps its
  bytes (pausing its protocol's writing past the high-water mark). Small exchanges never need one.
- `GOAWAY` (stream 0): the server is going away: the client opens its next streams on another
  connection and closes this one when its last stream ends; the server resets any stream opened after
  it, and closes the connection once the streams under way have ended.

Frames are gathered and written together: everything the streams of a session send in one loop pass
leaves in one TLS write at the end of the pass. So the proxy's connections on streams do not hold
their writes in its WriteBatch, as its other connections do (proxy/batch.py `gathers`).

Before that write, the session lets the loop turn once more: the loop then polls its sockets without
blocking, and what is sent meanwhile joins the same write; above all requests that reached the sidecar
while it worked through the pass (sent by clients running on other cores), which would otherwise wake the
peer for a write of their own. At the mTLS pair's bursts this took A's CPU per request down 14% and B's
11% (measured: docs/architecture.md): A then sends a burst in about one TLS write instead of two or three,
and B reads it in one. The extra turn costs an `epoll_wait` and a loop handle; where it finds nothing new
(`LOOK_QUIET` extra turns in a row: low rates, or a peer on the same core) the session stops looking, and
looks again on one flush in `LOOK_PROBE + 1` to see whether that has changed.

A malformed frame (too long, an unknown type, data or credit beyond the window, more than
`MAX_STREAMS` streams) ends the session: every stream sees its connection lost. An exception in one
stream's protocol resets that stream only.

Bounds: a session buffers at most a window per stream each way (the TLS connection's own write buffer is
not passed on to the streams: the windows bound it), holds at most one partial frame, and carries at
most `MAX_STREAMS` streams. A server session must see its first stream within `first_stream_within`
(the listener's header timeout) and closes after `_SERVER_IDLE_S` without streams; a client closes its
own after `_SESSION_IDLE_S`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from pillion.telemetry.stats import Gauge

log: Final = logging.getLogger("pillion.tls")

ALPN: Final = "pillion-mux/1"
OFFER: Final = [ALPN, "http/1.1"]

DATA: Final = 0
CLOSE: Final = 1
RESET: Final = 2
WINDOW: Final = 3
GOAWAY: Final = 4

HEAD: Final = struct.Struct(">IBI")
HEAD_SIZE: Final = 9
MAX_FRAME: Final = 65536
WINDOW_SIZE: Final = 262144  # per stream and direction: 1.3 GB/s over loopback's ~0.2 ms RTT
MAX_STREAMS: Final = 256  # streams at once on one session: a client opens another, a server ends it
_SESSION_IDLE_S: Final = 60.0  # a client's session with no streams this long is closed
_SERVER_IDLE_S: Final = 90.0  # the server's backstop, for a client that does not close its idle ones
MAX_STREAM_ID: Final = 0x7FFFFFFF  # a client past it opens a new session
LOOK_QUIET: Final = 8  # extra loop turns in a row that found nothing to send, before a session stops them
LOOK_PROBE: Final = 32  # flushes without the extra turn between two that take it, once stopped
_HIGH_WATER: Final = 65536  # bytes a stream holds for want of credit before its protocol pauses writing
_LOW_WATER: Final = 16384
_CREDIT: Final = struct.Struct(">I")

_pack = HEAD.pack
_unpack_from = HEAD.unpack_from


class ProtocolError(Exception):
    """The peer broke the framing rules: the session ends."""


class Session:
    """One TLS connection carrying many streams, as that connection's asyncio protocol (by its methods,
    not by subclassing, so that it compiles to a native class). `accept` is set on the server side: the
    factory of each new stream's protocol."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        accept: Callable[[], asyncio.Protocol] | None,
        first_stream_within: float = 0.0,
    ) -> None:
        """`first_stream_within` (server): seconds the client has to open its first stream, like a
        plain connection's request-headers timeout (0: no limit)."""
        self.loop = loop
        self.accept = accept
        self.first_stream_within = first_stream_within
        self.on_closed: Callable[[Session], None] | None = None  # once, when closed: pool and gauge
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.next_id = 1  # client: the id of the next stream it opens
        self.last_id = 0  # server: the highest stream id seen
        self.out: list[bytes] = []
        self.scheduled = False  # our end-of-pass flush is scheduled
        self.looked = -1  # len(out) when this flush took its extra loop turn (-1: not taking one)
        self.quiet_looks = 0  # extra turns in a row that found nothing more to send
        self.skip_looks = 0  # > 0: this many more flushes go without the extra turn
        self.pending = b""  # the start of a frame not yet all read
        self.write_paused = False
        self.closed = False
        self.goaway = False  # the peer accepts no new streams (client), or we said so (server)
        self.lost_exc: Exception | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self.generation: object = None  # client: the identity snapshot it was dialled with

    # -- the TLS connection's protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.accept is not None and self.first_stream_within > 0:
            self.idle_handle = self.loop.call_later(self.first_stream_within, _close_if_idle, self)

    def _busy(self) -> None:
        """A stream is opening (or the session ends): no idle close is due."""
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None

    def idle(self) -> None:
        """No streams left: a retired session closes now, another after a while without new ones."""
        if self.closed:
            return
        if self.goaway:
            self.close()
        elif self.idle_handle is None:
            delay = _SESSION_IDLE_S if self.accept is None else _SERVER_IDLE_S
            self.idle_handle = self.loop.call_later(delay, _close_if_idle, self)

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        size = len(buf)
        pos = 0
        try:
            while size - pos >= HEAD_SIZE and not self.closed:
                sid, kind, length = _unpack_from(buf, pos)
                if length > MAX_FRAME:
                    raise ProtocolError(f"frame of {length} bytes")
                end = pos + HEAD_SIZE + length
                if end > size:
                    break
                payload = buf[pos + HEAD_SIZE : end]
                pos = end
                stream = self.streams.get(sid)
                if kind <= CLOSE:  # DATA or CLOSE: for a stream, whose protocol may fail
                    if stream is None:
                        if kind == DATA:
                            stream = self._opened_by_peer(sid)
                        else:
                            self._seen(sid)
                        if stream is None:
                            continue
                    try:
                        if kind == DATA:
                            stream.received(payload)
                        else:
                            stream.peer_closed()
                    except ProtocolError:
                        raise
                    except Exception:  # a bug in one stream's protocol costs that stream, not the others
                        log.exception("stream failed", extra={"stream": sid})
                        stream.abort()
                elif kind == RESET:
                    if stream is not None:
                        stream.finish(ConnectionResetError("the peer reset the stream"))
                    else:
                        self._seen(sid)
                elif kind == WINDOW:
                    if length != 4:
                        raise ProtocolError("WINDOW without a 4-byte credit")
                    if stream is not None:
                        stream.credited(_CREDIT.unpack(payload)[0])
                elif kind == GOAWAY:
                    self.retire()
                else:
                    raise ProtocolError(f"unknown frame type {kind}")
        except ProtocolError as exc:
            self.fail(exc)
        finally:
            self.pending = buf[pos:] if pos < size and not self.closed else b""

    def _seen(self, sid: int) -> None:
        """A frame for a stream we do not have: an id the server has not met yet is used up."""
        if self.accept is not None and sid > self.last_id:
            self.last_id = sid

    def _opened_by_peer(self, sid: int) -> Stream | None:
        """A new stream from the client, or None for a frame of a stream that is gone (or refused)."""
        if self.accept is None or sid <= self.last_id:
            return None  # the client's own streams are opened by open(); an old id's late data
        self.last_id = sid
        if self.goaway:  # draining: the client learns it from the reset (and from the GOAWAY)
            self.send(sid, RESET)
            return None
        if len(self.streams) >= MAX_STREAMS:
            raise ProtocolError(f"more than {MAX_STREAMS} streams at once")
        self._busy()
        stream = Stream(self, sid)
        self.streams[sid] = stream
        stream.start(self.accept())
        return stream

    def eof_received(self) -> bool | None:
        return False  # the transport closes; connection_lost ends the streams

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.out = []
        self.pending = b""
        if self.on_closed is not None:
            self.on_closed(self)
            self.on_closed = None
        self._busy()
        lost = self.lost_exc or exc or ConnectionResetError("the multiplexed connection closed")
        for stream in list(self.streams.values()):
            stream.finish(lost)

    # The TLS connection's own buffer is not passed on to the streams: each stream may have at most one
    # window of its bytes unread by the peer, so what a session buffers is bounded by its streams' windows.
    # `write_paused` only reports it (for tests and debugging).
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    # -- sending --------------------------------------------------------------------------------------

    def send(self, sid: int, kind: int, payload: bytes = b"") -> None:
        """Queue one frame; everything queued leaves together at the end of the loop pass."""
        if self.closed:
            return
        out = self.out
        out.append(_pack(sid, kind, len(payload)))
        if payload:
            out.append(payload)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        if self.looked >= 0:  # the extra turn is over
            self._looked_again(len(self.out) > self.looked)
        elif self.skip_looks:
            self.skip_looks -= 1
        elif self.out and not self.closed:  # (a close may have sent them already)
            # One more loop turn first (the module's docstring says why); `scheduled` stays set, so
            # what is sent meanwhile joins this flush.
            self.looked = len(self.out)
            self.loop.call_soon(self._scheduled_flush)
            return
        self.scheduled = False
        self.flush()

    def _looked_again(self, found: bool) -> None:
        """Count an extra turn that `found` frames to send or did not; stop taking them after LOOK_QUIET
        quiet ones in a row, and after a stop, let one quiet probe stop them again."""
        self.looked = -1
        if found:
            self.quiet_looks = 0
            return
        self.quiet_looks += 1
        if self.quiet_looks >= LOOK_QUIET:
            self.skip_looks = LOOK_PROBE
            self.quiet_looks = LOOK_QUIET - 1

    def flush(self) -> None:
        if self.out and not self.closed and self.transport is not None:
            out, self.out = self.out, []
            self.transport.write(b"".join(out))

    def fail(self, exc: Exception) -> None:
        """End the session (and so every stream) at once."""
        if self.closed:
            return
        self.lost_exc = ConnectionResetError(f"multiplexed connection failed: {exc}")
        self.out = []
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close when what is queued has been sent (the streams end with it)."""
        if self.closed or self.transport is None:
            return
        self.goaway = True  # (no stream may be opened on it meanwhile)
        self.flush()
        self.transport.close()

    def retire(self) -> None:
        """No new streams here (the peer's GOAWAY or an identity rotated, on a client; go_away, on a
        server); close once the last one ends."""
        self.goaway = True
        if not self.streams:
            self.close()

    def go_away(self) -> None:
        """Server side: accept no new streams (they are reset), tell the client, and close once the
        streams under way have ended."""
        if not self.goaway:
            self.send(0, GOAWAY)
            self.retire()

    # -- streams --------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether a client may open another stream here."""
        return not self.closed and not self.goaway and self.next_id <= MAX_STREAM_ID

    def open(self, protocol: asyncio.Protocol) -> Stream:
        """Client side: a new stream to the peer, with `protocol` on it (connection_made called)."""
        sid = self.next_id
        self.next_id = sid + 1
        stream = Stream(self, sid)
        self.streams[sid] = stream
        self._busy()
        # Announced at once (an empty DATA frame), so the peer meets ids in the order they were opened
        # even when a newer stream writes first.
        self.send(sid, DATA)
        stream.start(protocol)
        return stream

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.sid, None)

    def extra(self, name: str, default: Any) -> Any:
        return self.transport.get_extra_info(name, default) if self.transport is not None else default


class Stream:
    """One stream of a session, as the asyncio transport of its protocol."""

    def __init__(self, session: Session, sid: int) -> None:
        self.session = session
        self.sid = sid
        # Writes become frames the session sends together at the end of the pass, so the proxy's
        # connections on a stream send at once instead of waiting in their WriteBatch (batch.gathers).
        self.gathers_writes = True
        self.protocol: asyncio.Protocol | None = None
        self.credit = WINDOW_SIZE  # bytes the peer accepts from us now
        self.unacked = 0  # bytes given to our protocol since we last gave the peer credit
        self.waiting: deque[bytes] = deque()  # bytes to send once the peer gives credit
        self.waiting_size = 0
        self.held: list[bytes] = []  # bytes received while our protocol paused reading (delivered joined)
        self.held_size = 0
        self.eof_held = False  # the peer's CLOSE came while bytes were held
        self.read_paused = False
        self.protocol_paused = False  # our protocol was told to pause writing
        self.closing = False
        self.closed = False

    def start(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        protocol.connection_made(cast(asyncio.Transport, self))

    # -- from the peer --------------------------------------------------------------------------------

    def received(self, payload: bytes) -> None:
        if len(payload) > WINDOW_SIZE - self.unacked - self.held_size:
            raise ProtocolError(f"stream {self.sid}: more data than its window")
        if self.closed or not payload:  # (an empty one: a stream's announcement)
            return
        if self.closing:  # we closed: nothing more for the protocol, but the peer gets its credit back
            self._credit_back(len(payload))
            return
        if self.read_paused or self.held:
            self.held.append(payload)
            self.held_size += len(payload)
            return
        self._deliver(payload)

    def _credit_back(self, size: int) -> None:
        unacked = self.unacked + size
        if unacked >= WINDOW_SIZE // 2:
            self.session.send(self.sid, WINDOW, _CREDIT.pack(unacked))
            unacked = 0
        self.unacked = unacked

    def _deliver(self, payload: bytes) -> None:
        self._credit_back(len(payload))
        protocol = self.protocol
        assert protocol is not None
        protocol.data_received(payload)

    def peer_closed(self) -> None:
        if self.closing:  # we closed first: nothing to tell the protocol but that it is over
            self.finish(None)
            return
        if self.held or self.read_paused:  # the end comes after what is held, once reading resumes
            self.eof_held = True
            return
        protocol = self.protocol
        assert protocol is not None
        protocol.eof_received()  # (what it returns does not matter: the peer closed both ways)
        self.closing = True
        self.finish(None)

    def credited(self, credit: int) -> None:
        self.credit += credit
        if self.credit > 2 * WINDOW_SIZE:  # more than it can ever owe
            raise ProtocolError(f"stream {self.sid}: credit beyond its window")
        waiting = self.waiting
        while waiting and self.credit > 0:
            data = waiting[0]
            n = min(len(data), self.credit)
            self._send_data(data[:n])
            self.waiting_size -= n
            if n == len(data):
                waiting.popleft()
            else:
                waiting[0] = data[n:]
        if not waiting and self.closing and not self.closed:
            self.session.send(self.sid, CLOSE)
            self.finish(None)
            return
        self.update_pause()

    def finish(self, exc: Exception | None) -> None:
        """The stream is over: forget it and tell the protocol (in a later callback, as asyncio does)."""
        if self.closed:
            return
        self.closed = True
        self.closing = True
        self.waiting = deque()
        self.held = []
        self.held_size = 0
        session = self.session
        session.forget(self)
        if self.protocol is not None:
            session.loop.call_soon(self.protocol.connection_lost, exc)
            self.protocol = None  # it holds this transport: no reference cycle once it is told
        if not session.streams:
            session.idle()

    # -- the transport's interface ----------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        data = bytes(data)
        if self.waiting or len(data) > self.credit:
            n = 0 if self.waiting else self.credit
            if n:
                self._send_data(data[:n])
            self.waiting.append(data[n:])
            self.waiting_size += len(data) - n
            self.update_pause()
            return
        self._send_data(data)

    def _send_data(self, data: bytes) -> None:
        self.credit -= len(data)
        session, sid = self.session, self.sid
        if len(data) <= MAX_FRAME:
            session.send(sid, DATA, data)
            return
        for at in range(0, len(data), MAX_FRAME):
            session.send(sid, DATA, data[at : at + MAX_FRAME])

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def update_pause(self) -> None:
        protocol = self.protocol
        if protocol is None or self.closed:
            return
        size = self.waiting_size
        if size > _HIGH_WATER:
            if not self.protocol_paused:
                self.protocol_paused = True
                protocol.pause_writing()
        elif self.protocol_paused and size <= _LOW_WATER:
            self.protocol_paused = False
            protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a stream does not half-close")

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.waiting:  # (else the CLOSE follows the last waiting bytes: see credited)
            self.session.send(self.sid, CLOSE)
            self.finish(None)

    def abort(self) -> None:
        if self.closed:
            return
        self.session.send(self.sid, RESET)
        self.finish(None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if not self.read_paused:
            return
        self.read_paused = False
        # Bytes held while paused go to the protocol in the next callback, not inside this call (the
        # protocol may be in the middle of something).
        if self.held or self.eof_held:
            self.session.loop.call_soon(self._release)

    def _release(self) -> None:
        if self.held and not self.read_paused and not self.closed:
            payload = b"".join(self.held)  # (one call: many small frames must not cost one each)
            self.held = []
            self.held_size = 0
            self._deliver(payload)
        if self.eof_held and not self.held and not self.closed:
            self.eof_held = False
            self.peer_closed()

    def is_reading(self) -> bool:
        return not self.read_paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.session.extra(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self.protocol)  # (None once the stream is over)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = cast(asyncio.Protocol, protocol)

    def get_write_buffer_size(self) -> int:
        return self.waiting_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return _LOW_WATER, _HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # (the session's TLS transport has the limits that matter; see update_pause)


def _close_if_idle(session: Session) -> None:
    session.idle_handle = None
    if not session.streams and not session.closed:
        session.close()


_UNCLAIMED_S: Final = 1.0  # a plain connection dialled for waiters that all gave up is closed after this


class ClientSessions:
    """A mesh cluster's sessions, by endpoint: `open` puts a new stream on one that has room, dialling a
    new session when none has (one dial at a time per endpoint; the others wait for it). `open_now`
    counts the sessions open, pooled or retiring (the cluster's pillion_tls_multiplexed_connections)."""

    def __init__(self, open_now: Gauge | None = None) -> None:
        self.open_now = open_now if open_now is not None else Gauge()
        self.retired = False
        self.sessions: dict[tuple[str, int], list[Session]] = {}  # those that may take new streams
        self.live: dict[tuple[str, int], set[Session]] = {}  # every session not yet closed, retiring too
        self.dialling: dict[tuple[str, int], asyncio.Task[asyncio.BaseTransport]] = {}

    def _usable(self, key: tuple[str, int], generation: object) -> Session | None:
        found = self.sessions.get(key)
        if not found:
            return None
        for session in list(found):
            if session.closed:
                found.remove(session)
            elif session.generation is not generation:  # the identity rotated: new streams go elsewhere
                session.retire()
                found.remove(session)
            elif session.usable and len(session.streams) < MAX_STREAMS:
                return session
        return None

    async def open(
        self,
        protocol: asyncio.Protocol,
        host: str,
        port: int,
        generation: object,
        dial: Callable[[], Coroutine[Any, Any, asyncio.BaseTransport]],
    ) -> asyncio.BaseTransport:
        """A stream to host:port carrying `protocol` (connection_made called). `dial()` makes a new
        session, or returns a plain transport (protocol PLAIN_PENDING) when the peer does not multiplex:
        then `protocol` takes that transport for itself. `generation` is the identity in service:
        sessions dialled with an older one take no new streams."""
        key = (host, port)
        for _ in range(8):  # a session may fill up or close while we wait for a dial: bounded retries
            session = self._usable(key, generation)
            if session is not None:
                return cast(asyncio.BaseTransport, session.open(protocol))
            task = self.dialling.get(key)
            if task is None:
                task = asyncio.ensure_future(self._dial(key, generation, dial))
                self.dialling[key] = task
            got = await asyncio.shield(task)
            if isinstance(got.get_protocol(), Session):
                continue  # (registered by _dial; it may already be full, so look again)
            if got.get_protocol() is not PLAIN_PENDING:
                # The peer does not multiplex and another waiter took that connection: dial our own.
                got = await dial()
                if self._register(key, generation, got):
                    continue
            got.set_protocol(protocol)  # the peer does not multiplex: this connection is ours alone
            protocol.connection_made(got)
            return got
        session = self._usable(key, generation)  # (the last dial's)
        if session is not None:
            return cast(asyncio.BaseTransport, session.open(protocol))
        raise ConnectionError(f"no multiplexed session to {host}:{port} with room for a stream")

    async def _dial(
        self,
        key: tuple[str, int],
        generation: object,
        dial: Callable[[], Coroutine[Any, Any, asyncio.BaseTransport]],
    ) -> asyncio.BaseTransport:
        try:
            got = await dial()
        finally:
            self.dialling.pop(key, None)
        if not self._register(key, generation, got):
            asyncio.get_running_loop().call_later(_UNCLAIMED_S, _close_unclaimed, got)
        return got

    def _register(self, key: tuple[str, int], generation: object, got: asyncio.BaseTransport) -> bool:
        """Pool a dialled session (True); False for a plain connection."""
        session = got.get_protocol()
        if not isinstance(session, Session):
            return False
        session.generation = generation
        self.open_now.inc()
        self.live.setdefault(key, set()).add(session)
        session.on_closed = lambda s: self._closed(key, s)
        if self.retired:
            session.retire()
            return True
        self.sessions.setdefault(key, []).append(session)
        session.idle()  # (closed if no stream comes, as when every waiter gave up during the dial)
        return True

    def count(self, host: str, port: int) -> tuple[int, int]:
        """(sessions, streams) open to host:port, retiring ones included (as in the gauge)."""
        found = self.live.get((host, port), ())
        return len(found), sum(len(s.streams) for s in found)

    def _closed(self, key: tuple[str, int], session: Session) -> None:
        self.open_now.dec()
        live = self.live.get(key)
        if live is not None:
            live.discard(session)
            if not live:
                del self.live[key]
        found = self.sessions.get(key)
        if found is not None and session in found:
            found.remove(session)
            if not found:
                del self.sessions[key]

    def retire(self) -> None:
        """The cluster is gone: every session closes once its last stream ends."""
        self.retired = True
        for found in list(self.sessions.values()):
            for session in found:
                session.retire()
        self.sessions.clear()


class _Placeholder(asyncio.Protocol):
    """The protocol of a dialled connection the peer would not multiplex, until a waiter takes it."""


PLAIN_PENDING: Final = _Placeholder()


def _close_unclaimed(transport: asyncio.BaseTransport) -> None:
    if transport.get_protocol() is PLAIN_PENDING:
        transport.close()
