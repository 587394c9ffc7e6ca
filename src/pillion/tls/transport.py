"""Pillion's TLS transport: an asyncio transport over a non-blocking socket OpenSSL reads and writes itself.

Theory of operation. uvloop's TLS transport keeps OpenSSL on memory buffers: each record is read from
the socket into a buffer, copied into an input `MemoryBIO`, decrypted into a third buffer and handed on
as a list of chunks joined; each write goes the other way through an output `MemoryBIO`, all of it
through a layered protocol state machine. At the burst rates a sidecar pair sees, where the caches
are cold at every burst, that machinery costs more than the cryptography: a TLS echo server measured
56 µs of CPU per message on uvloop's transport and 27 µs on this one (plaintext: 14 µs).

Here OpenSSL owns the socket (`SSLContext.wrap_socket` of the non-blocking socket) and the loop only
reports readiness (`add_reader`, `add_writer`): a readable socket is one `read` call (SSL_read, which
takes one record off the socket and decrypts it into the bytes handed to the protocol), and `write`
is one `write` call (SSL_write: encrypt, then send). The C object's bound methods (`SSLSocket._sslobj`,
CPython's own since 3.7) are called directly, without `ssl.SSLSocket`'s Python wrappers.

What the asyncio contract asks, and how:
- Reading: level-triggered readiness. A record already decrypted but not taken (`pending()`) is taken
  in the same pass; one still on the socket wakes the loop again.
- Writing: SSL_write either writes all or reports WANT_WRITE after sending part; OpenSSL then expects
  the same bytes again, so the unsent write stays at the head of the buffer and is retried when the
  socket is writable, with later writes queued behind it. Past `high` buffered bytes the protocol's
  `pause_writing` is called, below `low` again `resume_writing` (asyncio's defaults: 64 KiB, 16 KiB).
- TLS 1.3 may need to read to write or write to read (key updates): each direction remembers that it
  waits on the other's readiness.
- `close()` sends what is buffered, then a close_notify (once; the peer's is not awaited, as a proxy
  has nothing more to hear), then closes the socket. `abort()` closes at once. TLS cannot half-close:
  `can_write_eof()` is False, like uvloop's.
- End of stream (close_notify, or a TCP FIN without one) is `eof_received()`; unless the protocol
  returns True the transport closes. Errors close it with `connection_lost(exc)`.
- `handshake()` runs the TLS handshake before the protocol exists, bounded by a timeout; a failure
  raises (ssl.SSLError, an OSError), so callers count refused handshakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Any, cast

from pillion.proxy.dns import is_ip_literal
from pillion.tls import mux

# A record carries at most 16 KiB of plaintext (RFC 8446 §5.1), and SSL_read returns one record's: a
# larger size would only make CPython allocate more before shrinking the bytes to what was read.
_READ_SIZE = 16384
_HIGH_WATER = 65536
_LOW_WATER = 16384


def _address(get: Any) -> Any:
    """`get()`, or None when the socket is no longer connected (the peer left already)."""
    try:
        return get()
    except OSError:
        return None


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def until_ready(loop: asyncio.AbstractEventLoop, fd: int, *, writable: bool = False) -> None:
    """Wait until `fd` is readable (or writable), through the loop's reader (or writer) callback."""
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    add(fd, _wake, ready)
    try:
        await ready
    finally:
        with contextlib.suppress(OSError, ValueError):  # (the socket may be closed meanwhile)
            remove(fd)


class TlsTransport:
    """See the module docstring. Made by `open_client` and `accept_server`, not directly. It has
    `asyncio.Transport`'s methods without deriving from it, so mypyc compiles it to a native class (as
    uvloop's transports are not subclasses either: callers cast)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        c = sock._sslobj  # type: ignore[attr-defined]  # the C object: its methods, without wrappers
        self._read = c.read
        self._write = c.write
        self._pending = c.pending
        self._protocol: asyncio.Protocol | None = None
        self._buffer: deque[bytes] = deque()  # bytes not yet taken by SSL_write; the head may be half-sent
        self._buffered = 0
        self._high = _HIGH_WATER
        self._low = _LOW_WATER
        self._write_paused = False  # the protocol was told to pause writing
        self._reading = False  # registered with add_reader
        self._read_paused = False
        self._writer = False  # registered with add_writer
        self._read_wants_write = False  # SSL_read answered WANT_WRITE: retry it when writable
        self._write_wants_read = False  # SSL_write answered WANT_READ: retry it when readable
        self._closing = False
        self._closed = False
        self._extra: dict[str, Any] = {
            "socket": sock,
            "ssl_object": sock,
            "sslcontext": sock.context,
            "peername": _address(sock.getpeername),
            "sockname": _address(sock.getsockname),
        }

    # -- set-up ------------------------------------------------------------------------------------

    async def handshake(self, within: float | None) -> None:
        """Run the TLS handshake; ssl.SSLError (or another OSError) if it fails, TimeoutError if it takes
        longer than `within` seconds. The caller closes the socket on failure."""
        loop, fd = self._loop, self._fd
        do_handshake = self._sock._sslobj.do_handshake  # type: ignore[attr-defined]
        async with asyncio.timeout(within):
            for _ in range(64):  # a handshake is a few round trips; bounded all the same
                try:
                    do_handshake()
                    return
                except ssl.SSLWantReadError:
                    writable = False
                except ssl.SSLWantWriteError:
                    writable = True
                await until_ready(loop, fd, writable=writable)
        raise ssl.SSLError("TLS handshake did not finish")

    def start(self, protocol: asyncio.Protocol) -> None:
        """Hand the connection to `protocol` (connection_made) and start reading."""
        self._protocol = protocol
        protocol.connection_made(cast(asyncio.Transport, self))
        if not self._closing and not self._read_paused:
            self._want_read(True)

    # -- asyncio.Transport ---------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peercert":  # (asked rarely: not kept)
            return self._sock.getpeercert()
        if name == "cipher":
            return self._sock.cipher()
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._protocol)  # (None once the connection is lost)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.Protocol, protocol)

    def pause_reading(self) -> None:
        self._read_paused = True
        self._want_read(self._write_wants_read)

    def resume_reading(self) -> None:
        if not self._read_paused:
            return
        self._read_paused = False
        if self._closing:
            return
        self._want_read(True)
        if self._pending():
            self._loop.call_soon(self._on_readable)  # decrypted, not taken: no readiness will report it

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_high()

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if not self._buffer:
            try:
                self._write(data)
                return
            except ssl.SSLWantWriteError:
                self._want_write(True)
            except ssl.SSLWantReadError:
                self._write_wants_read = True
                self._want_read(True)
            except OSError as exc:
                self._drop(exc)
                return
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        self._check_high()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS does not support half-closes")

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._want_read(self._write_wants_read)  # (a write waiting on readability still needs it)
        if not self._buffer:
            self._finish(None)
        # else: _on_writable finishes once the buffer is sent

    def abort(self) -> None:
        self._drop(None)

    # -- readiness ---------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._write_wants_read:
            self._write_wants_read = False
            self._on_writable()
            if self._closed:
                return
        if self._read_paused or self._closing:
            self._want_read(self._write_wants_read)
            return
        read = self._read
        try:
            data = read(_READ_SIZE)
            while data and self._pending():
                data += read(_READ_SIZE)
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
            self._want_write(True)
            return
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        except OSError as exc:
            self._drop(exc)
            return
        protocol = self._protocol
        assert protocol is not None
        if data:
            protocol.data_received(data)
            return
        self._want_read(False)
        if not protocol.eof_received():
            self.close()

    def _on_writable(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            if not self._buffer:
                self._want_write(False)
            self._on_readable()
            if self._closed:
                return
        buffer = self._buffer
        write = self._write
        while buffer:
            data = buffer[0]
            try:
                write(data)
            except ssl.SSLWantWriteError:
                return
            except ssl.SSLWantReadError:
                self._write_wants_read = True
                self._want_read(True)
                self._want_write(False)
                return
            except OSError as exc:
                self._drop(exc)
                return
            buffer.popleft()
            self._buffered -= len(data)
        if not self._read_wants_write:
            self._want_write(False)
        if self._write_paused and self._buffered <= self._low:
            self._write_paused = False
            if self._protocol is not None:
                self._protocol.resume_writing()
        if self._closing and not self._closed:
            self._finish(None)

    def _want_read(self, on: bool) -> None:
        if on != self._reading and not self._closed:
            self._reading = on
            if on:
                self._loop.add_reader(self._fd, self._on_readable)
            else:
                self._loop.remove_reader(self._fd)

    def _want_write(self, on: bool) -> None:
        if on != self._writer and not self._closed:
            self._writer = on
            if on:
                self._loop.add_writer(self._fd, self._on_writable)
            else:
                self._loop.remove_writer(self._fd)

    def _check_high(self) -> None:
        if not self._write_paused and self._buffered > self._high and self._protocol is not None:
            self._write_paused = True
            self._protocol.pause_writing()

    # -- the end -----------------------------------------------------------------------------------

    def _drop(self, exc: OSError | None) -> None:
        """Close at once, unsent bytes dropped and no close_notify: `abort()`, or an error (`exc`)."""
        self._closing = True
        self._buffer.clear()
        self._buffered = 0
        self._finish(exc, notify=False)

    def _finish(self, exc: Exception | None, *, notify: bool = True) -> None:
        """Stop watching the socket, send a close_notify if `notify`, close it; connection_lost soon."""
        if self._closed:
            return
        self._want_read(False)
        self._want_write(False)
        self._closed = True
        sock = self._sock
        if notify:
            with contextlib.suppress(OSError, ValueError):
                sock._sslobj.shutdown()  # type: ignore[attr-defined]  # sends ours; theirs is not awaited
        sock.close()
        if self._protocol is not None:
            self._loop.call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        """The protocol's connection_lost, then let go of it: the protocol keeps its transport, and the
        two must not form a cycle that only the garbage collector frees (docs/architecture.md)."""
        protocol = self._protocol
        self._protocol = None
        if protocol is not None:
            protocol.connection_lost(exc)


_DISCARD_LIMIT = 65536


def _close_read(ssock: ssl.SSLSocket) -> None:
    """Close a refused connection with a FIN: what the client sent and OpenSSL did not read (the rest of
    a plaintext request, say) is read and dropped first, since closing a socket with unread bytes makes
    the kernel send a reset, which can destroy the alert before the client reads it. Bounded."""
    left = _DISCARD_LIMIT
    while left > 0:
        try:
            got = socket.socket.recv(ssock, min(left, 16384), socket.MSG_DONTWAIT)  # the raw bytes
        except OSError:
            break
        if not got:
            break
        left -= len(got)
    ssock.close()


def _wrap(
    sock: socket.socket, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
) -> ssl.SSLSocket:
    """`sock` as an SSLSocket, no handshake yet. ConnectionResetError, with the socket closed, if the peer
    is gone already: `wrap_socket` would take the descriptor over and then raise, leaving it open until
    the garbage collector found it."""
    try:
        sock.getpeername()
    except OSError:
        sock.close()
        raise ConnectionResetError("the peer left before the TLS handshake") from None
    try:
        return context.wrap_socket(
            sock, server_side=server_side, server_hostname=server_hostname, do_handshake_on_connect=False
        )
    except OSError as exc:  # (the peer left in between)
        error = exc
    # The traceback's frames hold the SSLSocket that took the descriptor over: dropping them frees it
    # now, which closes the descriptor.
    error.__traceback__ = None
    raise ConnectionResetError(f"the peer left before the TLS handshake: {error}") from None


async def accept_server(
    sock: socket.socket, context: ssl.SSLContext, protocol_factory: Any, within: float | None
) -> TlsTransport:
    """The server side of an accepted, non-blocking socket: handshake, then the protocol. On a failed
    handshake the socket is closed and the error raised."""
    ssock = _wrap(sock, context, server_side=True)
    transport = TlsTransport(asyncio.get_running_loop(), ssock)
    try:
        await transport.handshake(within)
    except ssl.SSLEOFError:
        ssock.close()  # gone before the handshake ended: a probe or a lost client, not a refused one
        raise ConnectionResetError("the client closed during the TLS handshake") from None
    except BaseException:
        _close_read(ssock)
        raise
    if ssock._sslobj.selected_alpn_protocol() == mux.ALPN:  # type: ignore[attr-defined]
        # (`within` also bounds how long the client may take to open its first stream)
        session = mux.Session(asyncio.get_running_loop(), protocol_factory, within or 0.0)
        transport.start(cast(asyncio.Protocol, session))
    else:
        transport.start(protocol_factory())
    return transport


def _literal(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """The address of an IP literal without asking the resolver (a thread pool round trip), else None."""
    if not is_ip_literal(host):
        return None
    if ":" in host:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


async def open_client(
    protocol_factory: Any, host: str, port: int, context: ssl.SSLContext, server_hostname: str | None
) -> TlsTransport:
    """Connect to host:port, handshake (as `server_hostname`, for SNI and name checks), then the protocol."""
    loop = asyncio.get_running_loop()
    infos = _literal(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        ssock = _wrap(sock, context, server_side=False, server_hostname=server_hostname)
        transport = TlsTransport(loop, ssock)
        try:
            await transport.handshake(None)  # (the caller's connect timeout bounds it)
        except BaseException:
            ssock.close()
            raise
        transport.start(protocol_factory())
        return transport
    raise last if last is not None else OSError(f"cannot resolve {host}")
