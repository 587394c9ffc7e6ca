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

Holding pays only while the loop is busy. Below that, at a sidecar's usual rates, requests come in
bursts of a few connections, and holding them costs more than it saves: on the mTLS benchmark (bursts
of 8 requests every 8 ms through a pair of sidecars sharing a core with the app), sending each write
at once took 0.36 voluntary context switches per request instead of 0.57 on the client side, 0.24
involuntary ones instead of 0.44 on the server side, and 15-20% less CPU per request on each. So the
loop thread's CPU time is read once per BUSY_WINDOW (one clock_gettime): holding is on only while the
loop used more than BUSY_FROM of a core in the last window. Under saturation it is on, as the issue-2
benchmark needs.

Even when busy, holding has a price: the end-of-pass callback (a loop handle, its context and the idle
phase) costs about 3.4k instructions, a seventh of a request's work when a pass carries only one
request, and there is nothing to gather then (one client saturating the loop). So after SINGLE_PASSES
passes in a row that each held one connection's bytes, writes go out at once; every PROBE_EVERY
writes, one pass is held again to see whether the load has grown, and a pass that holds two or more
connections turns holding back on. A switch happens only inside `flush`, after everything held is
sent, or at a write when no pass is held, so order on each connection is kept either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pillion.proxy.downstream import DownstreamConnection
    from pillion.proxy.upstream import UpstreamConnection


BUSY_WINDOW = 0.02  # seconds over which the loop's CPU use is measured
BUSY_FROM = 0.25  # holding is on while the loop thread used more than this share of a core
SINGLE_PASSES = 8  # held passes in a row with one connection each, before writes go out at once
PROBE_EVERY = 32  # writes sent at once between two held passes that look at the load again


class WriteBatch:
    __slots__ = (
        "_busy",
        "_clients",
        "_clock",
        "_cpu_at",
        "_cpu_clock",
        "_direct_left",
        "_loop",
        "_scheduled",
        "_singles",
        "_upstreams",
        "_window_end",
        "_window_start",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """`clock`, `cpu_clock`: wall time and the loop thread's CPU time (tests pass their own)."""
        self._loop = loop
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._busy = False  # whether the loop was busy in the last window (none yet: not busy)
        self._window_start = self._window_end = 0.0
        self._cpu_at = 0.0
        self._clients: list[DownstreamConnection] = []
        self._upstreams: list[UpstreamConnection] = []
        self._scheduled = False
        self._singles = 0  # held passes in a row that held one connection
        self._direct_left = 0  # > 0: writes go out at once, this many more before a held pass

    @property
    def holding(self) -> bool:
        """Whether the next write (outside a pass already being held) waits for the end of the pass, as of
        the last look at the loop's CPU use."""
        return self._scheduled or (self._busy and self._direct_left == 0)

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
        if self._scheduled:
            return False  # this pass is held already
        now = self._clock()
        if now >= self._window_end:
            self._look(now)
        if not self._busy:
            return True
        if self._direct_left == 0:
            return False
        self._direct_left -= 1
        return True

    def _look(self, now: float) -> None:
        """Whether the loop was busy since the last look; the next look is BUSY_WINDOW from now."""
        cpu = self._cpu_clock()
        self._busy = cpu - self._cpu_at > BUSY_FROM * (now - self._window_start)
        self._cpu_at = cpu
        self._window_start = now
        self._window_end = now + BUSY_WINDOW

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
        if clients:
            self._clients = []
            for client in clients:
                client.send_pending()
        if upstreams:
            self._upstreams = []
            for upstream in upstreams:
                upstream.send_pending()
