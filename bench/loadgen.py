"""Load generators and what they print: wrk (saturating, closed loop) and hey (fixed rate), and /metrics.

Theory of operation: the harness runs the tools as plain subprocesses and parses their human-readable
output, because neither wrk 4.1 nor hey 0.1.4 has a machine-readable summary.

  * wrk `-t1 -cN -dD --latency URL`: N keep-alive connections, each sending its next request as soon as the
    previous answer arrives -- so it measures the most a target can serve (req/s) and the latency at that
    saturation. We read "X requests in Ys" (the exact completed count), "Requests/sec:", the "Latency
    Distribution" percentiles (units us/ms/s/m/h, converted to microseconds), "Socket errors: ..." and
    "Non-2xx or 3xx responses: N" (both printed only when non-zero).
  * hey `-z D -c C -q Q URL`: C workers, each paced to Q requests/s (C*Q total), keep-alive. At a rate far
    below saturation the latency is the time the target *adds* to a request. We read "Requests/sec:",
    "NN% in X secs" from "Latency distribution", "[code] N responses" and the "Error distribution" counts.
    hey prints latencies with 4 decimals of a second: its percentiles are quantised to 100 us.
  * bench/slowloris.py (the slowloris attacker): `ready N` once its N connections are open, then one JSON
    line of statistics when it stops (`parse_slowloris`).
  * Prometheus text exposition: `counter_total(text, names)` sums every sample of the first metric whose
    name matches, so the harness can compare Pillion's own request count with wrk's; `labelled_total`
    sums the samples of one metric that carry some label values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SLOWLORIS = Path(__file__).resolve().parent / "slowloris.py"

_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(value: str) -> float:
    """'310.17us' / '1.23ms' / '2.00s' / '1.50m' -> microseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", value.strip())
    if m is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(m.group(1)) * _UNIT_US[m.group(2)]


def wrk_argv(url: str, connections: int, duration_s: int) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", url]


def hey_argv(url: str, duration_s: float, concurrency: int, qps_per_worker: float) -> list[str]:
    return ["hey", "-z", f"{duration_s:g}s", "-c", str(concurrency), "-q", f"{qps_per_worker:g}", url]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    percentiles_us: dict[int, float]
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def p(self, percent: int) -> float | None:
        return self.percentiles_us.get(percent)


def parse_wrk(text: str) -> WrkResult:
    done = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if done is None or rps is None:
        raise ValueError("wrk output has no 'N requests in' / 'Requests/sec:' line")
    percentiles: dict[int, float] = {}
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for m in re.finditer(r"^\s*(\d+)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$", dist[1], re.M):
            percentiles[int(m.group(1))] = to_us(m.group(2))
    sock: dict[str, int] = {}
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if se is not None:
        sock = dict(zip(("connect", "read", "write", "timeout"), (int(g) for g in se.groups()), strict=True))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    return WrkResult(
        requests=int(done.group(1)),
        duration_s=to_us(done.group(2)) / 1e6,
        rps=float(rps.group(1)),
        percentiles_us=percentiles,
        socket_errors=sock,
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
    )


@dataclass(frozen=True)
class HeyResult:
    rps: float
    percentiles_us: dict[int, float]
    status_counts: dict[int, int]
    errors: int

    @property
    def requests(self) -> int:
        """Responses received (any status); requests that errored are in `errors`."""
        return sum(self.status_counts.values())

    @property
    def non_2xx_3xx(self) -> int:
        return sum(n for code, n in self.status_counts.items() if not 200 <= code < 400)

    def p(self, percent: int) -> float | None:
        return self.percentiles_us.get(percent)


def parse_hey(text: str) -> HeyResult:
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    if rps is None:
        raise ValueError("hey output has no 'Requests/sec:' line")
    percentiles = {
        int(m.group(1)): float(m.group(2)) * 1e6
        for m in re.finditer(r"^\s*(\d+)% in ([0-9.]+) secs", text, re.M)
    }
    status = {
        int(m.group(1)): int(m.group(2)) for m in re.finditer(r"^\s*\[(\d+)\]\s+(\d+) responses", text, re.M)
    }
    errors = 0
    if "Error distribution:" in text:
        section = text.split("Error distribution:", 1)[1]
        errors = sum(int(m.group(1)) for m in re.finditer(r"^\s*\[(\d+)\]\s", section, re.M))
    return HeyResult(float(rps.group(1)), percentiles, status, errors)


def slowloris_argv(python: str, port: int, connections: int, duration_s: float) -> list[str]:
    return [
        python,
        str(SLOWLORIS),
        str(port),
        "--connections",
        str(connections),
        "--duration",
        f"{duration_s:g}",
    ]


@dataclass(frozen=True)
class SlowlorisResult:
    """What the attacker saw (see bench/slowloris.py). Lifetimes are from a connection's first byte to the
    server closing it; `oldest_open_s` is the age of the oldest connection still open when it stopped."""

    connections: int
    opened: int
    closed_by_server: int
    eof: int
    reset: int
    connect_failed: int
    lifetime_min_s: float | None
    lifetime_median_s: float | None
    lifetime_max_s: float | None
    max_open: int
    still_open: int
    oldest_open_s: float
    reply_bytes: int
    reply_sample: str


def parse_slowloris(text: str) -> SlowlorisResult:
    """The attacker's last JSON line."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("the slowloris attacker printed no statistics")
    doc = json.loads(lines[-1])
    life = doc.get("lifetime_s") or {}
    return SlowlorisResult(
        connections=int(doc["connections"]),
        opened=int(doc["opened"]),
        closed_by_server=int(doc["closed_by_server"]),
        eof=int(doc["eof"]),
        reset=int(doc["reset"]),
        connect_failed=int(doc["connect_failed"]),
        lifetime_min_s=life.get("min"),
        lifetime_median_s=life.get("median"),
        lifetime_max_s=life.get("max"),
        max_open=int(doc["max_open"]),
        still_open=int(doc["still_open"]),
        oldest_open_s=float(doc["oldest_open_s"]),
        reply_bytes=int(doc["reply_bytes"]),
        reply_sample=str(doc["reply_sample"]),
    )


def _samples(text: str) -> list[tuple[str, float]]:
    """(metric name, value) for every sample line of a Prometheus text exposition."""
    out: list[tuple[str, float]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            rest = rest[rest.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        parts = rest.split()
        if not parts:
            continue
        try:
            out.append((name.strip(), float(parts[0])))
        except ValueError:
            continue
    return out


def labelled_total(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples of `name` whose labels include `labels`; None when there is none."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in wanted)
    ]
    return sum(values) if values else None


def counter_total(
    text: str, exact: str = "pillion_http_requests_total", fuzzy: str = "requests_total"
) -> tuple[str, float] | None:
    """(name, sum over its samples) for metric `exact`, else the first name containing `fuzzy`."""
    samples = _samples(text)
    names = [n for n, _ in samples]
    if exact in names:
        chosen = exact
    else:
        candidates = [n for n in names if fuzzy in n]
        if not candidates:
            return None
        chosen = next((n for n in candidates if n.startswith("pillion_")), candidates[0])
    return chosen, sum(v for n, v in samples if n == chosen)
