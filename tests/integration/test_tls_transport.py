"""TlsTransport (pillion.tls.transport) on real loopback sockets and real TLS handshakes.

The server side comes from `accept_server` on a socket accepted from a listening socket made here, the
client side from `open_client`; both use the mesh contexts production uses (pillion.tls.contexts), with
SVIDs from the project's own CA. Each test runs once per loop kind (the `run` fixture: asyncio, uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from pillion.testing.loops import Run, bounded, until
from pillion.testing.protocols import RecordingProtocol as Recorder
from pillion.tls import contexts
from pillion.tls.ca import init_ca, issue_svid
from pillion.tls.transport import TlsTransport, accept_server, open_client

HOST = "127.0.0.1"
A_ID = "spiffe://example.org/ns/t/sa/a"
B_ID = "spiffe://example.org/ns/t/sa/b"
MIB = 1024 * 1024


@dataclass
class Mesh:
    client: ssl.SSLContext  # A's SVID
    server: ssl.SSLContext  # B's SVID, a client certificate required
    no_cert: ssl.SSLContext  # trusts the CA, presents no certificate
    client_der: bytes  # A's certificate


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca")
    a = issue_svid(root / "ca", A_ID, root / "a")
    b = issue_svid(root / "ca", B_ID, root / "b")
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname = False
    no_cert.load_verify_locations(cafile=str(a.bundle))
    return Mesh(
        contexts.mesh_client(str(a.cert), str(a.key), str(a.bundle)),
        contexts.mesh_server(str(b.cert), str(b.key), str(b.bundle)),
        no_cert,
        ssl.PEM_cert_to_DER_cert(a.cert.read_text()),
    )


def pattern(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@contextlib.contextmanager
def listening() -> Iterator[socket.socket]:
    with socket.socket() as lsock:
        lsock.bind((HOST, 0))
        lsock.listen(8)
        lsock.setblocking(False)
        yield lsock


async def accepted(lsock: socket.socket) -> socket.socket:
    conn, _ = await asyncio.get_running_loop().sock_accept(lsock)
    conn.setblocking(False)
    return conn


@contextlib.asynccontextmanager
async def tls_pair(
    mesh: Mesh, server: Recorder, client: Recorder
) -> AsyncIterator[tuple[TlsTransport, TlsTransport]]:
    """A server transport (accept_server) and a client transport (open_client) joined; both aborted after."""
    with listening() as lsock:

        async def serve() -> TlsTransport:
            return await accept_server(await accepted(lsock), mesh.server, lambda: server, 5)

        port = lsock.getsockname()[1]
        ends = await asyncio.gather(
            serve(), open_client(lambda: client, HOST, port, mesh.client, None), return_exceptions=True
        )
        made = [end for end in ends if isinstance(end, TlsTransport)]
        try:
            for end in ends:
                if isinstance(end, BaseException):
                    raise end
            yield made[0], made[1]
        finally:
            for transport in made:
                transport.abort()
            await asyncio.sleep(0)  # (connection_lost, called soon)


def test_round_trip_and_extra_info(mesh: Mesh, run: Run) -> None:
    """Bytes go through both ways intact; extra info names the peer, its certificate and the TLS state."""

    async def main() -> None:
        server, client = Recorder(echo=True), Recorder()
        async with tls_pair(mesh, server, client) as (st, ct):
            sent = pattern(100_000)
            ct.write(sent[:1000])
            ct.writelines([sent[1000:50_000], sent[50_000:]])
            await until(lambda: len(client.data) >= len(sent))
            assert bytes(client.data) == sent
            assert server.events == client.events == ["connection_made", "data_received"]

            assert st.get_extra_info("ssl_object").getpeercert(binary_form=True) == mesh.client_der
            host, port = st.get_extra_info("peername")
            assert (host, port) == ct.get_extra_info("sockname") and host == HOST
            assert ct.get_extra_info("peername") == st.get_extra_info("sockname")
            assert st.get_extra_info("sslcontext") is mesh.server
            assert isinstance(st.get_extra_info("socket"), ssl.SSLSocket)
            assert ("URI", B_ID) in ct.get_extra_info("peercert")["subjectAltName"]
            assert ct.get_extra_info("cipher")[1] == "TLSv1.3"
            assert st.get_extra_info("nothing", "default") == "default"

    bounded(run, main())


def test_backpressure_pauses_and_resumes_the_writer_and_keeps_order(mesh: Mesh, run: Run) -> None:
    """Past the high-water mark the writer is paused, below low resumed; every byte arrives in order."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (st, ct):
            ct.pause_reading()
            st.set_write_buffer_limits(high=64 * 1024)
            assert st.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            payload = pattern(8 * MIB)
            for at in range(0, len(payload), 64 * 1024):
                st.write(payload[at : at + 64 * 1024])
            assert server.events == ["connection_made", "pause_writing"]
            assert st.get_write_buffer_size() > 64 * 1024

            await asyncio.sleep(0.1)
            assert client.data == b""  # paused: nothing handed over, though the peer wrote
            ct.resume_reading()
            await until(lambda: len(client.data) >= len(payload))
            assert hashlib.sha256(client.data).digest() == hashlib.sha256(payload).digest()
            assert server.events == ["connection_made", "pause_writing", "resume_writing"]
            assert st.get_write_buffer_size() == 0

    bounded(run, main())


def test_close_sends_what_is_buffered_then_ends_the_stream(mesh: Mesh, run: Run) -> None:
    """close() with buffered data: the peer gets all of it, then end of stream; connection_lost(None)."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (st, _ct):
            payload = pattern(8 * MIB)
            st.write(payload)
            assert st.get_write_buffer_size() > 0  # more than the socket buffers take at once
            st.close()
            assert st.is_closing()
            st.write(b"after close")  # ignored
            await until(lambda: "connection_lost" in client.events)
            assert bytes(client.data) == payload
            assert client.events == ["connection_made", "data_received", "eof_received", "connection_lost"]
            assert client.lost == [None]
            await until(lambda: "connection_lost" in server.events)
            assert server.lost == [None] and st.get_write_buffer_size() == 0

    bounded(run, main())


def test_abort_drops_the_buffer_and_ends_at_once(mesh: Mesh, run: Run) -> None:
    """abort(): connection_lost(None) promptly, later writes ignored, buffered bytes never sent."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (st, _ct):
            payload = pattern(8 * MIB)
            st.write(payload)
            assert st.get_write_buffer_size() > 0
            st.abort()
            assert st.is_closing() and st.get_write_buffer_size() == 0
            st.write(b"after abort")  # ignored, no error
            st.writelines([b"after", b"abort"])
            await until(lambda: "connection_lost" in server.events, limit=1.0)
            assert server.lost == [None]
            await until(lambda: "connection_lost" in client.events)
            assert len(client.data) < len(payload)
            assert client.data == payload[: len(client.data)]

    bounded(run, main())


def test_peer_close_is_eof_then_connection_lost(mesh: Mesh, run: Run) -> None:
    """The client closes (close_notify): the server gets eof_received, then connection_lost(None)."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (st, ct):
            ct.write(b"last words")
            ct.close()
            await until(lambda: "connection_lost" in server.events)
            assert server.events == ["connection_made", "data_received", "eof_received", "connection_lost"]
            assert server.data == b"last words" and server.lost == [None] and st.is_closing()
            await until(lambda: "connection_lost" in client.events)
            assert client.lost == [None]

    bounded(run, main())


def test_peer_fin_without_close_notify_is_eof(mesh: Mesh, run: Run) -> None:
    """The client aborts (a TCP FIN, no close_notify): the server still sees end of stream, not an error."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (_st, ct):
            ct.abort()
            await until(lambda: "connection_lost" in server.events)
            assert server.events == ["connection_made", "eof_received", "connection_lost"]
            assert server.lost == [None]

    bounded(run, main())


def test_eof_received_returning_true_keeps_the_transport_open(mesh: Mesh, run: Run) -> None:
    """A protocol whose eof_received returns True keeps the transport until it closes it itself."""

    async def main() -> None:
        server, client = Recorder(keep_open=True), Recorder()
        async with tls_pair(mesh, server, client) as (st, ct):
            ct.close()
            await until(lambda: "eof_received" in server.events)
            await asyncio.sleep(0.05)
            assert server.events == ["connection_made", "eof_received"] and not st.is_closing()
            st.close()
            await until(lambda: "connection_lost" in server.events)
            assert server.lost == [None]

    bounded(run, main())


def test_pause_reading_holds_data_until_resumed(mesh: Mesh, run: Run) -> None:
    """While reading is paused no data_received happens though the peer wrote; after resume it does."""

    async def main() -> None:
        server, client = Recorder(), Recorder()
        async with tls_pair(mesh, server, client) as (st, ct):
            st.pause_reading()
            st.pause_reading()  # twice: no harm
            sent = pattern(200_000)
            ct.write(sent)
            await asyncio.sleep(0.2)
            assert server.events == ["connection_made"] and server.data == b""
            st.resume_reading()
            await until(lambda: len(server.data) >= len(sent))
            assert bytes(server.data) == sent

    bounded(run, main())


def test_no_half_close(mesh: Mesh, run: Run) -> None:
    """TLS cannot half-close: can_write_eof() is False and write_eof() raises NotImplementedError."""

    async def main() -> None:
        async with tls_pair(mesh, Recorder(), Recorder()) as (st, ct):
            assert not st.can_write_eof() and not ct.can_write_eof()
            with pytest.raises(NotImplementedError):
                st.write_eof()

    bounded(run, main())


# -- refused handshakes ----------------------------------------------------------------------------


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def refused(lsock: socket.socket, mesh: Mesh, within: float = 5) -> tuple[BaseException, bool]:
    """Accept one connection and run accept_server on it; the error it raised and whether the accepted
    socket was still open right after."""
    conn = await accepted(lsock)
    fd = conn.fileno()
    try:
        transport = await accept_server(conn, mesh.server, Recorder, within)
    except Exception as exc:
        return exc, is_open(fd)
    transport.abort()
    raise AssertionError("the handshake was accepted")


async def recv_all(sock: socket.socket) -> bytes:
    """Everything the peer sends until its FIN (ConnectionResetError if it resets instead)."""
    loop, got = asyncio.get_running_loop(), bytearray()
    while data := await loop.sock_recv(sock, 65536):
        got += data
    return bytes(got)


@contextlib.asynccontextmanager
async def raw_client(lsock: socket.socket) -> AsyncIterator[socket.socket]:
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, lsock.getsockname())
        yield sock


def test_client_without_certificate_is_refused(mesh: Mesh, run: Run) -> None:
    """mTLS: a client presenting no certificate makes accept_server raise ssl.SSLError, the socket closed."""

    async def main() -> None:
        client = Recorder()
        with listening() as lsock:
            port = lsock.getsockname()[1]
            server_end, client_end = await asyncio.gather(
                refused(lsock, mesh),
                open_client(lambda: client, HOST, port, mesh.no_cert, None),
                return_exceptions=True,
            )
            try:
                assert isinstance(server_end, tuple)
                error, still_open = server_end
                assert isinstance(error, ssl.SSLError), repr(error)
                assert not still_open, "the refused socket was left open"
                if isinstance(client_end, TlsTransport):  # TLS 1.3: the client finished first
                    await until(lambda: "connection_lost" in client.events)
                else:
                    assert isinstance(client_end, OSError)
            finally:
                if isinstance(client_end, TlsTransport):
                    client_end.abort()
                    await asyncio.sleep(0)

    bounded(run, main())


def test_plaintext_client_is_refused_and_reads_a_clean_eof(mesh: Mesh, run: Run) -> None:
    """An HTTP request instead of a ClientHello: ssl.SSLError, and the client reads EOF, not a reset."""

    async def main() -> None:
        with listening() as lsock:
            async with raw_client(lsock) as sock:
                await asyncio.get_running_loop().sock_sendall(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                error, still_open = await refused(lsock, mesh)
                assert isinstance(error, ssl.SSLError), repr(error)
                assert not still_open, "the refused socket was left open"
                got = await recv_all(sock)  # raises ConnectionResetError if the server reset
                assert not got.startswith(b"HTTP/")

    bounded(run, main())


def test_silent_client_times_out(mesh: Mesh, run: Run) -> None:
    """A client that sends nothing: TimeoutError after `within` seconds, then the client reads EOF."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with listening() as lsock:
            async with raw_client(lsock) as sock:
                start = loop.time()
                error, still_open = await refused(lsock, mesh, within=0.3)
                took = loop.time() - start
                assert isinstance(error, TimeoutError), repr(error)
                assert not still_open, "the refused socket was left open"
                assert 0.25 <= took < 1.0
                assert await recv_all(sock) == b""

    bounded(run, main())


def test_client_closing_before_the_handshake_is_a_reset(mesh: Mesh, run: Run) -> None:
    """A client that connects and closes at once (a probe): ConnectionResetError, the socket closed."""

    async def main() -> None:
        with listening() as lsock:
            async with raw_client(lsock) as sock:
                sock.close()
                error, still_open = await refused(lsock, mesh)
                assert isinstance(error, ConnectionResetError), repr(error)
                assert not still_open, "the refused socket was left open"

    bounded(run, main())


def test_client_resetting_before_the_handshake_is_a_reset(mesh: Mesh, run: Run) -> None:
    """A client that connects and resets at once (SO_LINGER 0): ConnectionResetError, the socket closed."""

    async def main() -> None:
        with listening() as lsock:
            async with raw_client(lsock) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                error, still_open = await refused(lsock, mesh)
                assert isinstance(error, ConnectionResetError), repr(error)
                assert not still_open, "the refused socket was left open"

    bounded(run, main())


def test_open_client_to_a_closed_port_is_refused(mesh: Mesh, run: Run) -> None:
    """open_client where nothing listens raises ConnectionRefusedError."""

    async def main() -> None:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]  # bound, not listening: connections to it are refused
            with pytest.raises(ConnectionRefusedError):
                await open_client(Recorder, HOST, port, mesh.client, None)

    bounded(run, main())
