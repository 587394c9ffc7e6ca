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

A connection may itself write into something that gathers writes, such as a multiplexed TLS session
(tls/mux.py), whose frames would otherwise leave one loop pass later and, on the server side, after the
requests to the app: the wake-up of the app would then come before the answers. Such a carrier calls
`join` while a batch is sending (a held pass, or a write sent at once), and its `flush()` runs right
after the phase that filled it: the clients' carriers before any upstream is written, the upstreams'
at the end.

A connection whose transport is itself such a carrier (a stream of a multiplexed session: `gathers`)
is never held: its writes go to the carrier at once, which sends them with the pass's other frames.
Holding them here too only added the batch's work: at the mTLS pair's bursts, sending them at once cut
A's CPU per request by 4.6% and B's by 2.5% (medians of 5 interleaved runs; docs/architecture.md).

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
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from pillion.proxy.downstream import DownstreamConnection
    from pillion.proxy.upstream import UpstreamConnection


log: Final = logging.getLogger("pillion.proxy")

SINGLE_PASSES = 8  # held passes in a row with one connection each, before writes go out at once
PROBE_EVERY = 32  # writes sent at once between two held passes that look at the load again


class Carrier(Protocol):
    """Something that gathers the writes of several connections and sends them in one `flush()`."""

    def flush(self) -> None: ...


# The batch sending now, or None. One slot set and restored around each send, not a stack pushed and
# popped: a list that goes from empty to one item and back is resized (a realloc) at both ends, which
# cost ~1.5k instructions a request on the plain path. A Final list is a C static in the compiled build,
# where a plain module global would be a dict lookup.
_flushing: Final[list[WriteBatch | None]] = [None]


def gathers(transport: object) -> bool:
    """Whether `transport` gathers its writes and sends them at the end of the pass itself (it says so
    with a `gathers_writes` attribute, as a multiplexed stream does), so a connection on it never holds."""
    return getattr(transport, "gathers_writes", False) is True


def join(carrier: Carrier) -> bool:
    """Have `carrier.flush()` called at the end of the flush phase under way; False (nothing done)
    when no batch is flushing, and the carrier schedules its own flush."""
    batch = _flushing[0]
    if batch is None:
        return False
    batch._carriers.append(carrier)
    return True


class WriteBatch:
    __slots__ = ("_carriers", "_clients", "_direct_left", "_loop", "_scheduled", "_singles", "_upstreams")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._clients: list[DownstreamConnection] = []
        self._upstreams: list[UpstreamConnection] = []
        self._scheduled = False
        self._singles = 0  # held passes in a row that held one connection
        self._direct_left = 0  # > 0: writes go out at once, this many more before a held pass
        self._carriers: list[Carrier] = []  # joined during the flush phase under way

    @property
    def holding(self) -> bool:
        """Whether the next write (outside a pass already being held) waits for the end of the pass."""
        return self._scheduled or self._direct_left == 0

    def add_client(self, conn: DownstreamConnection) -> None:
        """Call `conn.send_pending()` after the callbacks of this loop pass have run (or now, at low load)."""
        if self._at_once():
            outer = self._begin()
            try:
                conn.send_pending()
            finally:
                self._end(outer)
            return
        self._schedule()
        self._clients.append(conn)

    def add_upstream(self, conn: UpstreamConnection) -> None:
        """The same for a connection to the app."""
        if self._at_once():
            outer = self._begin()
            try:
                conn.send_pending()
            finally:
                self._end(outer)
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
        outer = self._begin()
        try:
            if clients:
                self._clients = []
                for client in clients:
                    client.send_pending()
                if self._carriers:
                    self._flush_carriers()
            if upstreams:
                self._upstreams = []
                for upstream in upstreams:
                    upstream.send_pending()
        finally:
            self._end(outer)

    def _begin(self) -> WriteBatch | None:
        """This batch is sending; returns the one that was (None: sends do not nest, but a slot restored
        to what it held stays right if one ever does)."""
        outer = _flushing[0]
        _flushing[0] = self
        return outer

    def _end(self, outer: WriteBatch | None) -> None:
        """The send is over: the carriers joined last go (also when a sender raised: none is stranded)."""
        _flushing[0] = outer
        if self._carriers:
            self._flush_carriers()

    def _flush_carriers(self) -> None:
        carriers = self._carriers
        self._carriers = []
        for carrier in carriers:
            try:
                carrier.flush()
            except Exception:  # a bug in one carrier must not leave the others' bytes unsent
                log.exception("flush failed")
