"""`make bench`: the same keep-alive load against the upstream, HAProxy, nginx and Pillion, one report.

Theory of operation: one run starts an nginx upstream and eight reverse proxies in front of it (HAProxy,
nginx, the minimal uvloop + httptools calibration proxy bench/minimal_proxy.py, Pillion with metrics on
and access log off, the same Pillion with all telemetry off and with all of it on -- metrics, tracing at
1% and the access log to a file --, and the outbound pair: HAProxy and Pillion each doing host routing,
retries, a circuit breaker and outlier detection), plus two mTLS pairs (sidecar A -> mutual TLS ->
sidecar B -> the upstream, once with two Pillions and once with two HAProxys, identities made by
`pillion ca`), every server a child process pinned to the server core (`taskset -c 0`) while the load
generators, this harness and the OTLP collector the all-telemetry Pillion exports to (bench/collector.py)
live on the load core (`taskset -c 1`), so a proxy and the upstream it needs compete for one core exactly
as a sidecar and its app would, and the client never steals from them. All servers stay up for the whole
run (idle when not measured). Then ROUNDS rounds each visit every live target once, in an order rotated
per round; a visit is:

  0. for the all-telemetry Pillion: read the collector's span count and Pillion's dropped-span count;
  1. warm-up: wrk for WARMUP seconds (connections, upstream pools, caches);
  2. measured: read the upstream's stub_status, Pillion's /metrics and the access-log size, sample the
     target's and upstream's utime+stime and /proc/stat, run `wrk -t1 -cN -dD --latency`, sample again;
     read the target's RSS; CPU/request = CPU delta / requests wrk completed;
  3. fixed rate: `hey -z D -c 8 -q 250` (~2000 req/s) for the latency a proxy adds when not saturated,
     with its own CPU/request;
  4. for the all-telemetry Pillion: wait TRACE_SETTLE_S for its last spans to be exported, then read the
     counts of step 0 again: their rise is the visit's spans, compared with its warm-up, wrk and hey
     requests.

After the rounds, the mTLS run (when a pair is selected): MTLS_ROUNDS rounds, each one hey run straight to
the upstream at ~1000 req/s and one visit of each pair (warm-up, `wrk` with A's and B's CPU sampled around
it, then hey at the same ~1000 req/s), in an order rotated per round. It yields each sidecar's CPU per
request, to compare side by side with the HAProxy doing the same side of the hop, and the p99 a pair adds
to the direct call in the same round.

Then the slowloris run (when the Pillion row is live): SLOWLORIS_ROUNDS rounds, each one
hey run as in 3. without an attack and one while bench/slowloris.py (on the load core) holds 500
connections that trickle a request head and never finish it, reopening each one Pillion closes; the
order alternates per round. It yields the p99 under attack over the p99 without, the requests' status
codes, and what the attacker saw of Pillion's request_headers_timeout (2 s in the Pillion row's config).
The attacker is always stopped in `finally` (SIGTERM, then SIGKILL), and Pillion is given a second to
settle after it.

The report (bench/report.py) takes medians over rounds, ratios against HAProxy, nginx and the minimal
proxy (and of the outbound Pillion row against the outbound HAProxy row, of the all-telemetry Pillion row
against the telemetry-off one, and of each Pillion sidecar of the mTLS pair against its HAProxy
counterpart), and evaluates the bars. A target (or pair) that cannot start,
dies, or whose load run fails is marked FAILED with the error and its log tail, and the run goes on --
Pillion's data plane may not exist yet. All children are stopped in `finally`
(SIGINT and SIGTERM included) and the temporary directory is removed. Exit status: 0 (it is a
measurement) unless `--check` is given and a bar fails (1), or the harness itself cannot run (2).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TypeVar

from loadgen import (
    HeyResult,
    SlowlorisResult,
    counter_total,
    hey_argv,
    labelled_total,
    parse_hey,
    parse_slowloris,
    parse_wrk,
    slowloris_argv,
    wrk_argv,
)
from procs import (
    CLK_TCK,
    Completed,
    CpuSample,
    MachineSample,
    Proc,
    ProcGroup,
    cpu_sample,
    describe,
    http_get,
    machine_sample,
    process_ticks,
    pss_kib,
    rss_kib,
)
from report import (
    Measurement,
    MtlsPair,
    MtlsReport,
    MtlsRound,
    PairVisit,
    SlowlorisReport,
    SlowlorisRound,
    Spans,
    TargetReport,
    bars,
    info_lines,
    ratios,
    render_markdown,
    summarize,
    to_json,
)
from servers import (
    HOST,
    LABELS,
    MTLS_KEYS,
    PILLION_HEADERS_TIMEOUT_S,
    TARGET_KEYS,
    Identities,
    Pair,
    Target,
    check_forwarding,
    check_pair,
    collector_argv,
    make_identities,
    minimal_argv,
    start_collector,
    start_haproxy,
    start_haproxy_pair,
    start_minimal,
    start_minimal_pair,
    start_nginx,
    start_pillion,
    start_pillion_pair,
    start_upstream,
    stop_pair,
    upstream_status,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PER_VISIT_OVERHEAD_S = 1.0  # /proc reads, probes
RESTART_S = 1.5  # a target's new process for the next round: start-up and the forwarding checks
SLOWLORIS_READY_S = 15.0  # the attacker's connections must all be open within this
SLOWLORIS_SETTLE_S = 1.0  # after the attacker stops, before the next hey run
SLOWLORIS_OVERHEAD_S = 2.0  # per round: the attacker's start and ramp, and the settle time
TRACE_SETTLE_S = 1.5  # after a pillion-full visit: Pillion exports its queued spans once a second


class MeasureError(Exception):
    """A load run against one target failed; the target is marked FAILED."""


@dataclass(frozen=True)
class Settings:
    duration: int
    connections: int
    rounds: int
    warmup: int
    rate_duration: float
    rate_concurrency: int
    rate_qps: float
    server_cpu: int
    load_cpu: int
    ready_timeout: float
    slowloris_rounds: int
    slowloris_connections: int
    mtls_rounds: int
    mtls_duration: int
    mtls_rate_duration: float
    mtls_rate_qps: float
    pillion: str
    only: tuple[str, ...]
    mtls_pairs: tuple[str, ...]
    quick: bool
    check: bool
    results: Path
    json_out: Path
    keep_tmp: bool


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark Pillion against HAProxy, nginx and a minimal uvloop+httptools proxy "
        "in front of the same upstream.",
    )
    p.add_argument("--duration", type=int, help="seconds of each measured wrk run (default 8; quick 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections (default 32)")
    p.add_argument("--rounds", type=int, help="rounds, each measuring every target once (default 5; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each measured run")
    p.add_argument(
        "--rate-duration", type=float, help="seconds of each hey fixed-rate run (default 5; quick 2)"
    )
    p.add_argument("--rate-concurrency", type=int, default=8, help="hey workers (default 8)")
    p.add_argument(
        "--rate-qps", type=float, default=250, help="hey req/s per worker (default 250: 2000 total)"
    )
    p.add_argument(
        "--server-cpu", type=int, default=0, help="core for the upstream and the proxies (default 0)"
    )
    p.add_argument("--load-cpu", type=int, default=1, help="core for wrk, hey and the harness (default 1)")
    p.add_argument("--ready-timeout", type=float, default=15.0, help="seconds a server gets to become ready")
    p.add_argument(
        "--slowloris-rounds",
        type=int,
        help="rounds of the slowloris run against the Pillion row (default 5; quick 1; 0 skips it)",
    )
    p.add_argument(
        "--slowloris-connections", type=int, default=500, help="slow connections the attacker holds (500)"
    )
    p.add_argument(
        "--mtls-rounds",
        type=int,
        help="rounds of the mTLS pair run (default 5; quick 1; 0 skips it)",
    )
    p.add_argument(
        "--mtls-duration", type=int, help="seconds of each measured wrk run through a pair (4; quick 2)"
    )
    p.add_argument(
        "--mtls-rate-duration",
        type=float,
        help="seconds of each fixed-rate hey run of the mTLS run (default 5; quick 2)",
    )
    p.add_argument(
        "--mtls-rate-qps",
        type=float,
        default=125,
        help="hey req/s per worker in the mTLS run (default 125: 1000 total with 8 workers)",
    )
    p.add_argument(
        "--pillion", default=str(REPO / ".venv" / "bin" / "pillion"), help="the pillion executable"
    )
    p.add_argument(
        "--only",
        default=",".join((*TARGET_KEYS, *MTLS_KEYS)),
        help=f"comma-separated targets and mTLS pairs to measure (default all: {','.join(TARGET_KEYS)}; "
        f"{','.join(MTLS_KEYS)})",
    )
    p.add_argument("--quick", action="store_true", help="smoke mode, about 2.5 min: 2 rounds of 3 s + 2 s")
    p.add_argument("--check", action="store_true", help="exit 1 if a bar fails")
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="markdown report path")
    p.add_argument("--json", type=Path, default=BENCH / "out" / "results.json", help="JSON results path")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)")
    a = p.parse_args(argv)
    only = tuple(k.strip() for k in a.only.split(",") if k.strip())
    unknown = [k for k in only if k not in TARGET_KEYS and k not in MTLS_KEYS]
    if unknown:
        p.error(f"unknown target(s) {unknown}; choose from {[*TARGET_KEYS, *MTLS_KEYS]}")
    if a.server_cpu == a.load_cpu:
        p.error("--server-cpu and --load-cpu must differ")

    def pick(value: float | None, normal: float, quick: float) -> float:
        return value if value is not None else (quick if a.quick else normal)

    return Settings(
        duration=int(pick(a.duration, 8, 3)),
        connections=a.connections,
        rounds=int(pick(a.rounds, 5, 2)),
        warmup=a.warmup,
        rate_duration=pick(a.rate_duration, 5, 2),
        rate_concurrency=a.rate_concurrency,
        rate_qps=a.rate_qps,
        server_cpu=a.server_cpu,
        load_cpu=a.load_cpu,
        ready_timeout=a.ready_timeout,
        slowloris_rounds=int(pick(a.slowloris_rounds, 5, 1)),
        slowloris_connections=a.slowloris_connections,
        mtls_rounds=int(pick(a.mtls_rounds, 5, 1)),
        mtls_duration=int(pick(a.mtls_duration, 4, 2)),
        mtls_rate_duration=pick(a.mtls_rate_duration, 5, 2),
        mtls_rate_qps=a.mtls_rate_qps,
        pillion=a.pillion,
        only=("upstream", *(k for k in TARGET_KEYS if k in only and k != "upstream")),
        mtls_pairs=tuple(k for k in MTLS_KEYS if k in only),
        quick=a.quick,
        check=a.check,
        results=a.results,
        json_out=a.json,
        keep_tmp=a.keep_tmp,
    )


# ---- one visit ----------------------------------------------------------------------------------------


def _tail(done: Completed, lines: int = 15) -> str:
    text = (done.stderr.strip() + "\n" + done.stdout.strip()).strip()
    return "\n".join(text.splitlines()[-lines:])


R = TypeVar("R")


def _checked(done: Completed, tool: str) -> None:
    """Raise MeasureError if a load-generator run failed."""
    if done.returncode != 0:
        raise MeasureError(f"{tool} exited {done.returncode}:\n{_tail(done)}")


def _parsed(done: Completed, tool: str, parse: Callable[[str], R]) -> R:
    """The run's output, parsed; a failed run or output that does not parse is a MeasureError."""
    _checked(done, tool)
    try:
        return parse(done.stdout)
    except ValueError as exc:
        raise MeasureError(f"{exc}:\n{_tail(done)}") from exc


def _alive(t: Target) -> None:
    if t.proc is None or not t.proc.alive():
        rc = t.proc.popen.returncode if t.proc is not None else None
        raise MeasureError(f"{t.key} exited (status {rc}) during the run")


def _scrape(t: Target) -> tuple[str | None, str | None]:
    """Pillion's admin /metrics text, or None and why not (no note when the target is not a Pillion)."""
    if t.admin_port is None:
        return None, None
    try:
        status, body = http_get(HOST, t.admin_port, "/metrics", timeout=5.0)
    except OSError as exc:
        return None, f"GET /metrics failed: {exc}"
    if status != 200:
        return None, f"GET /metrics answered {status}"
    return body.decode(errors="replace"), None


def _counter(t: Target) -> tuple[tuple[str, float] | None, str | None]:
    """Pillion's request counter from its admin /metrics (None and a note when absent/unreadable)."""
    text, note = _scrape(t)
    if text is None:
        return None, note
    found = counter_total(text)
    return found, None if found else "not found"


def _metric(t: Target, name: str, **labels: str) -> float | None:
    """Sum of a labelled metric's samples (those with `labels`) on Pillion's admin /metrics; None when not
    Pillion, unreadable, or there is no such sample."""
    text, _ = _scrape(t)
    return None if text is None else labelled_total(text, name, **labels)


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _wrk_requests(done: Completed) -> int | None:
    try:
        return parse_wrk(done.stdout).requests
    except ValueError:
        return None


def _trace_totals(t: Target) -> tuple[float | None, float | None] | None:
    """For a target that exports spans (pillion-full): the spans its collector has received so far, and
    Pillion's pillion_tracing_spans_dropped_total (0 while it has no sample); None for any other target."""
    if t.collector_port is None:
        return None
    received: float | None = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        status, body = http_get(HOST, t.collector_port, "/stats", timeout=5.0)
        received = float(json.loads(body)["spans"]) if status == 200 else None
    text, _ = _scrape(t)
    dropped = None if text is None else labelled_total(text, "pillion_tracing_spans_dropped_total") or 0.0
    return received, dropped


def _spans(
    before: tuple[float | None, float | None] | None,
    after: tuple[float | None, float | None] | None,
    requests: list[int | None],
) -> Spans | None:
    """What the collector received and Pillion dropped between two `_trace_totals`, over `requests`."""
    if before is None or after is None:
        return None
    counts = [n for n in requests if n is not None]
    total = sum(counts) if len(counts) == len(requests) else None
    return Spans(_delta(before[0], after[0]), _delta(before[1], after[1]), total)


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _lines_since(path: Path | None, offset: int) -> int | None:
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().count(b"\n")
    except OSError:
        return None


def measure(
    s: Settings, group: ProcGroup, t: Target, *, upstream: Target, servers: list[Target], rnd: int, slot: int
) -> Measurement:
    assert t.proc is not None and upstream.proc is not None
    traced0 = _trace_totals(t)  # before the warm-up: all of this visit's requests, all of its spans
    warm = group.run(wrk_argv(t.url, s.connections, s.warmup), s.load_cpu, timeout=s.warmup + 30)
    _checked(warm, "warm-up wrk")
    _alive(t)

    up0 = upstream_status(upstream.port)
    ctr0, _ = _counter(t)
    log0 = _file_size(t.access_log)
    live = [x for x in servers if x.proc is not None and x.proc.alive()]
    cpu0: dict[str, CpuSample] = {x.key: cpu_sample(x.proc.pid) for x in live if x.proc is not None}
    f0 = process_ticks()
    m0 = machine_sample()
    done = group.run(wrk_argv(t.url, s.connections, s.duration), s.load_cpu, timeout=s.duration + 30)
    m1 = machine_sample()
    f1 = process_ticks()
    cpu1: dict[str, CpuSample] = {x.key: cpu_sample(x.proc.pid) for x in live if x.proc is not None}
    rss, pss = rss_kib(t.proc.pid), pss_kib(t.proc.pid)
    up1 = upstream_status(upstream.port)
    ctr1, note = _counter(t)
    log_lines = _lines_since(t.access_log, log0)
    wrk = _parsed(done, "wrk", parse_wrk)
    _alive(t)

    h0 = cpu_sample(t.proc.pid)
    hey_done = group.run(
        hey_argv(t.url, s.rate_duration, s.rate_concurrency, s.rate_qps),
        s.load_cpu,
        timeout=s.rate_duration + 30,
    )
    h1 = cpu_sample(t.proc.pid)
    hey = _parsed(hey_done, "hey", parse_hey)
    _alive(t)
    if traced0 is not None:
        time.sleep(TRACE_SETTLE_S)  # the visit's last spans reach the collector, not the next visit's time
    spans = _spans(traced0, _trace_totals(t), [_wrk_requests(warm), wrk.requests, hey.requests])

    sh = _shares(s, (m0, m1), (f0, f1), (cpu0, cpu1))
    counted = None if ctr0 is None or ctr1 is None else ctr1[1] - ctr0[1]
    return Measurement(
        round=rnd,
        slot=slot,
        wrk=wrk,
        cpu_s=(cpu1[t.key].ticks - cpu0[t.key].ticks) / CLK_TCK,
        cpu_schedstat_s=(cpu1[t.key].schedstat_ns - cpu0[t.key].schedstat_ns) / 1e9,
        upstream_cpu_s=(cpu1[upstream.key].ticks - cpu0[upstream.key].ticks) / CLK_TCK,
        rss_kib=rss,
        pss_kib=pss,
        server_core_busy_pct=sh.server_core_busy_pct,
        load_core_busy_pct=sh.load_core_busy_pct,
        outside_pct=sh.outside_pct,
        steal_pct=sh.steal_pct,
        tree_changed=cpu0[t.key].pids != cpu1[t.key].pids,
        hey=hey,
        hey_cpu_s=(h1.ticks - h0.ticks) / CLK_TCK,
        upstream_conns_opened=None if up0 is None or up1 is None else up1[0] - up0[0] - 1,  # minus our probe
        upstream_requests=None if up0 is None or up1 is None else up1[1] - up0[1] - 1,
        counter_name=ctr1[0] if ctr1 is not None else None,
        counter_delta=counted,
        counter_note=note,
        access_log_lines=log_lines,
        spans=spans,
        foreign_top=sh.foreign,
    )


@dataclass(frozen=True)
class Shares:
    """How the machine's CPU went during a measured run: the two cores' load, what processes outside the
    benchmark used (% of one core), hypervisor steal, and the busiest outsiders."""

    server_core_busy_pct: float
    load_core_busy_pct: float
    outside_pct: float
    steal_pct: float
    foreign: list[tuple[str, float]]


def _shares(
    s: Settings,
    machine: tuple[MachineSample, MachineSample],
    everyone: tuple[dict[int, int], dict[int, int]],
    ours: tuple[dict[str, CpuSample], dict[str, CpuSample]],
) -> Shares:
    """From /proc samples taken before and after a run: the machine's, every process's ticks, and the
    benchmark's own servers' (keyed by target)."""
    (m0, m1), (f0, f1), (cpu0, cpu1) = machine, everyone, ours
    wall = m1.wall - m0.wall
    busy = {core: (m1.busy[core] - m0.busy.get(core, 0)) / CLK_TCK for core in m1.busy}
    ours_s = sum((cpu1[k].ticks - cpu0[k].ticks) / CLK_TCK for k in cpu1 if k in cpu0)
    ours_s += (m1.self_s - m0.self_s) + (m1.children_s - m0.children_s)  # the harness, and wrk once reaped
    steal = sum(m1.steal[c] - m0.steal.get(c, 0) for c in m1.steal) / CLK_TCK
    pids = {os.getpid()}.union(*(c.pids for c in cpu0.values()), *(c.pids for c in cpu1.values()))
    others = sorted(
        ((ticks - f0.get(pid, 0), pid) for pid, ticks in f1.items() if pid not in pids), reverse=True
    )
    foreign = [
        (describe(pid), round(100 * ticks / CLK_TCK / wall, 1))
        for ticks, pid in others[:3]
        if 100 * ticks / CLK_TCK / wall >= 2
    ]
    return Shares(
        server_core_busy_pct=100 * busy.get(s.server_cpu, 0.0) / wall,
        load_core_busy_pct=100 * busy.get(s.load_cpu, 0.0) / wall,
        outside_pct=max(0.0, 100 * (sum(busy.values()) - ours_s) / wall),
        steal_pct=100 * steal / wall,
        foreign=foreign,
    )


# ---- the slowloris run --------------------------------------------------------------------------------


def slowloris_duration(s: Settings) -> float:
    """Seconds of each slowloris-round hey run: the usual, but long enough that Pillion closes slow
    connections (and the attacker reopens them) while it runs, even in --quick mode."""
    return max(s.rate_duration, PILLION_HEADERS_TIMEOUT_S + 3.0)


def _hey_run(s: Settings, group: ProcGroup, t: Target) -> tuple[HeyResult, float, float]:
    """One fixed-rate hey run: its result, the target's CPU seconds, and the load core's busy %."""
    assert t.proc is not None
    seconds = slowloris_duration(s)
    h0, m0 = cpu_sample(t.proc.pid), machine_sample()
    done = group.run(
        hey_argv(t.url, seconds, s.rate_concurrency, s.rate_qps), s.load_cpu, timeout=seconds + 30
    )
    m1, h1 = machine_sample(), cpu_sample(t.proc.pid)
    hey = _parsed(done, "hey", parse_hey)
    _alive(t)
    busy = (m1.busy.get(s.load_cpu, 0) - m0.busy.get(s.load_cpu, 0)) / CLK_TCK
    return hey, (h1.ticks - h0.ticks) / CLK_TCK, 100 * busy / (m1.wall - m0.wall)


def _header_timeouts(t: Target) -> float | None:
    """Pillion's count of connections closed by request_headers_timeout (None when unreadable)."""
    return _metric(t, "pillion_downstream_timeouts_total", timeout="request_headers")


def _wait_ready(proc: Proc, timeout: float) -> None:
    """Until the attacker prints `ready N` (all its connections open); MeasureError if it exits or is late."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if "ready " in proc.log.read_text(errors="replace"):
                return
        if not proc.alive():
            raise MeasureError(f"the slowloris attacker exited {proc.popen.returncode}:\n{proc.tail()}")
        time.sleep(0.05)
    raise MeasureError(f"the slowloris attacker was not ready within {timeout:g} s:\n{proc.tail()}")


def _under_attack(
    s: Settings, group: ProcGroup, t: Target, log: Path
) -> tuple[HeyResult, float, float, SlowlorisResult, float | None]:
    """The hey run while the attacker holds its slow connections; the attacker is stopped in `finally`."""
    before = _header_timeouts(t)
    limit = SLOWLORIS_READY_S + slowloris_duration(s) + 30  # the attacker stops by itself after this
    argv = slowloris_argv(sys.executable, t.port, s.slowloris_connections, limit)
    attacker = group.spawn("slowloris", argv, log, s.load_cpu)
    try:
        _wait_ready(attacker, SLOWLORIS_READY_S)
        hey, cpu_s, busy = _hey_run(s, group, t)
    finally:
        group.stop(attacker)  # SIGTERM: it prints its statistics and exits; SIGKILL if it does not
        group.procs.remove(attacker)
    after = _header_timeouts(t)
    try:
        seen = parse_slowloris(log.read_text(errors="replace"))
    except (OSError, ValueError, KeyError) as exc:
        raise MeasureError(f"slowloris statistics unreadable ({exc}):\n{attacker.tail()}") from exc
    delta = None if before is None or after is None else after - before
    return hey, cpu_s, busy, seen, delta


def run_slowloris(s: Settings, group: ProcGroup, tmp: Path, t: Target) -> SlowlorisReport:
    report = SlowlorisReport(s.slowloris_connections, PILLION_HEADERS_TIMEOUT_S)
    root = tmp / "slowloris"
    root.mkdir(parents=True, exist_ok=True)
    for rnd in range(1, s.slowloris_rounds + 1):
        attack_first = rnd % 2 == 0  # alternate, so a drift of the machine does not favour one side
        try:
            if attack_first:
                attacked = _under_attack(s, group, t, root / f"round{rnd}.log")
                time.sleep(SLOWLORIS_SETTLE_S)
                baseline = _hey_run(s, group, t)
            else:
                baseline = _hey_run(s, group, t)
                attacked = _under_attack(s, group, t, root / f"round{rnd}.log")
                time.sleep(SLOWLORIS_SETTLE_S)
        except MeasureError as exc:
            report.error = f"round {rnd}: {exc}"
            print(f"bench: slowloris round {rnd}: FAILED\n{_indent(str(exc))}", flush=True)
            break
        hey, cpu_s, busy, seen, delta = attacked
        m = SlowlorisRound(
            round=rnd,
            order="attack first" if attack_first else "baseline first",
            baseline=baseline[0],
            attacked=hey,
            attacker=seen,
            baseline_cpu_s=baseline[1],
            attacked_cpu_s=cpu_s,
            load_core_busy_pct=busy,
            timeouts_delta=delta,
        )
        report.rounds.append(m)
        print(_slowloris_progress(m), flush=True)
    return report


def _slowloris_progress(m: SlowlorisRound) -> str:
    def ms(us: float | None) -> str:
        return "?" if us is None else f"{us / 1000:.1f}ms"

    a = m.attacker
    return (
        f"bench: slowloris round {m.round} ({m.order}): p99@2k {ms(m.baseline.p(99))} -> "
        f"{ms(m.attacked.p(99))} under {a.max_open} slow connections; errors {m.errors}; "
        f"{a.closed_by_server} closed by Pillion after "
        f"{a.lifetime_min_s or 0:.2f}..{a.lifetime_max_s or 0:.2f} s, {a.still_open} open at the end "
        f"(oldest {a.oldest_open_s:.2f} s); load core {m.load_core_busy_pct:.0f}%"
    )


# ---- the mTLS pairs -----------------------------------------------------------------------------------


def mtls_rate(s: Settings) -> float:
    return s.rate_concurrency * s.mtls_rate_qps


def _fixed_rate(s: Settings, group: ProcGroup, url: str) -> HeyResult:
    """One hey run at the mTLS run's fixed rate; MeasureError if it fails."""
    done = group.run(
        hey_argv(url, s.mtls_rate_duration, s.rate_concurrency, s.mtls_rate_qps),
        s.load_cpu,
        timeout=s.mtls_rate_duration + 30,
    )
    return _parsed(done, "hey", parse_hey)


def measure_pair(
    s: Settings, group: ProcGroup, pair: Pair, *, upstream: Target, servers: list[Target], rnd: int, slot: int
) -> PairVisit:
    """A visit of one pair, like `measure` for a target: warm-up, the measured wrk run with A's and B's CPU
    sampled around it, then the fixed-rate hey run with their CPU again."""
    a, b = pair.client, pair.server
    assert a.proc is not None and b.proc is not None and upstream.proc is not None
    warm = group.run(wrk_argv(pair.url, s.connections, s.warmup), s.load_cpu, timeout=s.warmup + 30)
    _checked(warm, "warm-up wrk")
    _alive(a)
    _alive(b)

    up0 = upstream_status(upstream.port)
    counted0 = [_metric(x, "pillion_http_requests_total") for x in pair.sides]
    accepts0 = _metric(b, "pillion_downstream_connections_total")
    live = [x for x in servers if x.proc is not None and x.proc.alive()]
    cpu0 = {x.key: cpu_sample(x.proc.pid) for x in live if x.proc is not None}
    f0, m0 = process_ticks(), machine_sample()
    done = group.run(
        wrk_argv(pair.url, s.connections, s.mtls_duration), s.load_cpu, timeout=s.mtls_duration + 30
    )
    m1, f1 = machine_sample(), process_ticks()
    cpu1 = {x.key: cpu_sample(x.proc.pid) for x in live if x.proc is not None}
    rss = (rss_kib(a.proc.pid), rss_kib(b.proc.pid))
    up1 = upstream_status(upstream.port)
    counted1 = [_metric(x, "pillion_http_requests_total") for x in pair.sides]
    accepts1 = _metric(b, "pillion_downstream_connections_total")
    wrk = _parsed(done, "wrk", parse_wrk)
    _alive(a)
    _alive(b)

    h0 = (cpu_sample(a.proc.pid), cpu_sample(b.proc.pid))
    hey = _fixed_rate(s, group, pair.url)
    h1 = (cpu_sample(a.proc.pid), cpu_sample(b.proc.pid))
    _alive(a)
    _alive(b)

    sh = _shares(s, (m0, m1), (f0, f1), (cpu0, cpu1))

    def used(key: str) -> float:
        return (cpu1[key].ticks - cpu0[key].ticks) / CLK_TCK

    return PairVisit(
        round=rnd,
        slot=slot,
        wrk=wrk,
        client_cpu_s=used(a.key),
        server_cpu_s=used(b.key),
        upstream_cpu_s=used(upstream.key),
        client_rss_kib=rss[0],
        server_rss_kib=rss[1],
        server_core_busy_pct=sh.server_core_busy_pct,
        load_core_busy_pct=sh.load_core_busy_pct,
        outside_pct=sh.outside_pct,
        hey=hey,
        hey_client_cpu_s=(h1[0].ticks - h0[0].ticks) / CLK_TCK,
        hey_server_cpu_s=(h1[1].ticks - h0[1].ticks) / CLK_TCK,
        upstream_conns_opened=None if up0 is None or up1 is None else up1[0] - up0[0] - 1,  # minus our probe
        client_counted=_delta(counted0[0], counted1[0]),
        server_counted=_delta(counted0[1], counted1[1]),
        server_accepts=_delta(accepts0, accepts1),
        foreign_top=sh.foreign,
    )


def start_pair(
    s: Settings, group: ProcGroup, tmp: Path, key: str, *, upstream: Target, ids: Identities
) -> Pair:
    """Pair `key` started and checked; returned FAILED (and stopped) if it cannot start or fails a check."""
    if key == "pillion-mtls":
        pair = start_pillion_pair(
            group, tmp, s.server_cpu, upstream.port, s.ready_timeout, pillion=s.pillion, ids=ids
        )
    elif key == "minimal-mtls":
        pair = start_minimal_pair(
            group, tmp, s.server_cpu, upstream.port, s.ready_timeout, python=sys.executable, ids=ids
        )
    else:
        pair = start_haproxy_pair(group, tmp, s.server_cpu, upstream.port, s.ready_timeout, ids=ids)
    if pair.error is None:
        check_pair(pair, ids)
        if pair.error is not None:
            stop_pair(group, pair)
    if pair.error is not None:
        print(f"bench: {pair.label}: FAILED\n{_indent(pair.error)}", flush=True)
    return pair


def start_pairs(
    s: Settings, group: ProcGroup, tmp: Path, upstream: Target
) -> tuple[Identities | None, dict[str, Pair]]:
    """The CA, A's and B's SVIDs, then each pair `--only` kept (see `start_pair`); every pair FAILED when
    the identities fail."""
    try:
        ids = make_identities(tmp, s.pillion)
    except (RuntimeError, OSError) as exc:
        problem = f"the SVIDs could not be made with `{s.pillion} ca`: {exc}"
        failed = {k: Pair(k, Target(f"{k}-a", 0), Target(f"{k}-b", 0), error=problem) for k in s.mtls_pairs}
        return None, failed
    return ids, {key: start_pair(s, group, tmp, key, upstream=upstream, ids=ids) for key in s.mtls_pairs}


def _report_pairs(pairs: dict[str, Pair]) -> dict[str, MtlsPair]:
    return {
        k: MtlsPair(k, p.label, p.error, p.xff_seen, p.xfcc_seen, p.ids_seen, p.tls_seen, p.refusals)
        for k, p in pairs.items()
    }


def run_mtls(
    s: Settings,
    group: ProcGroup,
    tmp: Path,
    pairs: dict[str, Pair],
    ids: Identities | None,
    *,
    upstream: Target,
    targets: dict[str, Target],
    collector: Target | None,
) -> MtlsReport:
    """MTLS_ROUNDS rounds, each one hey run straight to the upstream and one visit of each live pair, in an
    order rotated per round; from the second round on, each pair is new processes (as in `run`). A pair
    whose run fails is marked FAILED and stopped; the run goes on."""
    report = MtlsReport(mtls_rate(s), _report_pairs(pairs))
    order = ["direct", *pairs]
    for rnd in range(1, s.mtls_rounds + 1):
        if all(pair.error is not None for pair in pairs.values()):
            report.error = report.error or "not run: no pair is up"  # the direct call alone means nothing
            break
        if rnd > 1 and ids is not None:
            for key, pair in pairs.items():
                if pair.error is None:
                    stop_pair(group, pair)
                    pairs[key] = start_pair(s, group, tmp, key, upstream=upstream, ids=ids)
        servers = _our_processes(targets, pairs, collector)
        shift = (rnd - 1) % len(order)
        this = MtlsRound(rnd, order[shift:] + order[:shift])
        for slot, key in enumerate(this.order):
            if key == "direct":
                try:
                    this.direct = _fixed_rate(s, group, upstream.url)
                except MeasureError as exc:
                    report.error = f"round {rnd}: the direct call failed: {exc}"
                    print(f"bench: mtls round {rnd} direct: FAILED\n{_indent(str(exc))}", flush=True)
                continue
            pair = pairs[key]
            if pair.error is not None:
                continue
            try:
                visit = measure_pair(s, group, pair, upstream=upstream, servers=servers, rnd=rnd, slot=slot)
            except MeasureError as exc:
                pair.fail(str(exc))
                stop_pair(group, pair)
                print(
                    f"bench: mtls round {rnd} {pair.label}: FAILED\n{_indent(pair.error or '')}", flush=True
                )
                continue
            this.pairs[key] = visit
            print(_pair_progress(pair, visit), flush=True)
        report.rounds.append(this)
        if upstream.proc is None or not upstream.proc.alive():
            report.error = f"round {rnd}: the upstream nginx exited"
            break
        if this.direct is not None:
            print(
                f"bench: mtls round {rnd} direct: p99 {this.direct.p(99) or 0:.0f}us; added p99: "
                + ", ".join(
                    f"{k} {added:+.0f}us" for k in this.pairs if (added := this.added_p99_us(k)) is not None
                ),
                flush=True,
            )
    report.pairs = _report_pairs(pairs)  # a pair may have FAILED during the rounds
    return report


def _pair_progress(pair: Pair, v: PairVisit) -> str:
    flag = f" ERRORS={v.errors}" if v.errors else ""
    return (
        f"bench: mtls round {v.round} {pair.key:<12} {v.wrk.rps:>9,.0f} req/s  "
        f"p99 {(v.wrk.p(99) or 0) / 1000:.3f}ms  cpu A {v.client_cpu_us_per_req or 0:.1f} "
        f"B {v.server_cpu_us_per_req or 0:.1f}us/req  fixed rate: "
        f"cpu A {v.hey_client_cpu_us_per_req or 0:.1f} B {v.hey_server_cpu_us_per_req or 0:.1f}us/req "
        f"p99 {(v.hey.p(99) or 0) / 1000:.1f}ms  "
        f"other-cpu {v.outside_pct:.0f}%{flag}"
    )


# ---- the run ------------------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [x.strip() for x in (done.stdout + "\n" + done.stderr).splitlines() if x.strip()]
    if done.returncode != 0 and argv[-1] == "--version":
        return f"unavailable (exit {done.returncode}: {lines[-1] if lines else ''})"
    return lines[0] if lines else "unavailable"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _build_kind(pillion: str) -> str:
    """Whether the measured pillion runs its hot modules compiled (mypyc) or as pure Python."""
    probe = "import pillion.proxy.downstream as m; print(m.__file__)"
    python = Path(pillion).with_name("python")
    where = _first_line([str(python), "-c", probe])
    return f"compiled (mypyc): {where}" if where.endswith(".so") else f"pure Python: {where}"


def versions(pillion: str) -> dict[str, str]:
    hey = _first_line(["dpkg-query", "-W", "-f=${Version}", "hey"])
    return {
        "haproxy": _first_line(["haproxy", "-v"]),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]).split(" Copyright")[0],
        "hey": f"hey {hey} (Debian package; hey has no --version)",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "minimal proxy": f"uvloop {_dist_version('uvloop')}, httptools {_dist_version('httptools')}",
        "pillion": _first_line([pillion, "--version"]),
        "pillion build": _build_kind(pillion),
        "kernel": platform.release(),
    }


def machine() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_total": mem,
        "clk_tck": CLK_TCK,
    }


NOTES = [
    "CPU is utime+stime from /proc/PID/stat in clock ticks (1/{tck} s), summed over the target's process "
    "tree and sampled just before and after the measured wrk run; an 8 s run at full load is ~{ticks} ticks, "
    "so the resolution is well under 1%, but a short fixed-rate run of a light target is a few dozen ticks. "
    "results.json also has a nanosecond cross-check from /proc/PID/task/*/schedstat (cpu_schedstat_s).",
    "Each proxy's CPU/request includes the work of accepting/closing wrk's connections at the start and end "
    "of the run, and the (up to `connections`) requests in flight when wrk stops are served but not counted: "
    "both are < 0.1% at these rates.",
    "Under saturation a proxy's CPU/request falls (more requests per wake-up/syscall), so the fixed-rate "
    "CPU µs/req @2k is the more sidecar-like figure and is usually higher.",
    "The proxy and the upstream share the server core, so req/s through a proxy is bounded by proxy + "
    "upstream CPU per request; compare CPU/request for the proxy's own cost.",
    "hey prints latencies with 4 decimals of a second: p50@2k/p99@2k are quantised to 0.1 ms, so a ratio of "
    "two sub-millisecond p99s is only good to one step (e.g. 0.5 vs 0.6 ms = 1.20x).",
    "RSS sums VmRSS over the tree (nginx master + worker share pages, which are counted twice); results.json "
    "has Pss (pss_mib), which splits shared pages fairly.",
    "All the servers run for the whole benchmark (each proxy as a new process in each round); the idle ones "
    "are on the server core too, but idle. CPU "
    "used by anything else (other jobs on a shared machine) is reported in the sanity checks.",
    "On loopback the kernel's receive processing (softirq) mostly runs in the *sender's* context and, on "
    "this kernel's tick-based accounting, is charged to whatever process was running: a proxy is charged for "
    "delivering what it sends, not for what it receives. That is the same for every proxy.",
    "If neither core is ~100% busy, nothing was saturated: client and server wait on each other's wake-ups "
    "(cross-core wake-ups are slow in a VM) -- req/s then measures latency as much as capacity, which is "
    "another reason to compare CPU/request.",
]


def start_target(
    s: Settings, group: ProcGroup, tmp: Path, key: str, *, upstream: Target, collector: Target | None
) -> Target:
    """Start one of the proxies (`key`) in front of `upstream`; pillion-full exports to `collector`."""
    if key in ("haproxy", "haproxy-outbound"):
        return start_haproxy(
            group, tmp, s.server_cpu, upstream.port, s.ready_timeout, outbound=key == "haproxy-outbound"
        )
    if key == "nginx":
        return start_nginx(group, tmp, s.server_cpu, upstream.port, s.ready_timeout)
    if key == "minimal":
        return start_minimal(group, tmp, s.server_cpu, upstream.port, s.ready_timeout, python=sys.executable)
    return start_pillion(
        group,
        tmp,
        s.server_cpu,
        upstream.port,
        s.ready_timeout,
        pillion=s.pillion,
        key=key,
        collector=collector,
    )


def checked(group: ProcGroup, t: Target, when: str = "") -> Target:
    """`t` after the forwarding checks; one that failed them, or failed to start, is reported and stopped."""
    if t.error is None:
        check_forwarding(t)
    if t.error is not None:
        print(f"bench: {t.label}: FAILED{when}\n{_indent(t.error)}", flush=True)
        if t.proc is not None:
            group.stop(t.proc)
    return t


def restart_target(
    s: Settings, group: ProcGroup, tmp: Path, t: Target, *, upstream: Target, collector: Target | None
) -> Target:
    """A new process for `t`'s row in place of the one that served the last round (see `run`)."""
    if t.proc is not None:
        group.stop(t.proc)
    fresh = start_target(s, group, tmp, t.key, upstream=upstream, collector=collector)
    return checked(group, fresh, " on restart")


def _our_processes(
    targets: dict[str, Target], pairs: dict[str, Pair], collector: Target | None
) -> list[Target]:
    # The pairs' sidecars (idle during the rounds) and the collector are the benchmark's own processes too:
    # their CPU is ours, not "outside".
    servers = [*targets.values(), *(side for pair in pairs.values() for side in pair.sides if side.proc)]
    if collector is not None and collector.proc is not None:
        servers.append(collector)
    return servers


def run(s: Settings, group: ProcGroup, tmp: Path) -> int:
    started = time.monotonic()
    print(f"bench: temporary directory {tmp}", flush=True)
    upstream = start_upstream(group, tmp, s.server_cpu, s.ready_timeout)
    if upstream.error is not None:
        print(f"bench: the upstream nginx did not start:\n{upstream.error}", file=sys.stderr)
        return 2
    # pillion-full's spans go to a collector of its own, on the load core (like wrk and hey).
    collector = (
        start_collector(group, tmp, s.load_cpu, s.ready_timeout, python=sys.executable)
        if "pillion-full" in s.only
        else None
    )
    targets: dict[str, Target] = {"upstream": upstream}
    for key in s.only[1:]:
        targets[key] = start_target(s, group, tmp, key, upstream=upstream, collector=collector)
    for t in targets.values():
        checked(group, t)
    mtls_on = bool(s.mtls_pairs) and s.mtls_rounds > 0
    ids, pairs = start_pairs(s, group, tmp, upstream) if mtls_on else (None, {})
    servers = _our_processes(targets, pairs, collector)
    reports = {k: TargetReport(k, LABELS[k]) for k in targets}
    order = list(targets)
    live = sum(1 for t in targets.values() if t.error is None)
    estimate = s.rounds * live * (s.warmup + s.duration + s.rate_duration + PER_VISIT_OVERHEAD_S)
    estimate += (s.rounds - 1) * live * RESTART_S
    if "pillion-full" in targets and targets["pillion-full"].error is None:
        estimate += s.rounds * TRACE_SETTLE_S
    slowloris_on = "pillion" in targets and s.slowloris_rounds > 0
    if slowloris_on:
        estimate += s.slowloris_rounds * (2 * slowloris_duration(s) + SLOWLORIS_OVERHEAD_S)
    if mtls_on:
        live_pairs = sum(1 for pair in pairs.values() if pair.error is None)
        visit = s.warmup + s.mtls_duration + s.mtls_rate_duration + PER_VISIT_OVERHEAD_S
        estimate += s.mtls_rounds * (live_pairs * visit + s.mtls_rate_duration)
    print(f"bench: {live} targets x {s.rounds} rounds, about {estimate / 60:.1f} min", flush=True)

    aborted: str | None = None
    for rnd in range(1, s.rounds + 1):
        if rnd > 1:
            # Each round measures new processes: two processes of the same build can differ by several
            # percent for a whole run (where the allocator and the hash seed put things), so a row's
            # median is taken over as many processes as rounds, not over one process's luck.
            for key, t in targets.items():
                if t is not upstream and t.error is None:
                    targets[key] = restart_target(s, group, tmp, t, upstream=upstream, collector=collector)
            servers = _our_processes(targets, pairs, collector)
        shift = (rnd - 1) % len(order)
        for slot, key in enumerate(order[shift:] + order[:shift]):
            t = targets[key]
            if t.error is not None:
                continue
            try:
                m = measure(s, group, t, upstream=upstream, servers=servers, rnd=rnd, slot=slot)
            except MeasureError as exc:
                t.fail(str(exc))
                print(f"bench: round {rnd} {t.label}: FAILED\n{_indent(t.error or '')}", flush=True)
                if t.proc is not None and t is not upstream:
                    group.stop(t.proc)
                if t is upstream or upstream.proc is None or not upstream.proc.alive():
                    aborted = "the upstream failed; every row after this point would be meaningless"
                    break
                continue
            reports[key].rounds.append(m)
            print(_progress(t, m), flush=True)
            if upstream.proc is None or not upstream.proc.alive():
                aborted = "the upstream nginx exited"
                break
        if aborted:
            break

    mtls: MtlsReport | None = None
    if mtls_on:
        if aborted:
            mtls = MtlsReport(mtls_rate(s), _report_pairs(pairs), error=f"not run: {aborted}")
        else:
            mtls = run_mtls(
                s, group, tmp, pairs, ids, upstream=upstream, targets=targets, collector=collector
            )

    slowloris: SlowlorisReport | None = None
    if slowloris_on:
        pillion = targets["pillion"]
        if pillion.error is None and not aborted:
            slowloris = run_slowloris(s, group, tmp, pillion)
        else:
            slowloris = SlowlorisReport(s.slowloris_connections, PILLION_HEADERS_TIMEOUT_S)
            slowloris.error = "not run: " + (aborted or "the Pillion row FAILED")

    for key, t in targets.items():
        reports[key].error = t.error
        reports[key].xff_seen = t.xff_seen
        reports[key].ids_seen = t.ids_seen
        reports[key].metrics_probe = t.metrics_probe
    summaries = {k: summarize(r) for k, r in reports.items()}
    rat = ratios(summaries)
    verdicts = bars(reports, summaries, slowloris, mtls)
    meta: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "aborted": aborted,
        "machine": machine(),
        "versions": versions(s.pillion),
        "params": {
            "mode": "quick (smoke test; numbers are indicative only)" if s.quick else "full",
            "rounds": s.rounds,
            "order": order,
            "duration_s": s.duration,
            "connections": s.connections,
            "warmup_s": s.warmup,
            "rate_duration_s": s.rate_duration,
            "rate_concurrency": s.rate_concurrency,
            "rate_qps_per_worker": s.rate_qps,
            "hey_total_rps": s.rate_concurrency * s.rate_qps,
            "server_cpu": s.server_cpu,
            "load_cpu": s.load_cpu,
            "warmup_cmd": _cmd(s.load_cpu, wrk_argv("URL", s.connections, s.warmup)),
            "wrk_cmd": _cmd(s.load_cpu, wrk_argv("URL", s.connections, s.duration)),
            "hey_cmd": _cmd(s.load_cpu, hey_argv("URL", s.rate_duration, s.rate_concurrency, s.rate_qps)),
            "pillion_cmd": f"taskset -c {s.server_cpu} {s.pillion} run -c bench.yaml",
            "minimal_cmd": _cmd(s.server_cpu, [*minimal_argv(sys.executable, 0, 0)[:2], "PORT", "UPSTREAM"]),
            "slowloris_rounds": s.slowloris_rounds if slowloris_on else 0,
            "slowloris_hey_cmd": _cmd(
                s.load_cpu, hey_argv("URL", slowloris_duration(s), s.rate_concurrency, s.rate_qps)
            ),
            "slowloris_cmd": f"taskset -c {s.load_cpu} python bench/slowloris.py PORT "
            f"--connections {s.slowloris_connections}",
            "collector_cmd": _cmd(s.load_cpu, [*collector_argv(sys.executable, 0)[:2], "PORT"]),
            "mtls_rounds": s.mtls_rounds if mtls_on else 0,
            "mtls_pairs": list(pairs),
            "mtls_wrk_cmd": _cmd(s.load_cpu, wrk_argv("URL", s.connections, s.mtls_duration)),
            "mtls_hey_cmd": _cmd(
                s.load_cpu, hey_argv("URL", s.mtls_rate_duration, s.rate_concurrency, s.mtls_rate_qps)
            ),
            "mtls_rate_rps": mtls_rate(s),
        },
        "notes": [n.format(tck=CLK_TCK, ticks=8 * CLK_TCK) for n in NOTES],
    }
    markdown = render_markdown(meta, reports, summaries, rat, verdicts, slowloris=slowloris, mtls=mtls)
    s.results.parent.mkdir(parents=True, exist_ok=True)
    s.results.write_text(markdown)
    s.json_out.parent.mkdir(parents=True, exist_ok=True)
    s.json_out.write_text(to_json(meta, reports, summaries, rat, verdicts, slowloris=slowloris, mtls=mtls))
    print()
    print(markdown)
    print(f"bench: wrote {s.results} and {s.json_out} in {time.monotonic() - started:.0f} s")
    for b in verdicts:
        print(f"BAR {'PASS' if b.passed else 'FAIL'}: {b.name} -- {b.detail}")
    for info in info_lines(reports, summaries, mtls):
        print(f"INFO (not a bar): {info}")
    if s.check and not all(b.passed for b in verdicts):
        return 1
    return 0


def _cmd(cpu: int, argv: list[str]) -> str:
    return " ".join(["taskset", "-c", str(cpu), *argv])


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _progress(t: Target, m: Measurement) -> str:
    def ms(us: float | None) -> str:
        return "?" if us is None else f"{us / 1000:.3f}ms"

    cpu = m.cpu_us_per_req
    flag = f" ERRORS={m.errors}" if m.errors else ""
    hey50 = ms(m.hey.p(50) if m.hey else None)
    hey99 = ms(m.hey.p(99) if m.hey else None)
    return (
        f"bench: round {m.round} {t.key:<11} {m.wrk.rps:>9,.0f} req/s  "
        f"p50 {ms(m.wrk.p(50))} p99 {ms(m.wrk.p(99))}  cpu {cpu or 0:.1f}us/req  "
        f"rss {m.rss_kib / 1024:.1f}MiB  @2k p50 {hey50} p99 {hey99}  other-cpu {m.outside_pct:.0f}%{flag}"
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    missing = [tool for tool in ("taskset", "wrk", "hey", "haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        print(f"bench: missing tools: {', '.join(missing)} (run `make system-deps`)", file=sys.stderr)
        return 2
    usable = os.sched_getaffinity(0)
    if s.server_cpu not in usable or s.load_cpu not in usable:
        print(
            f"bench: cores {s.server_cpu} and {s.load_cpu} must be usable (have {sorted(usable)})",
            file=sys.stderr,
        )
        return 2
    os.sched_setaffinity(0, {s.load_cpu})  # the harness stays off the server core
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    group = ProcGroup()
    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-"))
    try:
        return run(s, group, tmp)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping every server", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abort the clean-up
        group.stop_all()
        if s.keep_tmp:
            print(f"bench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
