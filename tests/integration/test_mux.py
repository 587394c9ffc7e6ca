"""`pillion-mux/1` (pillion.tls.mux) on real loopback TCP connections.

A `Session` works over any asyncio transport, so here it rides plain TCP: the server is
`loop.create_server` with a server Session per connection (its `accept` factory making a `Recorder` per
stream), the client either a client Session from `loop.create_connection` or a raw socket writing frames
by hand (`frame`), for the input a conforming client never sends. Each test runs once per loop kind (the
`run` fixture: asyncio, uvloop), bounded by 10 seconds, and fails if anything reached the loop's
exception handler (pillion.testing.loops.bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pillion.telemetry.stats import Gauge
from pillion.testing.loops import Run, bounded, until
from pillion.testing.protocols import RecordingProtocol
from pillion.tls import mux
from pillion.tls.mux import (
    CLOSE,
    DATA,
    GOAWAY,
    HEAD,
    HEAD_SIZE,
    MAX_FRAME,
    RESET,
    WINDOW_SIZE,
    ClientSessions,
    Session,
    Stream,
)

HOST = "127.0.0.1"
MIB = 1024 * 1024


class Recorder(RecordingProtocol):
    """A RecordingProtocol that can show its transport as the mux stream it is."""

    @property
    def stream(self) -> mux.Stream:
        """The transport as the mux stream it is (for the id and the stream's own state)."""
        assert isinstance(self._transport, mux.Stream)
        return self._transport


class Exploding(Recorder):
    """A Recorder whose data_received raises (after recording) on bytes containing b"BOOM": a bug in one
    stream's protocol."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if b"BOOM" in data:
            raise RuntimeError("a bug in the stream's protocol")


class CountingTransport(asyncio.Transport):
    """Stands in for a session's transport, keeping each `write` call's bytes, passing everything on."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)


def count_writes(session: Session) -> CountingTransport:
    assert session.transport is not None
    counting = CountingTransport(session.transport)
    session.transport = counting
    return counting


def frame(sid: int, kind: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(sid, kind, len(payload)) + payload


def parse(data: bytes) -> list[tuple[int, int, bytes]]:
    """The frames (stream id, type, payload) that make up `data`, which must end at a frame's end."""
    frames = []
    pos = 0
    while pos < len(data):
        sid, kind, length = HEAD.unpack_from(data, pos)
        pos += HEAD_SIZE
        frames.append((sid, kind, data[pos : pos + length]))
        pos += length
    assert pos == len(data), "the bytes end inside a frame"
    return frames


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 1000 + seed).randbytes(size)


@dataclass
class MuxServer:
    port: int
    sessions: list[Session] = field(default_factory=list)  # one per accepted connection
    accepted: list[Recorder] = field(default_factory=list)  # one per stream the clients opened

    def by_sid(self, sid: int) -> Recorder:
        (found,) = [r for r in self.accepted if r.stream.sid == sid]
        return found


@contextlib.asynccontextmanager
async def mux_server(
    *, echo: bool = True, pause: bool = False, protocol: Callable[[], Recorder] | None = None
) -> AsyncIterator[MuxServer]:
    """A loopback listener whose connections carry server Sessions, their streams' protocols Recorders
    (echoing, or paused; or made by `protocol`); every session aborted and the listener closed after."""
    loop = asyncio.get_running_loop()
    sessions: list[Session] = []
    accepted: list[Recorder] = []

    def accept() -> asyncio.Protocol:
        recorder = protocol() if protocol is not None else Recorder(echo=echo, pause=pause)
        accepted.append(recorder)
        return recorder

    def session() -> asyncio.Protocol:
        made = Session(loop, accept)
        sessions.append(made)
        return cast(asyncio.Protocol, made)  # (an asyncio protocol by its methods)

    server = await loop.create_server(session, HOST, 0)
    try:
        yield MuxServer(server.sockets[0].getsockname()[1], sessions, accepted)
    finally:
        server.close()
        for made in sessions:
            if made.transport is not None:
                made.transport.abort()
        await server.wait_closed()
        await asyncio.sleep(0)  # (connection_lost, called soon)


async def dial(port: int) -> tuple[asyncio.Transport, Session]:
    loop = asyncio.get_running_loop()
    session = Session(loop, None)
    transport, _ = await loop.create_connection(lambda: cast(asyncio.Protocol, session), HOST, port)
    return transport, session


async def echoed(session: Session, data: bytes) -> tuple[Recorder, Stream]:
    """A new stream on `session` (to an echoing server) that has written `data` and had it back."""
    recorder = Recorder()
    stream = session.open(recorder)
    stream.write(data)
    await until(lambda: recorder.data == data)
    return recorder, stream


class Dials:
    """ClientSessions dials to a loopback port, counted: `mux(port)` dials a Session, `plain(port)` a
    connection whose protocol is PLAIN_PENDING (a peer that does not multiplex)."""

    def __init__(self) -> None:
        self.calls = 0

    def mux(self, port: int) -> Callable[[], Coroutine[Any, Any, asyncio.BaseTransport]]:
        async def go() -> asyncio.BaseTransport:
            self.calls += 1
            transport, _ = await dial(port)
            return transport

        return go

    def plain(self, port: int) -> Callable[[], Coroutine[Any, Any, asyncio.BaseTransport]]:
        async def go() -> asyncio.BaseTransport:
            self.calls += 1
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: mux.PLAIN_PENDING, HOST, port)
            return transport

        return go


@dataclass
class Pair:
    server: MuxServer
    transport: asyncio.Transport  # the client's TCP connection
    client: Session

    @property
    def server_session(self) -> Session:
        (only,) = self.server.sessions
        return only


@contextlib.asynccontextmanager
async def mux_pair(*, echo: bool = True, pause: bool = False) -> AsyncIterator[Pair]:
    """A client Session joined to a server Session over loopback TCP; the connection aborted after."""
    async with mux_server(echo=echo, pause=pause) as server:
        transport, client = await dial(server.port)
        try:
            await until(lambda: len(server.sessions) == 1)
            yield Pair(server, transport, client)
        finally:
            transport.abort()
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection, for writing frames by hand."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes (b"" after a reset): returns only once the connection ended."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


def test_concurrent_streams_echo_close_and_leave_in_one_write(run: Run) -> None:
    """50 streams opened and written in one callback leave in one transport write, each stream's own
    bytes come back to it alone, and closing each ends both sides cleanly."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            writes = count_writes(p.client)
            payloads = [pattern(100 + 997 * i, seed=i) for i in range(50)]
            clients = [Recorder() for _ in payloads]
            streams = [p.client.open(client) for client in clients]
            for stream, payload in zip(streams, payloads, strict=True):
                stream.write(payload)
            assert writes.writes == []  # queued until the end of the loop pass
            await asyncio.sleep(0)
            assert writes.writes == []  # and one more loop turn, for what arrives meanwhile
            await asyncio.sleep(0)
            assert len(writes.writes) == 1
            sent = parse(writes.writes[0])
            # Each stream announced in the order opened (an empty DATA frame), then the bytes written.
            assert [(sid, kind, payload) for sid, kind, payload in sent[:50]] == [
                (i + 1, DATA, b"") for i in range(50)
            ]
            assert [(sid, kind) for sid, kind, _ in sent[50:]] == [(i + 1, DATA) for i in range(50)]
            assert [payload for _, _, payload in sent[50:]] == payloads

            await until(lambda: all(len(c.data) >= len(d) for c, d in zip(clients, payloads, strict=True)))
            for client, payload in zip(clients, payloads, strict=True):
                assert bytes(client.data) == payload
            assert len(p.server.accepted) == 50
            for server in p.server.accepted:
                assert bytes(server.data) == payloads[server.stream.sid - 1]
            assert sorted(p.client.streams) == sorted(p.server_session.streams) == list(range(1, 51))

            for stream in streams:
                stream.close()
                assert stream.is_closing()
            await until(lambda: all("connection_lost" in r.events for r in p.server.accepted + clients))
            for server in p.server.accepted:
                assert server.events == [
                    "connection_made",
                    "data_received",
                    "eof_received",
                    "connection_lost",
                ]
                assert server.lost == [None]
            for client in clients:
                assert client.events == ["connection_made", "data_received", "connection_lost"]
                assert client.lost == [None]
            assert p.client.streams == {} and p.server_session.streams == {}
            assert not p.client.closed  # an idle session stays, for the next streams

    bounded(run, main())


def test_flow_control_holds_one_window_then_delivers_everything(run: Run) -> None:
    """A server protocol that paused reading holds at most WINDOW_SIZE; the client's writer is paused
    meanwhile, and after resume_reading all 2 MiB arrive in order and the writer resumes."""

    async def main() -> None:
        async with mux_pair(echo=False, pause=True) as p:
            client = Recorder()
            stream = p.client.open(client)
            payload = pattern(2 * MIB)
            stream.write(payload)
            assert client.events == ["connection_made", "pause_writing"]
            assert stream.get_write_buffer_size() == len(payload) - WINDOW_SIZE

            await until(lambda: len(p.server.accepted) == 1)
            server = p.server.accepted[0]
            held = server.stream
            peak = 0

            async def sample_until(done: Callable[[], bool]) -> None:
                nonlocal peak
                async with asyncio.timeout(5.0):
                    while not done():
                        peak = max(peak, held.held_size)
                        await asyncio.sleep(0)  # (every loop pass)
                peak = max(peak, held.held_size)

            await sample_until(lambda: held.held_size >= WINDOW_SIZE)
            loop = asyncio.get_running_loop()
            settle = loop.time() + 0.2
            await sample_until(lambda: loop.time() > settle)  # more would arrive now if it were sent
            assert peak == WINDOW_SIZE
            assert server.data == b"" and server.events == ["connection_made"]
            assert client.events == ["connection_made", "pause_writing"]
            assert stream.get_write_buffer_size() == len(payload) - WINDOW_SIZE

            server.transport.resume_reading()
            await sample_until(lambda: len(server.data) >= len(payload))
            assert peak == WINDOW_SIZE
            assert hashlib.sha256(server.data).hexdigest() == hashlib.sha256(payload).hexdigest()
            await until(lambda: "resume_writing" in client.events)
            assert client.events == ["connection_made", "pause_writing", "resume_writing"]
            assert stream.get_write_buffer_size() == 0
            assert not p.server_session.closed and not p.client.closed

    bounded(run, main())


def test_a_write_larger_than_a_frame_is_split(run: Run) -> None:
    """One write of more than MAX_FRAME bytes goes out as frames of at most MAX_FRAME; one of exactly
    MAX_FRAME as one frame; the bytes arrive intact."""

    async def main() -> None:
        async with mux_pair(echo=False) as p:
            writes = count_writes(p.client)
            client = Recorder()
            stream = p.client.open(client)
            exact, large = pattern(MAX_FRAME, seed=1), pattern(2 * MAX_FRAME + 123, seed=2)
            stream.write(exact)
            stream.write(large)
            await until(lambda: bool(writes.writes))
            sent = parse(b"".join(writes.writes))
            lengths = [(sid, kind, len(payload)) for sid, kind, payload in sent]
            assert lengths == [(1, DATA, 0)] + [(1, DATA, MAX_FRAME)] * 3 + [(1, DATA, 123)]
            assert b"".join(payload for _, _, payload in sent) == exact + large

            await until(lambda: len(p.server.accepted) == 1)
            server = p.server.accepted[0]
            await until(lambda: len(server.data) >= len(exact + large))
            assert bytes(server.data) == exact + large

    bounded(run, main())


def test_abort_resets_the_peer_stream_and_the_session_lives_on(run: Run) -> None:
    """abort(): the server's protocol loses the stream with ConnectionResetError (no eof); the other
    streams, and new ones, still work."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            a, b = Recorder(), Recorder()
            sa, sb = p.client.open(a), p.client.open(b)
            sa.write(b"a")
            sb.write(b"b")
            await until(lambda: a.data == b"a" and b.data == b"b")
            server_a = p.server.by_sid(1)

            sa.abort()
            assert sa.is_closing()
            await until(lambda: "connection_lost" in server_a.events)
            assert server_a.events == ["connection_made", "data_received", "connection_lost"]
            assert len(server_a.lost) == 1 and isinstance(server_a.lost[0], ConnectionResetError)
            await until(lambda: "connection_lost" in a.events)
            assert a.lost == [None]

            sb.write(b" still")
            c = Recorder()
            sc = p.client.open(c)
            sc.write(b"new")
            await until(lambda: b.data == b"b still" and c.data == b"new")
            assert sorted(p.client.streams) == sorted(p.server_session.streams) == [2, 3]
            assert "connection_lost" not in p.server.by_sid(2).events

    bounded(run, main())


@pytest.mark.parametrize(
    "bad",
    [HEAD.pack(1, DATA, MAX_FRAME + 1), HEAD.pack(1, 9, 0)],
    ids=["frame-too-long", "unknown-type"],
)
def test_malformed_input_ends_the_session_only(run: Run, bad: bytes) -> None:
    """A frame longer than MAX_FRAME, or of an unknown type, ends that session: its streams lose their
    connection with an error and the connection closes; the server takes new sessions as before."""

    async def main() -> None:
        async with mux_server(echo=True) as srv:
            async with raw_client(srv.port) as (reader, writer):
                writer.write(frame(1, DATA, b"hello"))
                await until(lambda: len(srv.accepted) == 1 and srv.accepted[0].data == b"hello")
                (session,) = srv.sessions
                victim = srv.accepted[0]

                writer.write(bad)
                await until(lambda: "connection_lost" in victim.events)
                assert len(victim.lost) == 1 and isinstance(victim.lost[0], ConnectionError)
                assert session.closed and session.streams == {}
                assert session.transport is not None and session.transport.is_closing()
                await read_to_end(reader)  # (returns: the server closed the connection)

            transport, client = await dial(srv.port)
            try:
                fresh = Recorder()
                client.open(fresh).write(b"after")
                await until(lambda: fresh.data == b"after")
                assert len(srv.sessions) == 2 and not srv.sessions[1].closed
            finally:
                transport.abort()

    bounded(run, main())


def test_frames_of_closed_ids_are_dropped_and_higher_ids_open_streams(run: Run) -> None:
    """After stream 1's CLOSE, DATA on id 1 is dropped (no second accept); DATA on id 3, above every id
    seen, opens a stream; DATA on id 2, below it, is dropped too."""

    async def main() -> None:
        async with mux_server(echo=False) as srv, raw_client(srv.port) as (_reader, writer):
            writer.write(frame(1, DATA, b"one"))
            await until(lambda: len(srv.accepted) == 1 and srv.accepted[0].data == b"one")
            first = srv.accepted[0]
            writer.write(frame(1, CLOSE))
            await until(lambda: "connection_lost" in first.events)
            assert first.events == ["connection_made", "data_received", "eof_received", "connection_lost"]
            assert first.lost == [None]

            writer.write(frame(1, DATA, b"late"))
            writer.write(frame(3, DATA, b"three"))
            writer.write(frame(2, DATA, b"two"))
            writer.write(frame(3, DATA, b"!"))  # (once it is here, the frames before it were read)
            await until(lambda: len(srv.accepted) == 2 and srv.accepted[1].data == b"three!")
            assert len(srv.accepted) == 2
            assert first.data == b"one"
            assert srv.accepted[1].stream.sid == 3
            (session,) = srv.sessions
            assert list(session.streams) == [3] and not session.closed

    bounded(run, main())


def test_losing_the_carrying_connection_fails_every_stream(run: Run) -> None:
    """The client closes the TCP connection under open streams: every stream's protocol, on both sides,
    gets connection_lost with an error."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            clients = [Recorder() for _ in range(3)]
            for client in clients:
                p.client.open(client).write(b"ping")
            await until(lambda: all(client.data == b"ping" for client in clients))
            servers = p.server.accepted
            assert len(servers) == 3

            p.transport.close()
            await until(lambda: all("connection_lost" in r.events for r in clients + servers))
            for recorder in clients + servers:
                assert len(recorder.lost) == 1
                assert isinstance(recorder.lost[0], ConnectionError), recorder.lost
            assert "eof_received" not in [event for r in clients + servers for event in r.events]
            await until(lambda: p.server_session.closed)
            assert p.client.closed and p.client.streams == {} and p.server_session.streams == {}

    bounded(run, main())


def test_goaway_makes_the_client_session_unusable(run: Run) -> None:
    """The server's go_away(): once the frame arrives the client opens no new streams there; the open
    stream keeps working, and the session closes when it ends."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            client, stream = await echoed(p.client, b"before")

            p.server_session.go_away()
            assert p.client.usable  # (the frame leaves at the end of this pass)
            await until(lambda: not p.client.usable)
            assert p.client.goaway and not p.client.closed

            stream.write(b" after")
            await until(lambda: client.data == b"before after")
            stream.close()
            await until(lambda: p.client.closed)

    bounded(run, main())


def test_client_sessions_dial_once_rotate_and_hand_over_plain_connections(run: Run) -> None:
    """ClientSessions: concurrent opens share one dial and one session; a new generation dials a new
    session and retires the old, which closes once its streams end (as all do after retire()); a dialled
    connection whose protocol is PLAIN_PENDING becomes the opener's own transport."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = ClientSessions()
        dials = Dials()

        async with mux_server(echo=True) as srv:
            key = (HOST, srv.port)

            dial_mux = dials.mux(srv.port)

            first = object()
            clients = [Recorder() for _ in range(5)]
            opened = await asyncio.gather(*(pool.open(c, HOST, srv.port, first, dial_mux) for c in clients))
            assert dials.calls == 1
            streams = [cast(mux.Stream, t) for t in opened]
            assert all(isinstance(t, mux.Stream) for t in opened)
            old = streams[0].session
            assert all(s.session is old for s in streams) and pool.sessions[key] == [old]
            assert sorted(s.sid for s in streams) == [1, 2, 3, 4, 5]
            assert [c.transport for c in clients] == opened
            for i, stream in enumerate(streams):
                stream.write(b"%d" % i)
            await until(lambda: all(c.data == b"%d" % i for i, c in enumerate(clients)))

            second = object()
            newer = Recorder()
            got = await pool.open(newer, HOST, srv.port, second, dial_mux)
            assert dials.calls == 2
            assert isinstance(got, mux.Stream) and got.session is not old
            assert pool.sessions[key] == [got.session]
            assert not old.usable and len(old.streams) == 5
            cast(asyncio.Transport, got).write(b"new")
            await until(lambda: newer.data == b"new")

            for stream in streams[:-1]:
                stream.close()
            assert old.transport is not None and not old.transport.is_closing()
            streams[-1].close()
            assert old.transport.is_closing()  # retired: closed with its last stream
            await until(lambda: old.closed)
            assert not got.session.closed and len(srv.sessions) == 2
            await until(lambda: srv.sessions[0].closed)

            pool.retire()  # (the cluster is gone): the session closes with its last stream
            assert pool.sessions == {} and not got.session.usable
            assert got.session.transport is not None and not got.session.transport.is_closing()
            cast(asyncio.Transport, got).close()
            await until(lambda: got.session.closed)
            assert newer.lost == [None]

        # A peer that does not multiplex: dial hands back a plain connection with PLAIN_PENDING on it.
        plain: list[Recorder] = []

        def plain_echo() -> Recorder:
            plain.append(Recorder(echo=True))
            return plain[-1]

        server = await loop.create_server(plain_echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            dial_plain = dials.plain(port)

            client = Recorder()
            transport = await pool.open(client, HOST, port, first, dial_plain)
            assert dials.calls == 3
            assert not isinstance(transport, mux.Stream)
            assert transport.get_protocol() is client and client.transport is transport
            assert client.events == ["connection_made"]
            assert (HOST, port) not in pool.sessions
            client.transport.write(b"unframed")
            await until(lambda: client.data == b"unframed")
            assert plain[0].data == b"unframed"  # the bytes themselves, no frame head
            transport.close()
            await until(lambda: client.lost == [None])
        finally:
            server.close()
            for recorder in plain:
                if recorder._transport is not None:  # (an accept the server had not finished yet)
                    recorder.transport.abort()
            await server.wait_closed()

    bounded(run, main())


def test_more_data_than_the_window_ends_the_session(run: Run) -> None:
    """A client sending past WINDOW_SIZE on a stream whose protocol paused reading breaks the rules:
    exactly one window is held, one byte more ends the session."""

    async def main() -> None:
        async with mux_server(echo=False, pause=True) as srv, raw_client(srv.port) as (reader, writer):
            chunk = pattern(MAX_FRAME)
            writer.write(frame(1, DATA, chunk) * (WINDOW_SIZE // MAX_FRAME))
            await until(lambda: len(srv.accepted) == 1 and srv.accepted[0].stream.held_size == WINDOW_SIZE)
            (session,) = srv.sessions
            server = srv.accepted[0]
            assert not session.closed and server.data == b"" and server.events == ["connection_made"]

            writer.write(frame(1, DATA, b"x"))
            await until(lambda: session.closed)
            assert server.events == ["connection_made", "connection_lost"]
            assert len(server.lost) == 1 and isinstance(server.lost[0], ConnectionError)
            assert session.streams == {}
            assert await read_to_end(reader) == b""  # (nothing was sent: no credit was given)

    bounded(run, main())


def test_a_stream_first_written_after_a_newer_one_reaches_the_server(run: Run) -> None:
    """A stream opened but first written after a stream opened later (a pooled connection opened for
    a request, then used for a later one) still reaches the server."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            older, newer = Recorder(), Recorder()
            s_older = p.client.open(older)  # id 1
            s_newer = p.client.open(newer)  # id 2
            s_newer.write(b"newer")
            await until(lambda: newer.data == b"newer")
            s_older.write(b"older")
            with contextlib.suppress(TimeoutError):
                await until(lambda: older.data == b"older", limit=1.0)
            assert older.data == b"older", (
                "stream 1's bytes never reached the server (server streams: "
                f"{sorted(p.server_session.streams)}, last id seen: {p.server_session.last_id})"
            )

    bounded(run, main())


def test_concurrent_opens_to_a_peer_that_does_not_multiplex_all_get_a_connection(run: Run) -> None:
    """Many requests at once to a peer without `pillion-mux/1` (an older Pillion): each open gets a
    plain connection of its own, none fails."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = ClientSessions()
        dials = Dials()
        plain: list[Recorder] = []

        def plain_echo() -> Recorder:
            plain.append(Recorder(echo=True))
            return plain[-1]

        server = await loop.create_server(plain_echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        opened: list[asyncio.BaseTransport] = []
        try:
            dial_plain = dials.plain(port)

            clients = [Recorder() for _ in range(8)]
            got = await asyncio.gather(
                *(pool.open(c, HOST, port, None, dial_plain) for c in clients), return_exceptions=True
            )
            opened = [t for t in got if not isinstance(t, BaseException)]  # (uvloop's are no subclasses)
            failed = [repr(e) for e in got if isinstance(e, BaseException)]
            assert not failed, (
                f"{len(failed)} of {len(clients)} opens failed after {dials.calls} dials: {failed[0]}"
            )
            assert dials.calls == len(clients) and len({id(t) for t in opened}) == len(clients)
            assert [c.transport for c in clients] == opened
        finally:
            for transport in opened:
                transport.close()
            server.close()
            for recorder in plain:
                if recorder._transport is not None:  # (an accept the server had not finished yet)
                    recorder.transport.abort()
            await server.wait_closed()
            await asyncio.sleep(0)

    bounded(run, main())


async def read_until_closed(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes | None:
    """Everything until the peer closes (as read_to_end), or None if it has not closed within `limit`."""
    try:
        async with asyncio.timeout(limit):
            return await read_to_end(reader)
    except TimeoutError:
        return None


def test_an_exception_in_one_stream_protocol_resets_that_stream_only(run: Run) -> None:
    """A server stream's protocol raising in data_received costs that stream (reset to the client), not
    the session: the other streams' bytes in the same read and in later ones (even when the failing
    frame's read ended inside a later frame) arrive intact and in order, and bytes of the failed stream
    that look like a frame of another stream never reach it."""

    async def main() -> None:
        async with (
            mux_server(protocol=Exploding) as srv,
            raw_client(srv.port) as (reader, writer),
        ):
            writer.write(frame(1, DATA, b"one ") + frame(2, DATA, b"two ") + frame(3, DATA, b"three "))
            await until(lambda: len(srv.accepted) == 3 and all(r.data for r in srv.accepted))
            (session,) = srv.sessions
            s1, s2, s3 = (srv.by_sid(sid) for sid in (1, 2, 3))

            # One write (one read, on loopback): the failing frame, frames of the other streams, a frame of
            # the failed stream whose payload looks like a frame of stream 2, then half a frame of stream 2.
            tail = frame(2, DATA, b"-split-") + frame(3, DATA, b"c")
            cut = HEAD_SIZE + 3
            writer.write(
                frame(1, DATA, b"BOOM")
                + frame(2, DATA, b"a")
                + frame(3, DATA, b"b")
                + frame(1, DATA, b"." * 7 + frame(2, DATA, b"INJECTED"))
                + tail[:cut]
            )
            with contextlib.suppress(TimeoutError):
                await until(lambda: s2.data.endswith(b"a") and s3.data.endswith(b"b"), limit=2.0)
            assert (bytes(s2.data), bytes(s3.data)) == (b"two a", b"three b"), (
                f"the other streams' bytes of the failing read: {bytes(s2.data)!r}, {bytes(s3.data)!r}"
            )
            writer.write(tail[cut:] + frame(2, DATA, b"end"))  # (the next read starts inside a frame)
            with contextlib.suppress(TimeoutError):
                await until(lambda: s2.data.endswith(b"end") and s3.data.endswith(b"c"), limit=2.0)
            assert bytes(s2.data) == b"two a-split-end"
            assert bytes(s3.data) == b"three bc"

            assert bytes(s1.data) == b"one BOOM"
            await until(lambda: "connection_lost" in s1.events)
            assert s1.events == ["connection_made", "data_received", "connection_lost"]
            async with asyncio.timeout(5.0):
                assert await reader.readexactly(HEAD_SIZE) == frame(1, RESET)
            assert not session.closed and sorted(session.streams) == [2, 3]
            for recorder in (s2, s3):
                assert recorder.events == ["connection_made", "data_received"]

    bounded(run, main())


def test_many_small_frames_held_while_paused_are_delivered_in_one_call(run: Run) -> None:
    """20,000 one-byte DATA frames received while the stream's protocol paused reading are held, and
    after resume_reading() reach the protocol as one data_received call, every byte in order."""

    async def main() -> None:
        count = 20_000
        payload = pattern(count)
        async with mux_server(echo=False, pause=True) as srv, raw_client(srv.port) as (_reader, writer):
            writer.write(frame(1, DATA) + b"".join(frame(1, DATA, payload[i : i + 1]) for i in range(count)))
            await until(lambda: len(srv.accepted) == 1 and srv.accepted[0].stream.held_size == count)
            server = srv.accepted[0]
            assert server.data == b"" and server.events == ["connection_made"]

            server.transport.resume_reading()
            await until(lambda: len(server.data) >= count)
            assert bytes(server.data) == payload
            assert server.sizes == [count], f"{len(server.sizes)} data_received calls"
            assert server.events == ["connection_made", "data_received"]
            assert server.stream.held_size == 0

    bounded(run, main())


def test_more_than_max_streams_at_once_ends_the_session(run: Run) -> None:
    """A client may have MAX_STREAMS streams open at once on a server session (a closed one frees its
    place); the stream beyond that ends the session: every stream lost with an error, the connection
    closed, the extra stream never accepted."""

    async def main() -> None:
        limit = mux.MAX_STREAMS
        async with mux_server(echo=False) as srv, raw_client(srv.port) as (reader, writer):
            writer.write(b"".join(frame(sid, DATA, b"x") for sid in range(1, limit + 1)))
            await until(lambda: len(srv.accepted) == limit and all(r.data == b"x" for r in srv.accepted))
            (session,) = srv.sessions
            assert len(session.streams) == limit

            writer.write(frame(1, CLOSE) + frame(limit + 1, DATA, b"x"))  # one ends, one more begins
            await until(lambda: len(srv.accepted) == limit + 1 and srv.accepted[-1].data == b"x")
            assert not session.closed and len(session.streams) == limit

            writer.write(frame(limit + 2, DATA, b"x"))  # one too many
            assert await read_until_closed(reader) is not None, (
                f"the session goes on with {len(session.streams)} streams"
            )
            assert session.closed and session.streams == {}
            assert len(srv.accepted) == limit + 1  # (the one too many was never accepted)
            await until(lambda: all("connection_lost" in r.events for r in srv.accepted))
            assert srv.accepted[0].lost == [None]  # (the one the client closed)
            for recorder in srv.accepted[1:]:
                assert len(recorder.lost) == 1 and isinstance(recorder.lost[0], ConnectionError)

    bounded(run, main())


def test_a_stream_opened_after_goaway_is_reset_and_not_accepted(run: Run) -> None:
    """A stream the client opens after the server's go_away() (before the GOAWAY reached it) is reset:
    its protocol loses the connection with an error and the server's accept factory is not called for
    it. The stream under way is still served, and the session closes when it ends."""

    async def main() -> None:
        async with mux_pair(echo=True) as p:
            older, s_older = await echoed(p.client, b"before")

            p.server_session.go_away()
            late = Recorder()
            p.client.open(late).write(b"late")  # (in the same pass: it leaves before the GOAWAY arrives)
            with contextlib.suppress(TimeoutError):
                await until(lambda: "connection_lost" in late.events, limit=3.0)
            assert late.events == ["connection_made", "connection_lost"], late.events
            assert len(late.lost) == 1 and isinstance(late.lost[0], ConnectionResetError)
            assert len(p.server.accepted) == 1  # no accept for the late stream
            assert not p.client.usable

            s_older.write(b" after")
            await until(lambda: older.data == b"before after")
            assert not p.server_session.closed
            s_older.close()
            await until(lambda: p.server_session.closed and p.client.closed)
            assert older.lost == [None]

    bounded(run, main())


def test_goaway_closes_a_server_session_without_streams(run: Run) -> None:
    """go_away() on a server session whose streams have all ended sends GOAWAY and closes the
    connection, even to a client that would not close it."""

    async def main() -> None:
        async with mux_server(echo=False) as srv, raw_client(srv.port) as (reader, writer):
            writer.write(frame(1, DATA, b"x") + frame(1, CLOSE))
            await until(lambda: len(srv.accepted) == 1 and "connection_lost" in srv.accepted[0].events)
            (session,) = srv.sessions
            assert session.streams == {} and not session.closed

            session.go_away()
            assert await read_until_closed(reader) == frame(0, GOAWAY), "the connection stays open"
            await until(lambda: session.closed)

    bounded(run, main())


def test_a_thousand_concurrent_opens_share_as_few_sessions_as_fit(run: Run) -> None:
    """1000 concurrent ClientSessions.open calls to one endpoint all get a stream of their own (none
    raises), on ceil(1000 / MAX_STREAMS) sessions, each stream carrying its own bytes."""

    async def main() -> None:
        pool = ClientSessions()
        count = 1000
        dials = Dials()
        async with mux_server(echo=True) as srv:
            dial_mux = dials.mux(srv.port)

            clients = [Recorder() for _ in range(count)]
            got = await asyncio.gather(
                *(pool.open(c, HOST, srv.port, None, dial_mux) for c in clients), return_exceptions=True
            )
            failed = [repr(e) for e in got if isinstance(e, BaseException)]
            assert not failed, f"{len(failed)} of {count} opens failed after {dials.calls} dials: {failed[0]}"
            streams = [c.stream for c in clients]  # (each a mux.Stream: the transport its open returned)
            assert [id(s) for s in streams] == [id(t) for t in got]
            assert len({(id(s.session), s.sid) for s in streams}) == count
            used = {id(s.session): s.session for s in streams}
            expected = math.ceil(count / mux.MAX_STREAMS)
            assert len(used) == expected and dials.calls == expected
            assert all(len(session.streams) <= mux.MAX_STREAMS for session in used.values())

            for i, stream in enumerate(streams):
                stream.write(b"<%d>" % i)
            await until(lambda: all(c.data == b"<%d>" % i for i, c in enumerate(clients)))
            assert len(srv.accepted) == count

            pool.retire()
            for stream in streams:
                stream.close()
            await until(lambda: all(session.closed for session in used.values()))

    bounded(run, main())


def test_a_session_closed_by_the_peer_leaves_the_pool(run: Run) -> None:
    """A pooled client session whose connection the peer closes is removed from ClientSessions.sessions
    at once (not at the next open for that endpoint); the next open dials a new one. The gauge of open
    sessions follows, the retired one included until it closes."""

    async def main() -> None:
        gauge = Gauge()
        pool = ClientSessions(gauge)
        async with mux_server(echo=True) as srv:
            key = (HOST, srv.port)

            async def dial_mux() -> asyncio.BaseTransport:
                transport, _ = await dial(srv.port)
                return transport

            first = Recorder()
            stream = cast(mux.Stream, await pool.open(first, HOST, srv.port, None, dial_mux))
            session = stream.session
            assert pool.sessions == {key: [session]}
            assert gauge.value == 1 and pool.count(HOST, srv.port) == (1, 1)
            await until(lambda: len(srv.sessions) == 1)
            server_transport = srv.sessions[0].transport
            assert server_transport is not None

            server_transport.close()
            await until(lambda: session.closed)
            assert len(first.lost) == 1 and isinstance(first.lost[0], ConnectionError)
            assert pool.sessions == {}, "a dead session stays registered"
            assert gauge.value == 0 and pool.count(HOST, srv.port) == (0, 0)

            second = Recorder()
            again = cast(mux.Stream, await pool.open(second, HOST, srv.port, None, dial_mux))
            assert again.session is not session and pool.sessions == {key: [again.session]}
            again.write(b"again")
            await until(lambda: second.data == b"again")
            pool.retire()
            assert gauge.value == 1  # retiring: open until its last stream ends
            again.close()
            await until(lambda: again.session.closed)
            assert gauge.value == 0

    bounded(run, main())


def test_a_session_dialled_after_retire_is_closed_at_once(run: Run) -> None:
    """The cluster retired (a reload) while a dial is under way for a waiter that gave up: the session it
    makes is closed as soon as it is made, and not pooled."""

    async def main() -> None:
        gauge = Gauge()
        pool = ClientSessions(gauge)
        async with mux_server(echo=True) as srv:
            key = (HOST, srv.port)
            go = asyncio.Event()
            made: list[Session] = []

            async def slow_dial() -> asyncio.BaseTransport:
                await go.wait()
                transport, session = await dial(srv.port)
                made.append(session)
                return transport

            waiter = asyncio.ensure_future(pool.open(Recorder(), HOST, srv.port, None, slow_dial))
            await until(lambda: key in pool.dialling)
            dialling = pool.dialling[key]
            waiter.cancel()  # (its connect timeout): the dial goes on
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            pool.retire()

            go.set()
            got = await dialling  # (the dial's task: it registered, or closed, the session first)
            (session,) = made
            assert session.streams == {}
            try:
                assert got.is_closing(), "a session dialled after retire() stays open"
                assert pool.sessions == {}
                await until(lambda: session.closed)
                assert gauge.value == 0
                await until(lambda: len(srv.sessions) == 1 and srv.sessions[0].closed)
            finally:
                got.close()

    bounded(run, main())


def test_a_closed_stream_gets_nothing_more_yet_its_waiting_bytes_and_close_go_out(run: Run) -> None:
    """A server stream closed while some of its bytes wait for credit: DATA the client sends afterwards
    is not delivered to its protocol but is still credited (the client's upload all leaves), the waiting
    bytes and then the CLOSE reach the client once it reads; and on another stream, the client's CLOSE
    after the server's close() is no eof_received for the server's protocol."""

    async def main() -> None:
        async with mux_pair(echo=False) as p:
            response = pattern(WINDOW_SIZE + 10, seed=1)
            client = Recorder(pause=True)  # (reads nothing, so gives no credit, until resumed)
            c_stream = p.client.open(client)
            c_stream.write(b"req")
            await until(lambda: len(p.server.accepted) == 1 and p.server.accepted[0].data == b"req")
            server = p.server.accepted[0]
            server.transport.write(response)
            server.transport.close()
            assert server.stream.is_closing() and server.stream.get_write_buffer_size() == 10
            await until(lambda: c_stream.held_size == WINDOW_SIZE)

            upload = pattern(3 * WINDOW_SIZE, seed=2)  # more than one window: it needs the server's credit
            c_stream.write(upload)
            with contextlib.suppress(TimeoutError):
                await until(lambda: c_stream.get_write_buffer_size() == 0, limit=3.0)
            assert c_stream.get_write_buffer_size() == 0, (
                f"{c_stream.get_write_buffer_size()} bytes of the upload wait for credit the closed stream "
                "never gives"
            )
            assert server.data == b"req", f"{len(server.data) - 3} bytes delivered after close()"
            assert server.events == ["connection_made", "data_received"]
            assert not server.stream.closed and server.stream.get_write_buffer_size() == 10

            c_stream.resume_reading()
            await until(lambda: "connection_lost" in client.events)
            assert bytes(client.data) == response
            assert [e for e in client.events if not e.endswith("_writing")] == [
                "connection_made",
                "data_received",
                "eof_received",
                "connection_lost",
            ]
            assert client.lost == [None]
            await until(lambda: "connection_lost" in server.events)
            assert server.events == ["connection_made", "data_received", "connection_lost"]
            assert server.lost == [None]

            # The client's CLOSE after the server's close(): the server's protocol hears no eof.
            other = Recorder(pause=True)
            o_stream = p.client.open(other)
            o_stream.write(b"req2")
            await until(lambda: len(p.server.accepted) == 2 and p.server.accepted[1].data == b"req2")
            server2 = p.server.accepted[1]
            server2.transport.write(response)
            server2.transport.close()
            await until(lambda: o_stream.held_size == WINDOW_SIZE)
            o_stream.write(b"more")
            o_stream.close()
            await until(lambda: "connection_lost" in server2.events)
            assert server2.events == ["connection_made", "data_received", "connection_lost"]
            assert server2.data == b"req2" and server2.lost == [None]
            assert p.server_session.streams == {} and p.client.streams == {}

    bounded(run, main())


def test_a_closing_session_takes_no_new_stream(run: Run) -> None:
    """Session.close() (as the idle timer calls it) makes the session unusable at once: an open in the
    same loop pass dials a new session rather than putting its stream on the closing one."""

    async def main() -> None:
        pool = ClientSessions()
        dials = Dials()
        async with mux_server(echo=True) as srv:
            key = (HOST, srv.port)

            dial_mux = dials.mux(srv.port)

            first = Recorder()
            stream = cast(mux.Stream, await pool.open(first, HOST, srv.port, None, dial_mux))
            session = stream.session
            stream.close()
            await until(lambda: first.lost == [None])
            assert session.usable and pool.sessions == {key: [session]}

            session.close()
            assert not session.usable
            second = Recorder()
            again = cast(mux.Stream, await pool.open(second, HOST, srv.port, None, dial_mux))
            assert again.session is not session and dials.calls == 2
            again.write(b"fresh")
            await until(lambda: second.data == b"fresh")
            await until(lambda: session.closed)
            assert pool.sessions == {key: [again.session]}
            assert second.events == ["connection_made", "data_received"]
            pool.retire()
            again.close()
            await until(lambda: again.session.closed)

    bounded(run, main())


def test_a_full_session_transport_does_not_pause_its_streams(run: Run) -> None:
    """The session's own transport filling up (the peer not reading) does not pause the streams'
    protocols: each stream is bounded by its own window, and one whose bytes all had credit is never
    told to pause writing (nor to resume)."""

    async def main() -> None:
        async with mux_pair(echo=False) as p:
            server_transport = p.server_session.transport
            assert server_transport is not None
            server_transport.pause_reading()
            clients = [Recorder() for _ in range(40)]  # 10 MiB: more than the kernel's buffers hold
            payloads = [pattern(WINDOW_SIZE, seed=i) for i in range(len(clients))]
            for client, payload in zip(clients, payloads, strict=True):
                p.client.open(client).write(payload)  # (within the stream's credit: nothing waits)
            quiet = Recorder()
            p.client.open(quiet).write(b"q")
            await until(lambda: p.client.write_paused)
            await asyncio.sleep(0)
            assert [c.events for c in [*clients, quiet]] == [["connection_made"]] * (len(clients) + 1)

            server_transport.resume_reading()
            await until(lambda: not p.client.write_paused)
            await until(lambda: len(p.server.accepted) == len(clients) + 1)
            await until(lambda: all(len(p.server.by_sid(i + 1).data) == WINDOW_SIZE for i in range(40)))
            for i, payload in enumerate(payloads):
                assert p.server.by_sid(i + 1).data == payload
            assert [c.events for c in [*clients, quiet]] == [["connection_made"]] * (len(clients) + 1)

    bounded(run, main())
