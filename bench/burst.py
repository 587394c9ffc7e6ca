"""A fixed-rate client that sends what hey sends, to several targets interleaved, with µs resolution.

`python bench/burst.py SECONDS PORT [PORT...]` (127.0.0.1, `--burst 8 --rate 125`) prints one JSON object:
for each port, its latency percentiles and mean in microseconds.

Theory of operation: `hey -c 8 -q 125` runs 8 workers whose tickers start together, so a target gets 8
requests at once every 8 ms (bench/README.md, "p50@2k, p99@2k"). This client does the same on `--burst`
keep-alive connections per target: every 1/`--rate` seconds it writes one GET on each, then reads until
every answer is complete (content-length framing) or a second has passed. With several targets, each
target's burst is offset within the period (1/rate divided by the number of targets), so a noise spell
of the machine hits every target alike: the difference between two builds is then measurable to a few
per cent, where two hey runs a minute apart differ by 25%. Latency is taken per request with
`perf_counter`, not quantised to 0.1 ms like hey's. One thread, blocking on `selectors` only while
answers are due, and busy-waiting between bursts for timing; pin it to the load core (`taskset`).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import time
from dataclasses import asdict, dataclass

HOST = "127.0.0.1"
ANSWER_TIMEOUT_S = 1.0  # a burst whose answers are not all in by then is counted as failed


@dataclass(frozen=True)
class BurstStats:
    requests: int
    failed: int  # requests without a complete answer within ANSWER_TIMEOUT_S
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float


def answer_complete(buf: bytes) -> bool:
    """Whether `buf` holds a whole response framed by content-length (what the bench's upstreams send).
    ValueError for a response head without content-length: this client reads no other framing."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without content-length")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    return len(buf) >= end + 4 + length


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def summarize(latencies_us: list[float], failed: int) -> BurstStats:
    ordered = sorted(latencies_us)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return BurstStats(
        len(ordered) + failed,
        failed,
        percentile(ordered, 50),
        percentile(ordered, 90),
        percentile(ordered, 99),
        mean,
    )


class _Target:
    def __init__(self, port: int, burst: int) -> None:
        self.request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench-burst\r\n\r\n".encode()
        self.conns = [socket.create_connection((HOST, port), timeout=5.0) for _ in range(burst)]
        for conn in self.conns:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
        self.latencies: list[float] = []
        self.failed = 0

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


def _one_burst(target: _Target, selector: selectors.BaseSelector) -> None:
    """Write one request on each connection, then read until all answers are complete or time is up."""
    started: dict[int, float] = {}
    buffers: dict[int, bytes] = {}
    for i, conn in enumerate(target.conns):
        started[i] = time.perf_counter()
        buffers[i] = b""
        conn.sendall(target.request)
        selector.register(conn, selectors.EVENT_READ, i)
    deadline = time.perf_counter() + ANSWER_TIMEOUT_S
    try:
        while started and time.perf_counter() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.perf_counter())):
                i = key.data
                chunk = target.conns[i].recv(65536)
                if not chunk:
                    raise ConnectionError("the target closed a keep-alive connection")
                buffers[i] += chunk
                if answer_complete(buffers[i]):
                    target.latencies.append((time.perf_counter() - started.pop(i)) * 1e6)
                    selector.unregister(target.conns[i])
    finally:
        target.failed += len(started)
        for i in started:
            selector.unregister(target.conns[i])


def run_bursts(
    ports: list[int], seconds: float, burst: int = 8, rate: float = 125.0
) -> dict[int, BurstStats]:
    """`seconds` of bursts against each port, interleaved (see the module docstring)."""
    if not ports or burst < 1 or rate <= 0 or seconds <= 0:
        raise ValueError("need ports, burst >= 1, rate > 0 and seconds > 0")
    targets = [_Target(port, burst) for port in ports]
    period = 1.0 / rate
    step = period / len(targets)
    rounds = max(1, int(seconds * rate))
    try:
        with selectors.DefaultSelector() as selector:
            t0 = time.perf_counter()
            for k in range(rounds):
                for n, target in enumerate(targets):
                    due = t0 + k * period + n * step
                    while time.perf_counter() < due:
                        pass  # a sleep would wake up to 1 ms late; the client owns its core
                    _one_burst(target, selector)
    finally:
        for target in targets:
            target.close()
    return {port: summarize(t.latencies, t.failed) for port, t in zip(ports, targets, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("seconds", type=float)
    parser.add_argument("ports", type=int, nargs="+")
    parser.add_argument("--burst", type=int, default=8, help="requests at once per target (hey's -c; 8)")
    parser.add_argument(
        "--rate", type=float, default=125.0, help="bursts a second per target (hey's -q; 125)"
    )
    a = parser.parse_args(argv)
    stats = run_bursts(a.ports, a.seconds, a.burst, a.rate)
    print(json.dumps({str(port): asdict(s) for port, s in stats.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
