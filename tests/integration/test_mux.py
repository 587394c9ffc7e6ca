"""`pillion-mux/1` (pillion.tls.mux) on real loopback TCP connections.

A `Session` works over any asyncio transport, so here it rides plain TCP: the server is
`loop.create_server` with a server Session per connection (its `accept` factory making a `Recorder` per
stream), the client either a client Session from `loop.create_connection` or a raw socket writing frames
by hand (`frame`), for the input a conforming client never sends. Each test runs once per loop kind (the
`run` fixture: asyncio, uvloop), bounded by LIMIT seconds, and fails if anything reached the loop's
exception handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pillion.testing.loops import Run, until
from pillion.tls import mux
from pillion.tls.mux import CLOSE, DATA, HEAD, HEAD_SIZE, MAX_FRAME, WINDOW_SIZE, ClientSessions, Session

HOST = "127.0.0.1"
LIMIT = 10.0  # seconds any one test may take
MIB = 1024 * 1024


class Recorder(asyncio.Protocol):
    """Records the callbacks in order (consecutive data_received as one) and the bytes received; with
    `echo`, writes back what it gets; with `pause`, pauses reading as soon as it has its transport."""

    def __init__(self, *, echo: bool = False, pause: bool = False) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.lost: list[Exception | None] = []
        self.echo = echo
        self.pause = pause
        self._transport: asyncio.Transport | None = None

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    @property
    def stream(self) -> mux.Stream:
        """The transport as the mux stream it is (for the id and the stream's own state)."""
        assert isinstance(self._transport, mux.Stream)
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.events.append("connection_made")
        if self.pause:
            self._transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.events[-1] != "data_received":
            self.events.append("data_received")
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.events.append("eof_received")
        return False

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("connection_lost")
        self.lost.append(exc)


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


def bounded(run: Run, coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on the test's loop, failing it after LIMIT seconds or if the loop's exception handler
    was called (an error raised out of a callback, an unretrieved task exception)."""

    async def main() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        async with asyncio.timeout(LIMIT):
            await coro
        assert not errors, f"reported to the loop's exception handler: {errors}"

    run(main())


@dataclass
class MuxServer:
    port: int
    sessions: list[Session] = field(default_factory=list)  # one per accepted connection
    accepted: list[Recorder] = field(default_factory=list)  # one per stream the clients opened

    def by_sid(self, sid: int) -> Recorder:
        (found,) = [r for r in self.accepted if r.stream.sid == sid]
        return found


@contextlib.asynccontextmanager
async def mux_server(*, echo: bool = True, pause: bool = False) -> AsyncIterator[MuxServer]:
    """A loopback listener whose connections carry server Sessions, their streams' protocols Recorders
    (echoing, or paused); every session aborted and the listener closed after."""
    loop = asyncio.get_running_loop()
    sessions: list[Session] = []
    accepted: list[Recorder] = []

    def accept() -> asyncio.Protocol:
        recorder = Recorder(echo=echo, pause=pause)
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
            await asyncio.sleep(0)
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
            client = Recorder()
            stream = p.client.open(client)
            stream.write(b"before")
            await until(lambda: client.data == b"before")

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
        dials = 0

        async with mux_server(echo=True) as srv:
            key = (HOST, srv.port)

            async def dial_mux() -> asyncio.BaseTransport:
                nonlocal dials
                dials += 1
                transport, _ = await dial(srv.port)
                return transport

            first = object()
            clients = [Recorder() for _ in range(5)]
            opened = await asyncio.gather(*(pool.open(c, HOST, srv.port, first, dial_mux) for c in clients))
            assert dials == 1
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
            assert dials == 2
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

            async def dial_plain() -> asyncio.BaseTransport:
                nonlocal dials
                dials += 1
                transport, _ = await loop.create_connection(lambda: mux.PLAIN_PENDING, HOST, port)
                return transport

            client = Recorder()
            transport = await pool.open(client, HOST, port, first, dial_plain)
            assert dials == 3
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
        dials = 0
        plain: list[Recorder] = []

        def plain_echo() -> Recorder:
            plain.append(Recorder(echo=True))
            return plain[-1]

        server = await loop.create_server(plain_echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        opened: list[asyncio.BaseTransport] = []
        try:

            async def dial_plain() -> asyncio.BaseTransport:
                nonlocal dials
                dials += 1
                transport, _ = await loop.create_connection(lambda: mux.PLAIN_PENDING, HOST, port)
                return transport

            clients = [Recorder() for _ in range(8)]
            got = await asyncio.gather(
                *(pool.open(c, HOST, port, None, dial_plain) for c in clients), return_exceptions=True
            )
            opened = [t for t in got if not isinstance(t, BaseException)]  # (uvloop's are no subclasses)
            failed = [repr(e) for e in got if isinstance(e, BaseException)]
            assert not failed, (
                f"{len(failed)} of {len(clients)} opens failed after {dials} dials: {failed[0]}"
            )
            assert dials == len(clients) and len({id(t) for t in opened}) == len(clients)
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
