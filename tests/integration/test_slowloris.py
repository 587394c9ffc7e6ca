"""Slowloris: clients that trickle a request head forever are closed by `request_headers_timeout`,
and normal traffic on the same listener is unaffected while they do.

500 raw connections each send a partial request head, then one more header byte every 200-300 ms and
never finish it; each that the proxy closes is reopened at once, so the attack holds ~500 slow
connections for as long as the normal traffic runs (2000 requests over 8 keep-alive connections). The
functional claims only: every normal request gets 200, every slow connection is closed by the proxy
(not by us) after the header timeout and well before it plus the sweep's period, each closure is
counted, and no byte of a slow request reaches the upstream. Latency under the attack is a timing
threshold, so it lives in the benchmark (bench/run.py's slowloris row), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pillion.config import load_config_text
from pillion.runtime.tasks import spawn
from pillion.testing.http import ClientConnection
from pillion.testing.loops import checked_runner
from pillion.testing.metrics import metric
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
SLOW = 500
NORMAL_CONNECTIONS = 8
NORMAL_REQUESTS = 2000
# The normal requests are paced over this long (fast as they are in-process, they would otherwise be over
# before the first sweep), so they run while a whole generation of slow connections is closed and reopened.
NORMAL_SPAN = 3.0
HEADERS_TIMEOUT = 1.0
# The listener sweeps once a second, so a head is closed between HEADERS_TIMEOUT and HEADERS_TIMEOUT + 1 s
# after it began; the rest is slack for a loop shared by 500 tricklers, the proxy and the upstream.
CLOSE_WITHIN = HEADERS_TIMEOUT + 2.0
TRICKLE = (0.2, 0.3)  # seconds between two trickled bytes
GENERATIONS = 20  # most connections one slow slot opens in turn (the time limit ends it long before)
ATTACK_LIMIT = 12.0  # seconds: no slot opens a new connection after this, whatever the normal traffic does
# The slow connections and the proxy's side of each, plus the normal ones, the upstream's and slack.
FDS_NEEDED = 2 * SLOW + 256


@dataclass
class Slow:
    """One slow connection: when it started its head, when the proxy ended it (None: never), what it got."""

    slot: int
    generation: int
    started: float
    closed: float | None = None
    reply: bytes = b""


@contextlib.contextmanager
def enough_file_descriptors(needed: int) -> Iterator[None]:
    """RLIMIT_NOFILE's soft limit at least `needed` for the block: the slow clients, the proxy's side of
    each and the upstream all live in this process. The hard limit is raised too if need be (root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    try:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (needed, hard if hard == resource.RLIM_INFINITY or hard >= needed else needed),
        )
    except (ValueError, OSError) as exc:
        pytest.fail(f"RLIMIT_NOFILE is {soft}/{hard} and cannot be raised to {needed}: {exc}")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def slow_slot(slot: int, port: int, stop: asyncio.Event, deadline: float, out: list[Slow]) -> None:
    """Open a connection, start a head, trickle it until the proxy ends the connection; again until
    `stop` (or `deadline`). The connection that is open when `stop` comes is still trickled to its end."""
    loop = asyncio.get_running_loop()
    rng = random.Random(slot)
    for generation in range(GENERATIONS):
        if stop.is_set() or loop.time() > deadline:
            return
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            slow = Slow(slot, generation, loop.time())
            out.append(slow)
            writer.write(b"GET /slow/%d/%d HTTP/1.1\r\nHost: slow\r\nX-Trickle: " % (slot, generation))
            give_up = slow.started + CLOSE_WITHIN + 1.0
            while loop.time() < give_up:  # at most (CLOSE_WITHIN + 1) / 0.2 trickles
                try:
                    data = await asyncio.wait_for(reader.read(4096), rng.uniform(*TRICKLE))
                except TimeoutError:
                    writer.write(b"a")  # one more byte of the header value, never its end
                    continue
                except ConnectionError:
                    slow.closed = loop.time()  # a reset: closed by the proxy just the same
                    break
                if not data:
                    slow.closed = loop.time()
                    break
                slow.reply += data
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if slow.closed is None:
            return  # never closed by the proxy: reported by the test, no point in opening more


async def normal_client(index: int, port: int, requests: int, statuses: list[int]) -> None:
    """`requests` keep-alive GETs, one every NORMAL_SPAN / requests seconds (at once when behind)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with await ClientConnection.open(HOST, port) as conn:
        for i in range(requests):
            await asyncio.sleep(began + i * NORMAL_SPAN / requests - loop.time())
            reply = await conn.request("GET", f"/normal/{index}/{i}", time_limit=5.0)
            statuses.append(reply.status)


@pytest.mark.slow
def test_slowloris_is_closed_by_the_header_timeout_and_normal_traffic_succeeds() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            doc = {
                "service": "t",
                "admin": {"address": f"{HOST}:0"},
                "listeners": [
                    {
                        "name": "in",
                        "address": f"{HOST}:0",
                        "limits": {"request_headers_timeout": f"{HEADERS_TIMEOUT:g}s"},
                        "routes": [{"cluster": "app"}],
                    }
                ],
                "clusters": [{"name": "app", "endpoints": [up.address]}],
            }
            async with running_sidecar(load_config_text(json.dumps(doc))) as rt:
                listener = rt.listeners[0]
                port = listener.port
                loop = asyncio.get_running_loop()
                stop = asyncio.Event()
                slows: list[Slow] = []
                statuses: list[int] = []
                deadline = loop.time() + ATTACK_LIMIT
                attack = [spawn(slow_slot(i, port, stop, deadline, slows), f"slow {i}") for i in range(SLOW)]
                try:
                    for _ in range(500):  # the whole attack is in place before the normal traffic starts
                        if len(listener.connections) >= SLOW:
                            break
                        await asyncio.sleep(0.01)
                    assert len(listener.connections) >= SLOW, len(listener.connections)
                    began = loop.time()
                    per = NORMAL_REQUESTS // NORMAL_CONNECTIONS
                    async with asyncio.timeout(ATTACK_LIMIT - 2.0):
                        await asyncio.gather(
                            *(normal_client(i, port, per, statuses) for i in range(NORMAL_CONNECTIONS))
                        )
                    ended = loop.time()
                    held = sum(1 for s in slows if s.closed is None)
                    stop.set()
                    async with asyncio.timeout(CLOSE_WITHIN + 3.0):
                        await asyncio.gather(*attack)
                finally:
                    stop.set()
                    for task in attack:
                        task.cancel()
                    await asyncio.gather(*attack, return_exceptions=True)

                assert len(statuses) == NORMAL_REQUESTS
                assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
                # The attack was on throughout: the proxy closed a whole generation of slow connections
                # while the normal requests ran, and the slots had reopened theirs by the end.
                closed_meanwhile = sum(1 for s in slows if s.closed is not None and began < s.closed < ended)
                assert closed_meanwhile >= SLOW, (closed_meanwhile, ended - began)
                assert held >= SLOW * 0.9, (held, ended - began)

                never = [s for s in slows if s.closed is None]
                assert not never, f"{len(never)} slow connections were never closed, e.g. {never[:3]}"
                lifetimes = sorted(s.closed - s.started for s in slows if s.closed is not None)
                early = [t for t in lifetimes if t < HEADERS_TIMEOUT]
                late = [t for t in lifetimes if t > CLOSE_WITHIN]
                summary = f"{len(lifetimes)} closed, lifetimes {lifetimes[0]:.2f}..{lifetimes[-1]:.2f} s"
                assert not early, f"closed before the header timeout: {early[:5]}; {summary}"
                assert not late, f"closed later than {CLOSE_WITHIN} s: {late[:5]}; {summary}"
                # Closed without an answer (a 408 would be acceptable too; a proxied answer would not).
                replies = {s.reply[:12] for s in slows} - {b""}
                assert replies <= {b"HTTP/1.1 408"}, replies
                timeouts = metric(
                    rt, "pillion_downstream_timeouts_total", listener="in", timeout="request_headers"
                )
                assert timeouts == len(slows), (timeouts, len(slows))

                # Nothing of a slow request reached the upstream: no head, not a byte.
                assert len(up.requests) == NORMAL_REQUESTS
                assert all(r.target.startswith("/normal/") for r in up.requests)
                assert not [raw for raw in up.raw if b"/slow/" in raw or b"trickle" in raw.lower()]

                for _ in range(300):  # the proxy holds no slow connection any more
                    if not listener.connections:
                        break
                    await asyncio.sleep(0.01)
                assert not listener.connections, len(listener.connections)

    with enough_file_descriptors(FDS_NEEDED):
        checked_runner("uvloop")(main())
