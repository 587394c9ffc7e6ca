"""Writes held to the end of the event loop's pass, then sent back to back.

When the proxy writes a request to the app, the kernel wakes the app at once; on a core the two share
(the usual sidecar case) the app then often preempts the proxy before it has read the other clients'
requests, answers one request and sleeps again: a context switch per request. Likewise each response
written to a client wakes that client, which costs the writer an inter-processor wake-up. Holding the
writes of one pass and sending them together lets each peer wake once for all of them. On the benchmark
this halves the proxy's involuntary context switches per request and cuts its CPU per request by ~10%.

A connection with bytes to send registers once per pass (`add_client`, `add_upstream`); at the end of
the pass its `send_pending()` writes them in one call. Anything that closes a connection sends its
pending bytes first, so nothing queued is lost and order on each connection is kept. Answers to clients
go first: the upstream requests wake the app, which on a shared core may take the core at once. The two
queues are typed with the two connection classes, so the compiled build calls `send_pending` directly
rather than looking it up on each object.

A connection on a transport that gathers writes itself (a stream of a multiplexed TLS session,
tls/mux.py, which says so with `gathers_writes`: see `gathers`) is never held: its writes go to the
session at once, and the session sends the frames of the pass in one TLS write at its end. Holding them
here as well only added the batch's work (measured at the mTLS pair's bursts: docs/architecture.md).

Holding has a price: the end-of-pass callback (a loop handle, its context and the idle phase) costs
about 3.4k instructions, a seventh of a request's work when a pass carries only one request, as it does
at low rates, and there is nothing to gather then. So after SINGLE_PASSES passes in a row that each held
one connection's bytes, writes go out at once; every PROBE_EVERY writes, one pass is held again to see
whether the load has grown, and a pass that holds two or more connections turns holding back on. Under
load passes carry many connections and holding stays on; a switch happens only inside `flush`, after
everything held is sent, so order on each connection is kept either way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pillion.proxy.downstream import DownstreamConnection
    from pillion.proxy.upstream import UpstreamConnection


log: Final = logging.getLogger("pillion.batch")

SINGLE_PASSES = 8  # held passes in a row with one connection each, before writes go out at once
PROBE_EVERY = 32  # writes sent at once between two held passes that look at the load again


def gathers(transport: object) -> bool:
    """Whether `transport` gathers its writes and sends them at the end of the pass itself (it says so
    with a `gathers_writes` attribute, as a multiplexed stream does), so a connection on it never holds."""
    return getattr(transport, "gathers_writes", False) is True


class WriteBatch:
    __slots__ = ("_clients", "_direct_left", "_loop", "_scheduled", "_singles", "_upstreams")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._clients: list[DownstreamConnection] = []
        self._upstreams: list[UpstreamConnection] = []
        self._scheduled = False
        self._singles = 0  # held passes in a row that held one connection
        self._direct_left = 0  # > 0: writes go out at once, this many more before a held pass

    @property
    def holding(self) -> bool:
        """Whether the next write (outside a pass already being held) waits for the end of the pass."""
        return self._scheduled or self._direct_left == 0

    def add_client(self, conn: DownstreamConnection) -> None:
        """Call `conn.send_pending()` after the callbacks of this loop pass have run (or now, at low load)."""
        if self._at_once():
            conn.send_pending()
            return
        self._schedule()
        self._clients.append(conn)

    def add_upstream(self, conn: UpstreamConnection) -> None:
        """The same for a connection to the app."""
        if self._at_once():
            conn.send_pending()
            return
        self._schedule()
        self._upstreams.append(conn)

    def _at_once(self) -> bool:
        """Whether this write goes out now rather than at the end of the pass; counts it toward the probe."""
        if self.holding:
            return False
        self._direct_left -= 1
        return True

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send everything held (called by the loop; callable early, then the loop finds nothing)."""
        self._scheduled = False
        clients, upstreams = self._clients, self._upstreams
        held = len(clients) + len(upstreams)
        if held > 1:
            self._singles = 0
        elif held == 1:
            self._singles += 1
            if self._singles >= SINGLE_PASSES:
                self._direct_left = PROBE_EVERY
        # The queues are emptied before sending, so a connection whose send raised (a bug) must not
        # strand the bytes of the connections after it: they are sent, the broken one (its bytes lost)
        # is aborted so that its peer is not left waiting, and the first error is raised at the end,
        # for the loop's exception handler (or a direct caller) as before.
        error: Exception | None = None
        if clients:
            self._clients = []
            for client in clients:
                try:
                    client.send_pending()
                except Exception as exc:
                    error = _failed(error, exc, client.transport)
        if upstreams:
            self._upstreams = []
            for upstream in upstreams:
                try:
                    upstream.send_pending()
                except Exception as exc:
                    error = _failed(error, exc, upstream.transport)
        if error is not None:
            raise error


def _failed(first: Exception | None, exc: Exception, transport: asyncio.Transport | None) -> Exception:
    """Abort the connection whose send raised `exc`; the error to raise at the end (the first; a later
    one is logged here)."""
    if transport is not None:
        transport.abort()
    if first is None:
        return exc
    log.error("another held send failed in the same pass", exc_info=exc)
    return first
