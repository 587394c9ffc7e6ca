"""The accept loop of a TLS listener: every handshake seen (so failures are counted), and plaintext told
apart from TLS on a `permissive` listener.

Theory of operation. `loop.create_server(ssl=...)` hides failed handshakes (they never reach a protocol,
and are only logged at debug level), and it cannot serve TLS and plaintext on one port. So a TLS
listener accepts connections itself: the listening socket is watched with `add_reader`, each accepted
socket gets a task that, on a permissive listener, peeks at the first byte without consuming it (a TLS
record starts with 0x16, the handshake content type; an HTTP request never does). A TLS client's
socket goes to Pillion's TLS transport (tls/transport.py), which runs the handshake; an exception out of
it is a refused client: counted, and the socket closed. A plaintext one goes to
`loop.connect_accepted_socket`.

`TlsAcceptor` stands in for `asyncio.Server` where a listener uses one: `sockets`, `is_serving()`,
`close()`. Waits are bounded by `timeout` (the listener's request-headers timeout): a client that sends
nothing, or never finishes its handshake, is dropped like a slowloris.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from pillion.runtime.tasks import spawn
from pillion.tls.mux import Session
from pillion.tls.transport import TlsTransport, accept_server, until_ready

if TYPE_CHECKING:
    from pillion.telemetry.stats import Counter
    from pillion.tls.termination import DownstreamTls

log = logging.getLogger("pillion.tls")


_TLS_HANDSHAKE = 0x16  # the content type of the first TLS record
_ACCEPTS_PER_WAKEUP = 64  # bounded, so a flood of connections cannot starve the loop


class TlsAcceptor:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        tls: DownstreamTls,
        timeout: float,
        failures: Counter,
    ) -> None:
        self.sockets = [sock]
        self._factory = factory
        self._tls = tls
        self._permissive = tls.config.mode == "permissive"
        self._timeout = timeout
        self._failures = failures
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[Session] = set()  # multiplexed connections (tls/mux.py), told when we close
        self._serving = True
        self._loop.add_reader(sock.fileno(), self._accept)

    @classmethod
    def bind(
        cls,
        host: str,
        port: int,
        factory: Callable[[], asyncio.Protocol],
        tls: DownstreamTls,
        *,
        timeout: float,
        failures: Counter,
    ) -> TlsAcceptor:
        from pillion.proxy.bind import BACKLOG, listen_socket

        return cls(listen_socket(host, port, backlog=BACKLOG), factory, tls, timeout, failures)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        sock = self.sockets[0]
        self._loop.remove_reader(sock.fileno())
        sock.close()
        for task in self._tasks:  # handshakes still going: the listener is closing
            task.cancel()
        for session in self._sessions:  # no new streams: the client opens its next ones elsewhere
            if not session.closed:
                session.go_away()
        self._sessions.clear()

    def _accept(self) -> None:
        listening = self.sockets[0]
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, or the like: try again at the next wakeup
                log.warning("accept failed", extra={"error": str(exc)})
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = spawn(self._serve(conn), name="tls accept")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            tls = True
            if self._permissive:
                first = await self._first_byte(conn)
                if first is None:  # closed, or nothing sent in time
                    conn.close()
                    return
                tls = first == _TLS_HANDSHAKE
            if tls:
                transport = await accept_server(conn, self._tls.context, self._factory, self._timeout)
                session = transport.get_protocol()
                if isinstance(session, Session):
                    self._multiplexed(transport, session)
            else:
                await self._loop.connect_accepted_socket(self._factory, conn)
        except asyncio.CancelledError:
            conn.close()
            raise
        except ConnectionError:
            # Connected and went away without a handshake (a TCP probe, a load balancer's check):
            # not a refused client, so not counted.
            conn.close()
        except (OSError, TimeoutError) as exc:  # (ssl.SSLError is an OSError)
            self._failures.value += 1
            log.info("TLS handshake refused", extra={"error": str(exc) or type(exc).__name__})
            conn.close()

    def _multiplexed(self, transport: TlsTransport, session: Session) -> None:
        """A `pillion-mux/1` connection, just started (nothing read yet): its peer is checked once here,
        so a refused client loses the whole connection rather than each stream it opens."""
        from pillion.tls.termination import PeerRefused

        try:
            self._tls.peer(transport.get_extra_info("ssl_object"))
        except PeerRefused as exc:
            self._failures.value += 1
            log.info("client refused", extra={"reason": exc.reason})
            transport.abort()
            return
        self._sessions = {s for s in self._sessions if not s.closed}  # (bounded by the live ones)
        self._sessions.add(session)
        gauge = self._tls.mux_connections
        if gauge is not None:
            gauge.inc()
            session.on_closed = lambda _: gauge.dec()

    async def _first_byte(self, conn: socket.socket) -> int | None:
        """The first byte the client sent, left unread; None if it closed or sent nothing in time."""
        fd = conn.fileno()
        for _ in range(3):  # readable, then the byte is there (a spurious wakeup at most once or twice)
            try:
                data = conn.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return None
            else:
                return data[0] if data else None
            try:
                async with asyncio.timeout(self._timeout):
                    await until_ready(self._loop, fd)
            except TimeoutError:
                return None
        return None
