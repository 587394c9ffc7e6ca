"""Turn per-round measurements into medians, ratios, bar verdicts, bench/RESULTS.md and results.json.

Theory of operation: the harness records one `Measurement` per target per round (a wrk run at saturation,
then a hey run at a fixed rate, plus /proc accounting and sanity counters). Every headline number is the
median over rounds of that per-round value -- rounds visit the targets in a rotated order, so slow drifts
of the machine (thermal, a neighbour's job) fall on every target alike and the median discards a round
that went wrong. Ratios are Pillion's median over the baseline's median (baselines: HAProxy, nginx and
the "minimal" uvloop + httptools calibration proxy); for CPU/request, latency and RSS lower is better (a
ratio below 1 means Pillion is cheaper/faster), for req/s higher is better. The first three bars are
evaluated on the "pillion" row (metrics on, access log off) against the "haproxy" row; the outbound bar,
present when either outbound row was part of the run, on "pillion-outbound" against "haproxy-outbound"
(both doing host routing, retries, circuit breaking and outlier detection); the telemetry bar, present
when either row is, on "pillion-full" (metrics, tracing at 1% to a real collector, access log to a file)
against "pillion-off" (none of them), and it also needs spans received and access-log lines written in
every round, or the full row did not really do its telemetry. A Pillion row that FAILED or saw errors
fails its bars. The minimal row never decides a bar: the Bar section only adds an informational
"minimal proxy / HAProxy" CPU line (`floor_line`), the floor that Python on this runtime sets, and a
missing or FAILED minimal row just leaves "-" in its places. The slowloris bar compares the "pillion"
row with itself: the fixed-rate hey p99 while bench/slowloris.py holds 500 slow connections on it over
the same without them (medians over its own rounds), and it also needs every request answered 2xx and
every slow connection closed by Pillion's header timeout. The mTLS run (`MtlsReport`) has a table of its
own: per pair (A -> mTLS -> B), the CPU per request of each sidecar and the fixed-rate p99 minus the direct
call's in the same round (`added_p99_us`: the median of the per-round differences, over the rounds whose
direct call did not stall); its two bars compare each Pillion sidecar with the HAProxy on the same side
(1.5x) and cap the Pillion pair's added p99 (1 ms), which fails as not measured when fewer than 3 rounds
are left. The p99@2k bar and the slowloris bar guard their reference run the same way (`StallGuard`): their
medians are over the rounds, paired by number, whose HAProxy run or baseline had a hey p99 <= 4 ms
(`STALL_US`), and they fail as not measured likewise; the tables keep every round.
Nothing here runs a process: it is pure data -> text.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen import HeyResult, SlowlorisResult, WrkResult
from servers import TRACE_SAMPLING

CPU_BAR = 1.15  # Pillion CPU/request <= 1.15 x HAProxy's
P99_BAR = 1.20  # Pillion fixed-rate p99 <= 1.2 x HAProxy's
RSS_BAR_MIB = 30.0  # Pillion VmRSS after the run <= 30 MiB
OUTBOUND_CPU_BAR = 1.3  # Pillion outbound CPU/request <= 1.3 x HAProxy outbound's
TELEMETRY_CPU_BAR = 1.15  # Pillion with metrics + tracing 1% + access log: CPU/request <= 1.15 x all off
SLOWLORIS_P99_BAR = 2.0  # Pillion fixed-rate p99 under slowloris <= 2 x its p99 without
SLOWLORIS_SWEEP_SLACK_S = 2.0  # a slow connection must be closed within the header timeout + this
MTLS_CPU_BAR = 1.5  # each Pillion sidecar of the mTLS pair: CPU/request <= 1.5 x HAProxy's on that side
MTLS_ADDED_P99_BAR_US = 1000.0  # the Pillion pair's fixed-rate p99 minus the direct call's, same round
# A round whose direct call has a fixed-rate p99 above this is left out of the added p99: a burst of 8
# requests costs the upstream alone well under 1 ms of CPU, so a p99 over 2 ms means the machine paused
# during that run (seen at 3-34 ms), and the difference would say nothing about the pairs (it even turns
# negative).
DIRECT_STALL_US = 2000.0
# Likewise for the reference run of the p99@2k bar (HAProxy's) and of the slowloris bar (the baseline): a
# single hop at 2k req/s has a quiet hey p99 of 0.6-2.3 ms here and the stalls seen were 4.6-34 ms, so a
# run above this measured a pause of the machine, not the proxy, and would make Pillion's ratio look good.
STALL_US = 4000.0
# With fewer rounds left than this (or than were run, in a shorter run), a stall-guarded bar is not
# measured, and fails: a median of one or two rounds is not one to pass on.
MIN_CLEAN_ROUNDS = 3
NOISY_PCT = 15.0  # CPU used by other processes (% of a core) above which a run is flagged as not quiet


@dataclass(frozen=True)
class Spans:
    """Tracing over one visit of the all-telemetry row (its warm-up, wrk and hey runs): the spans the
    collector received, the rise of Pillion's pillion_tracing_spans_dropped_total, and the requests sent."""

    received: float | None
    dropped: float | None
    requests: int | None

    @property
    def share(self) -> float | None:
        """Spans received per request sent (about the sampling rate)."""
        return self.received / self.requests if self.received is not None and self.requests else None


@dataclass
class Measurement:
    """One target, one round."""

    round: int
    slot: int
    wrk: WrkResult
    cpu_s: float
    cpu_schedstat_s: float
    upstream_cpu_s: float
    rss_kib: int
    pss_kib: int | None
    server_core_busy_pct: float
    load_core_busy_pct: float
    outside_pct: float
    steal_pct: float
    tree_changed: bool = False
    hey: HeyResult | None = None
    hey_cpu_s: float | None = None
    upstream_conns_opened: int | None = None
    upstream_requests: int | None = None
    counter_name: str | None = None
    counter_delta: float | None = None
    counter_note: str | None = None
    access_log_lines: int | None = None
    spans: Spans | None = None  # the all-telemetry row only
    foreign_top: list[tuple[str, float]] = field(default_factory=list)  # (process, % of a core)

    @property
    def cpu_us_per_req(self) -> float | None:
        return self.cpu_s * 1e6 / self.wrk.requests if self.wrk.requests else None

    @property
    def upstream_cpu_us_per_req(self) -> float | None:
        return self.upstream_cpu_s * 1e6 / self.wrk.requests if self.wrk.requests else None

    @property
    def hey_cpu_us_per_req(self) -> float | None:
        if self.hey is None or self.hey_cpu_s is None or not self.hey.requests:
            return None
        return self.hey_cpu_s * 1e6 / self.hey.requests

    @property
    def errors(self) -> int:
        return self.wrk.errors + (self.hey.errors + self.hey.non_2xx_3xx if self.hey else 0)


@dataclass
class TargetReport:
    key: str
    label: str
    error: str | None = None
    xff_seen: str | None = None
    ids_seen: str | None = None  # "<x-request-id> <x-forwarded-proto>" as the upstream saw them
    rounds: list[Measurement] = field(default_factory=list)
    metrics_probe: str | None = None  # the telemetry-off row: what its admin /metrics answered

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.rounds)

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.rounds)


@dataclass
class SlowlorisRound:
    """One baseline hey run and one hey run under attack, in `order`, against the same Pillion."""

    round: int
    order: str  # "baseline first" / "attack first"
    baseline: HeyResult
    attacked: HeyResult
    attacker: SlowlorisResult
    baseline_cpu_s: float  # Pillion's utime+stime during each hey run
    attacked_cpu_s: float
    load_core_busy_pct: float  # the load core (hey + attacker) during the attacked run
    timeouts_delta: float | None  # pillion_downstream_timeouts_total{timeout="request_headers"}, whole attack

    @property
    def errors(self) -> int:
        return sum(h.errors + h.non_2xx_3xx for h in (self.baseline, self.attacked))


@dataclass
class SlowlorisReport:
    connections: int
    headers_timeout_s: float
    rounds: list[SlowlorisRound] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, float | None]:
        def cpu(seconds: float, hey: HeyResult) -> float | None:
            return seconds * 1e6 / hey.requests if hey.requests else None

        r = self.rounds
        out = {
            "baseline_p50_us": median([x.baseline.p(50) for x in r]),
            "baseline_p99_us": median([x.baseline.p(99) for x in r]),
            "attacked_p50_us": median([x.attacked.p(50) for x in r]),
            "attacked_p99_us": median([x.attacked.p(99) for x in r]),
            "baseline_cpu_us_per_req": median([cpu(x.baseline_cpu_s, x.baseline) for x in r]),
            "attacked_cpu_us_per_req": median([cpu(x.attacked_cpu_s, x.attacked) for x in r]),
            "load_core_busy_pct": median([x.load_core_busy_pct for x in r]),
        }
        out["p99_ratio"] = ratio(out["attacked_p99_us"], out["baseline_p99_us"])
        return out

    @property
    def guard(self) -> StallGuard:
        """The rounds the bar counts: those whose baseline did not stall."""
        return stall_guard(
            len(self.rounds),
            [(x.round, x.baseline.p(99)) for x in self.rounds],
            STALL_US,
            stalled="the baseline's p99@2k stalled (",
            missing="no baseline p99@2k",
        )

    def lifetime_range(self) -> tuple[float, float] | None:
        lows = [x.attacker.lifetime_min_s for x in self.rounds if x.attacker.lifetime_min_s is not None]
        highs = [x.attacker.lifetime_max_s for x in self.rounds if x.attacker.lifetime_max_s is not None]
        return (min(lows), max(highs)) if lows and highs else None


@dataclass
class PairVisit:
    """One mTLS pair (sidecar A -> mTLS -> sidecar B -> upstream), one round: a saturating wrk run and a
    fixed-rate hey run through A, with A's and B's CPU (utime+stime) over each."""

    round: int
    slot: int
    wrk: WrkResult
    client_cpu_s: float
    server_cpu_s: float
    upstream_cpu_s: float
    client_rss_kib: int
    server_rss_kib: int
    server_core_busy_pct: float
    load_core_busy_pct: float
    outside_pct: float
    hey: HeyResult
    hey_client_cpu_s: float
    hey_server_cpu_s: float
    upstream_conns_opened: int | None = None
    client_counted: float | None = None  # Pillion A's pillion_http_requests_total rise over the wrk run
    server_counted: float | None = None  # Pillion B's
    server_accepts: float | None = None  # Pillion B's connections accepted (= TLS handshakes) over it
    foreign_top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def client_cpu_us_per_req(self) -> float | None:
        return _per_request(self.client_cpu_s, self.wrk.requests)

    @property
    def server_cpu_us_per_req(self) -> float | None:
        return _per_request(self.server_cpu_s, self.wrk.requests)

    @property
    def hey_client_cpu_us_per_req(self) -> float | None:
        return _per_request(self.hey_client_cpu_s, self.hey.requests)

    @property
    def hey_server_cpu_us_per_req(self) -> float | None:
        return _per_request(self.hey_server_cpu_s, self.hey.requests)

    @property
    def errors(self) -> int:
        return self.wrk.errors + self.hey.errors + self.hey.non_2xx_3xx


def _per_request(seconds: float, requests: int) -> float | None:
    return seconds * 1e6 / requests if requests else None


def _rounds(rounds: list[int]) -> str:
    """ "round 3" or "rounds 1, 3"."""
    return ("round " if len(rounds) == 1 else "rounds ") + ", ".join(map(str, rounds))


@dataclass(frozen=True)
class StallGuard:
    """The rounds a latency bar counts: those whose reference run (what the bar subtracts or divides by:
    the direct call, HAProxy's run, the slowloris baseline) was measured and did not stall. A stalled
    reference makes the proxy look better than it is, so it is left out; a stall of the proxy's own run
    only makes it look worse, and stays."""

    run: int  # rounds run
    counted: list[int]  # the rounds counted, by number
    note: str  # "; round 3 left out: <why>" for each reason, or ""

    @property
    def needed(self) -> int:
        """MIN_CLEAN_ROUNDS, or all the rounds of a shorter run."""
        return min(MIN_CLEAN_ROUNDS, self.run)

    @property
    def measured(self) -> bool:
        return len(self.counted) >= self.needed

    @property
    def not_measured(self) -> str:
        """How a bar's detail begins when too few rounds are left ("" otherwise)."""
        if self.measured:
            return ""
        return f"NOT MEASURED: {len(self.counted)} of {self.run} rounds counted, fewer than {self.needed}; "


def stall_guard(
    run: int, refs: list[tuple[int, float | None]], limit_us: float, *, stalled: str, missing: str
) -> StallGuard:
    """`refs`: (round, the reference run's p99 or None without one) for each round the measured side has.
    The note names the rounds left out: "<stalled><their p99s> > <limit> ms)", then "<missing>"."""
    stalls = [(rnd, p99) for rnd, p99 in refs if p99 is not None and p99 > limit_us]
    absent = [rnd for rnd, p99 in refs if p99 is None]
    note = ""
    if stalls:
        note += (
            f"; {_rounds([rnd for rnd, _ in stalls])} left out: {stalled}"
            + ", ".join(fmt_ms(p99, 1) for _, p99 in stalls)
            + f" > {limit_us / 1000:g} ms)"
        )
    if absent:
        note += f"; {_rounds(absent)} left out: {missing}"
    counted = [rnd for rnd, p99 in refs if p99 is not None and p99 <= limit_us]
    return StallGuard(run, counted, note)


@dataclass
class MtlsRound:
    """One round of the mTLS run: the direct call at the fixed rate and each live pair, in `order`."""

    round: int
    order: list[str]  # "direct" and the pair keys, rotated per round
    direct: HeyResult | None = None
    pairs: dict[str, PairVisit] = field(default_factory=dict)

    def added_p99_us(self, key: str) -> float | None:
        """p99 through the pair minus p99 of the direct call, both at the fixed rate in this round."""
        visit = self.pairs.get(key)
        through = visit.hey.p(99) if visit is not None else None
        direct = self.direct_p99_us
        return None if through is None or direct is None else through - direct

    @property
    def direct_p99_us(self) -> float | None:
        return self.direct.p(99) if self.direct is not None else None


@dataclass
class MtlsPair:
    """What the harness learnt of one pair before the rounds (servers.check_pair), and whether it FAILED."""

    key: str
    label: str
    error: str | None = None
    xff_seen: str | None = None
    xfcc_seen: str | None = None
    ids_seen: str | None = None
    tls_seen: str | None = None  # version and suite B negotiated with the harness (as A would)
    refusals: str | None = None  # how B refused plaintext and a TLS client without a certificate


# metric name -> how to read it from one pair visit
PAIR_METRICS: dict[str, Callable[[PairVisit], float | None]] = {
    "rps": lambda v: v.wrk.rps,
    "p50_us": lambda v: v.wrk.p(50),
    "p99_us": lambda v: v.wrk.p(99),
    "client_cpu_us_per_req": lambda v: v.client_cpu_us_per_req,
    "server_cpu_us_per_req": lambda v: v.server_cpu_us_per_req,
    "upstream_cpu_us_per_req": lambda v: _per_request(v.upstream_cpu_s, v.wrk.requests),
    "hey_rps": lambda v: v.hey.rps,
    "hey_p50_us": lambda v: v.hey.p(50),
    "hey_p99_us": lambda v: v.hey.p(99),
    "hey_client_cpu_us_per_req": lambda v: v.hey_client_cpu_us_per_req,
    "hey_server_cpu_us_per_req": lambda v: v.hey_server_cpu_us_per_req,
    "client_rss_mib": lambda v: v.client_rss_kib / 1024,
    "server_rss_mib": lambda v: v.server_rss_kib / 1024,
    "server_core_busy_pct": lambda v: v.server_core_busy_pct,
    "load_core_busy_pct": lambda v: v.load_core_busy_pct,
    "outside_pct": lambda v: v.outside_pct,
}

MTLS_RATIO_METRICS: dict[str, str] = {
    "client_cpu_us_per_req": "A CPU µs/request (wrk, saturated)",
    "server_cpu_us_per_req": "B CPU µs/request (wrk, saturated)",
    "hey_client_cpu_us_per_req": "A CPU µs/request at the fixed rate (hey)",
    "hey_server_cpu_us_per_req": "B CPU µs/request at the fixed rate (hey)",
    "hey_p99_us": "p99 through the pair at the fixed rate (hey)",
    "rps": "req/s through the pair (wrk; higher is better)",
}


@dataclass
class MtlsReport:
    """The mTLS run: the Pillion pair and the HAProxy pair doing the same hop, and the direct call."""

    rate_rps: float  # the fixed rate of the hey runs
    pairs: dict[str, MtlsPair]
    rounds: list[MtlsRound] = field(default_factory=list)
    error: str | None = None  # the run could not go on (identities not made, the upstream died, ...)

    @property
    def rate_label(self) -> str:
        return f"@{self.rate_rps / 1000:g}k"

    def visits(self, key: str) -> list[PairVisit]:
        return [r.pairs[key] for r in self.rounds if key in r.pairs]

    def errors(self, key: str) -> int:
        return sum(v.errors for v in self.visits(key))

    def usable(self, key: str) -> bool:
        pair = self.pairs.get(key)
        return pair is not None and pair.error is None and bool(self.visits(key))

    @property
    def clean_rounds(self) -> list[MtlsRound]:
        """The rounds whose direct call ran and did not stall (`guard`): their added p99 counts."""
        counted = self.guard.counted
        return [r for r in self.rounds if r.round in counted]

    def summary(self, key: str) -> dict[str, float | None]:
        """Medians over rounds; `added_p99_us` is the median of the per-round differences over the rounds
        whose direct call did not stall (`clean_rounds`)."""
        visits = self.visits(key)
        out = {name: median([get(v) for v in visits]) for name, get in PAIR_METRICS.items()}
        out["added_p99_us"] = median([r.added_p99_us(key) for r in self.clean_rounds])
        return out

    @property
    def guard(self) -> StallGuard:
        """The rounds the added p99 counts (`clean_rounds`), and why the others are left out."""
        return stall_guard(
            len(self.rounds),
            [(r.round, r.direct_p99_us) for r in self.rounds],
            DIRECT_STALL_US,
            stalled="the direct call stalled (p99 ",
            missing="the direct call failed",
        )

    def direct_summary(self) -> dict[str, float | None]:
        direct = [r.direct for r in self.rounds if r.direct is not None]
        return {
            "hey_rps": median([h.rps for h in direct]),
            "hey_p50_us": median([h.p(50) for h in direct]),
            "hey_p99_us": median([h.p(99) for h in direct]),
        }

    def ratios(self) -> dict[str, float | None]:
        """Pillion pair / HAProxy pair for each MTLS_RATIO_METRICS metric (None where either is missing)."""
        p = self.summary("pillion-mtls") if self.usable("pillion-mtls") else {}
        h = self.summary("haproxy-mtls") if self.usable("haproxy-mtls") else {}
        return {m: ratio(p.get(m), h.get(m)) for m in MTLS_RATIO_METRICS}


# metric name -> how to read it from one round
METRICS: dict[str, Callable[[Measurement], float | None]] = {
    "rps": lambda m: m.wrk.rps,
    "requests": lambda m: float(m.wrk.requests),
    "p50_us": lambda m: m.wrk.p(50),
    "p99_us": lambda m: m.wrk.p(99),
    "cpu_us_per_req": lambda m: m.cpu_us_per_req,
    "cpu_schedstat_us_per_req": lambda m: (
        m.cpu_schedstat_s * 1e6 / m.wrk.requests if m.wrk.requests else None
    ),
    "upstream_cpu_us_per_req": lambda m: m.upstream_cpu_us_per_req,
    "rss_mib": lambda m: m.rss_kib / 1024,
    "pss_mib": lambda m: m.pss_kib / 1024 if m.pss_kib is not None else None,
    "hey_rps": lambda m: m.hey.rps if m.hey else None,
    "hey_p50_us": lambda m: m.hey.p(50) if m.hey else None,
    "hey_p99_us": lambda m: m.hey.p(99) if m.hey else None,
    "hey_cpu_us_per_req": lambda m: m.hey_cpu_us_per_req,
    "server_core_busy_pct": lambda m: m.server_core_busy_pct,
    "load_core_busy_pct": lambda m: m.load_core_busy_pct,
    "outside_pct": lambda m: m.outside_pct,
    "steal_pct": lambda m: m.steal_pct,
}

RATIO_METRICS: dict[str, str] = {
    "cpu_us_per_req": "CPU µs/request (wrk, saturated)",
    "p99_us": "p99 latency (wrk, saturated)",
    "hey_p99_us": "p99 latency @2k req/s (hey)",
    "hey_cpu_us_per_req": "CPU µs/request @2k req/s (hey)",
    "rps": "req/s (wrk; higher is better)",
    "rss_mib": "RSS after the run",
}


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(target: TargetReport) -> dict[str, float | None]:
    return {name: median([get(m) for m in target.rounds]) for name, get in METRICS.items()}


def spread(target: TargetReport, metric: str) -> tuple[float, float] | None:
    values = [v for v in (METRICS[metric](m) for m in target.rounds) if v is not None]
    return (min(values), max(values)) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def per_round_cpu(a: TargetReport | None, b: TargetReport | None) -> str:
    """CPU/request of a over b in each round both were measured, and their median: context for a bar
    decided on the ratio of medians. Visits in one round are minutes apart at most, so a paired ratio
    shows how much of a gap is the machine's noise (rounds disagreeing) rather than the code's."""
    if a is None or b is None:
        return ""
    theirs = {m.round: m.cpu_us_per_req for m in b.rounds}
    pairs = [ratio(m.cpu_us_per_req, theirs.get(m.round)) for m in a.rounds]
    present = [r for r in pairs if r is not None]
    if not present:
        return ""
    listed = " ".join(f"{r:.2f}" for r in present)
    return f"; per round: {listed} (median {statistics.median(present):.2f}x)"


RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    ("pillion", "haproxy"),
    ("pillion", "nginx"),
    ("pillion", "minimal"),
    ("pillion-full", "pillion-off"),
    ("pillion-outbound", "haproxy-outbound"),
    ("minimal", "haproxy"),  # in results.json and the Bar section's informational line, not the table
)
TABLE_PAIRS: tuple[str, ...] = tuple(f"{a}/{b}" for a, b in RATIO_PAIRS if a != "minimal")


def ratios(summaries: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """'pillion/haproxy' -> metric -> ratio, for the Pillion row against every baseline present,
    'pillion-full/pillion-off' (all telemetry over none), 'pillion-outbound/haproxy-outbound', and
    'minimal/haproxy' (the calibration proxy against HAProxy)."""
    out: dict[str, dict[str, float | None]] = {}
    for a, base in RATIO_PAIRS:
        if a in summaries and base in summaries:
            out[f"{a}/{base}"] = {
                m: ratio(summaries[a].get(m), summaries[base].get(m)) for m in RATIO_METRICS
            }
    return out


@dataclass(frozen=True)
class Bar:
    name: str
    passed: bool
    detail: str


def _row_problem(row: TargetReport | None, what: str) -> str | None:
    """Why a Pillion row cannot pass a bar (no data, FAILED, errors), or None."""
    if row is None or not row.rounds:
        return f"no {what} data" + (" (row FAILED)" if row is not None and row.error else "")
    if row.error is not None:
        return f"{what} row FAILED"
    if row.errors:
        return f"{what} answered with {row.errors} errors/non-2xx responses"
    return None


def bars(
    targets: dict[str, TargetReport],
    summaries: dict[str, dict[str, float | None]],
    slowloris: SlowlorisReport | None = None,
    mtls: MtlsReport | None = None,
) -> list[Bar]:
    """The three Pillion-vs-HAProxy bars, the outbound bar when an outbound row was in the run, the
    telemetry bar when a telemetry row was, the slowloris bar when that run was made, and the two mTLS
    bars when that run was made."""
    out = _inbound_bars(targets, summaries)
    out += [b for b in (outbound_bar(targets, summaries), telemetry_bar(targets, summaries)) if b is not None]
    if slowloris is not None:
        out.append(slowloris_bar(slowloris))
    if mtls is not None:
        out += mtls_bars(mtls)
    return out


def _pair_problem(r: MtlsReport, key: str, what: str) -> str | None:
    """Why a pair cannot pass a bar (not in the run, FAILED, no data, errors), or None."""
    pair = r.pairs.get(key)
    if pair is None:
        return f"no {what} (not part of the run)"
    if pair.error is not None:
        return f"{what} FAILED: {pair.error.splitlines()[0]}"
    if not r.visits(key):
        return f"no {what} data" + (f" ({r.error.splitlines()[0]})" if r.error else "")
    if r.errors(key):
        return f"{what} answered with {r.errors(key)} errors/non-2xx responses"
    return None


def mtls_bars(r: MtlsReport) -> list[Bar]:
    """Each Pillion sidecar's CPU/request against the HAProxy doing the same side of the hop, and the
    p99 the Pillion pair adds to the direct call at the fixed rate (the HAProxy pair's shown beside it)."""
    at = r.rate_label
    cpu_name = (
        f"Pillion mTLS sidecars' CPU/request <= {MTLS_CPU_BAR:g}x HAProxy's on the same side of the hop "
        "(A originates, B terminates; wrk)"
    )
    p99_name = (
        f"Pillion mTLS pair adds <= {MTLS_ADDED_P99_BAR_US / 1000:g} ms p99 over the direct call "
        f"(fixed rate {r.rate_rps:g} req/s, hey)"
    )
    problem = _pair_problem(r, "pillion-mtls", "Pillion pair")
    if problem is not None:
        return [Bar(cpu_name, False, problem), Bar(p99_name, False, problem)]
    p = r.summary("pillion-mtls")
    h = r.summary("haproxy-mtls") if r.usable("haproxy-mtls") else {}
    rat = r.ratios()
    a, b = rat["client_cpu_us_per_req"], rat["server_cpu_us_per_req"]
    hap_note = "" if h else f" ({_pair_problem(r, 'haproxy-mtls', 'HAProxy pair') or 'no HAProxy pair data'})"
    cpu = Bar(
        cpu_name,
        a is not None and b is not None and a <= MTLS_CPU_BAR and b <= MTLS_CPU_BAR,
        f"A: {fmt_num(p['client_cpu_us_per_req'])} vs {fmt_num(h.get('client_cpu_us_per_req'))} µs/req "
        f"= {fmt_ratio(a)}; B: {fmt_num(p['server_cpu_us_per_req'])} vs "
        f"{fmt_num(h.get('server_cpu_us_per_req'))} µs/req = {fmt_ratio(b)} (limit {MTLS_CPU_BAR:g}x each)"
        f"{hap_note}; {at}: A {fmt_ratio(rat['hey_client_cpu_us_per_req'])}, "
        f"B {fmt_ratio(rat['hey_server_cpu_us_per_req'])}",
    )
    added = p["added_p99_us"]
    hap_added = h.get("added_p99_us")
    guard = r.guard
    latency = Bar(
        p99_name,
        guard.measured and added is not None and added <= MTLS_ADDED_P99_BAR_US,
        guard.not_measured
        + f"{at}: {fmt_added(added)} (p99 {fmt_ms(p['hey_p99_us'], 1)} through the pair vs "
        f"{fmt_ms(r.direct_summary()['hey_p99_us'], 1)} direct; median of per-round differences over "
        f"{len(guard.counted)} rounds{guard.note}; limit {MTLS_ADDED_P99_BAR_US / 1000:g} ms; hey resolution "
        f"0.1 ms); HAProxy pair (reference): " + fmt_added(hap_added),
    )
    return [cpu, latency]


def _slowloris_problems(r: SlowlorisReport) -> list[str]:
    """Why the slowloris run cannot count (the attack was not in force), or what Pillion got wrong besides
    latency (errors, slow connections not closed in time)."""
    problems: list[str] = []
    if r.error is not None:
        problems.append(f"the run FAILED: {r.error.splitlines()[0]}")
    if not r.rounds:
        return problems or ["no data"]
    if any(x.errors for x in r.rounds):
        problems.append(f"{sum(x.errors for x in r.rounds)} errors/non-2xx responses")
    weak = [x.round for x in r.rounds if x.attacker.max_open < r.connections]
    if weak:
        problems.append(f"the attacker never held all {r.connections} connections (rounds {weak})")
    limit = r.headers_timeout_s + SLOWLORIS_SWEEP_SLACK_S
    if any(x.attacker.closed_by_server == 0 for x in r.rounds):
        problems.append("no slow connection was closed by Pillion in some round")
    span = r.lifetime_range()
    if span is not None and span[1] > limit:
        problems.append(f"a slow connection lived {span[1]:.2f} s (limit {limit:g} s)")
    oldest = max(x.attacker.oldest_open_s for x in r.rounds)
    if oldest > limit:
        problems.append(f"a slow connection was still open after {oldest:.2f} s (limit {limit:g} s)")
    return problems


def slowloris_bar(r: SlowlorisReport) -> Bar:
    name = (
        f"Pillion p99 under {r.connections} slowloris connections <= {SLOWLORIS_P99_BAR:g}x its own "
        "(fixed rate, hey), all requests succeed, slow connections closed by the header timeout"
    )
    guard = r.guard
    counted = [x for x in r.rounds if x.round in guard.counted]
    attacked = median([x.attacked.p(99) for x in counted])
    baseline = median([x.baseline.p(99) for x in counted])
    p99 = ratio(attacked, baseline)
    problems = _slowloris_problems(r)
    closed = sum(x.attacker.closed_by_server for x in r.rounds)
    span = r.lifetime_range()
    detail = (
        guard.not_measured
        + f"@2k: {fmt_ms(attacked, 1)} under attack vs {fmt_ms(baseline, 1)} without = {fmt_ratio(p99)} "
        f"(limit {SLOWLORIS_P99_BAR:g}x{guard.note}); {closed:,} slow connections closed by Pillion "
        + (f"{span[0]:.1f}..{span[1]:.1f} s after their first byte " if span else "")
        + f"(request_headers_timeout {r.headers_timeout_s:g} s)"
        + (f"; {'; '.join(problems)}" if problems else "; no errors")
    )
    passed = not problems and guard.measured and p99 is not None and p99 <= SLOWLORIS_P99_BAR
    return Bar(name, passed, detail)


def outbound_bar(
    targets: dict[str, TargetReport], summaries: dict[str, dict[str, float | None]]
) -> Bar | None:
    """Pillion outbound CPU/request against HAProxy doing the equivalent job; None when neither outbound
    row was part of the run (`--only` left both out)."""
    if "pillion-outbound" not in targets and "haproxy-outbound" not in targets:
        return None
    name = f"Pillion outbound CPU/request <= {OUTBOUND_CPU_BAR}x HAProxy outbound's"
    problem = _row_problem(targets.get("pillion-outbound"), "Pillion outbound")
    if problem is not None:
        return Bar(name, False, problem)
    hap = targets.get("haproxy-outbound")
    p = summaries["pillion-outbound"]
    h = summaries.get("haproxy-outbound", {}) if hap is not None and hap.usable else {}
    cpu = ratio(p.get("cpu_us_per_req"), h.get("cpu_us_per_req"))
    hey = ratio(p.get("hey_cpu_us_per_req"), h.get("hey_cpu_us_per_req"))
    return Bar(
        name,
        cpu is not None and cpu <= OUTBOUND_CPU_BAR,
        f"{fmt_num(p.get('cpu_us_per_req'))} vs {fmt_num(h.get('cpu_us_per_req'))} µs/req "
        f"= {fmt_ratio(cpu)} (limit {OUTBOUND_CPU_BAR}x)"
        + ("" if h else " (no HAProxy outbound data)")
        + f"; @2k: {fmt_num(p.get('hey_cpu_us_per_req'))} vs {fmt_num(h.get('hey_cpu_us_per_req'))} µs/req "
        f"= {fmt_ratio(hey)}",
    )


def _telemetry_problems(targets: dict[str, TargetReport]) -> list[str]:
    """Why the telemetry rows cannot be compared (a row missing, FAILED or with errors), or in which rounds
    the full row's telemetry was not in force (no span received, no access-log line written)."""
    full, off = targets.get("pillion-full"), targets.get("pillion-off")
    rows = (_row_problem(full, "Pillion all-telemetry"), _row_problem(off, "Pillion telemetry-off"))
    problems = [p for p in rows if p is not None]
    if problems or full is None:
        return problems
    no_spans = [m.round for m in full.rounds if m.spans is None or not m.spans.received]
    if no_spans:
        problems.append(f"the collector received no spans in round(s) {no_spans}")
    no_log = [m.round for m in full.rounds if not m.access_log_lines]
    if no_log:
        problems.append(f"no access-log line was written in round(s) {no_log}")
    return problems


def telemetry_bar(
    targets: dict[str, TargetReport], summaries: dict[str, dict[str, float | None]]
) -> Bar | None:
    """Pillion's CPU/request with all its telemetry on against all of it off (wrk; the @2k ratio shown
    beside it); None when neither row was part of the run."""
    if "pillion-full" not in targets and "pillion-off" not in targets:
        return None
    name = (
        "Pillion telemetry overhead: CPU/request with metrics + tracing "
        f"{TRACE_SAMPLING:.0%} + access log to a file <= {TELEMETRY_CPU_BAR}x all off"
    )
    f, o = summaries.get("pillion-full", {}), summaries.get("pillion-off", {})
    cpu = ratio(f.get("cpu_us_per_req"), o.get("cpu_us_per_req"))
    hey = ratio(f.get("hey_cpu_us_per_req"), o.get("hey_cpu_us_per_req"))
    problems = _telemetry_problems(targets)
    return Bar(
        name,
        not problems and cpu is not None and cpu <= TELEMETRY_CPU_BAR,
        f"{fmt_num(f.get('cpu_us_per_req'))} vs {fmt_num(o.get('cpu_us_per_req'))} µs/req "
        f"= {fmt_ratio(cpu)} (limit {TELEMETRY_CPU_BAR}x)"
        + per_round_cpu(targets.get("pillion-full"), targets.get("pillion-off"))
        + f"; @2k: {fmt_num(f.get('hey_cpu_us_per_req'))} vs "
        f"{fmt_num(o.get('hey_cpu_us_per_req'))} µs/req = {fmt_ratio(hey)}"
        + "".join(f"; {p}" for p in problems),
    )


def _inbound_bars(
    targets: dict[str, TargetReport], summaries: dict[str, dict[str, float | None]]
) -> list[Bar]:
    pill = targets.get("pillion")
    hap = targets.get("haproxy")
    names = (
        f"Pillion CPU/request <= {CPU_BAR}x HAProxy's",
        f"Pillion p99 <= {P99_BAR}x HAProxy's (fixed rate, hey)",
        f"Pillion RSS <= {RSS_BAR_MIB:g} MiB after the run",
    )
    problem = _row_problem(pill, "Pillion")
    if problem is not None:
        return [Bar(n, False, problem) for n in names]
    assert pill is not None  # (a missing row is a problem)
    p = summaries["pillion"]
    h = summaries.get("haproxy", {}) if hap is not None and hap.usable else {}
    out: list[Bar] = []

    cpu = ratio(p.get("cpu_us_per_req"), h.get("cpu_us_per_req"))
    out.append(
        Bar(
            names[0],
            cpu is not None and cpu <= CPU_BAR,
            f"{fmt_num(p.get('cpu_us_per_req'))} vs {fmt_num(h.get('cpu_us_per_req'))} µs/req "
            f"= {fmt_ratio(cpu)} (limit {CPU_BAR}x)" + per_round_cpu(pill, hap),
        )
    )
    # The medians of the rounds whose HAProxy run did not stall, paired by round (the table keeps all).
    hey = METRICS["hey_p99_us"]
    theirs = {m.round: hey(m) for m in hap.rounds} if h and hap is not None else {}
    ours = {m.round: v for m in pill.rounds if (v := hey(m)) is not None}
    guard = stall_guard(
        len(pill.rounds),
        [(rnd, theirs.get(rnd)) for rnd in ours],
        STALL_US,
        stalled="HAProxy's p99@2k stalled (",
        missing="no HAProxy p99@2k",
    )
    unmeasured = [m.round for m in pill.rounds if m.round not in ours]
    note = guard.note + (f"; {_rounds(unmeasured)} left out: no Pillion p99@2k" if unmeasured else "")
    pill99 = median([ours[rnd] for rnd in guard.counted])
    hap99 = median([theirs[rnd] for rnd in guard.counted])
    hey99 = ratio(pill99, hap99)
    wrk99 = ratio(p.get("p99_us"), h.get("p99_us"))
    out.append(
        Bar(
            names[1],
            guard.measured and hey99 is not None and hey99 <= P99_BAR,
            guard.not_measured
            + f"@2k: {fmt_ms(pill99, 1)} vs {fmt_ms(hap99, 1)} = {fmt_ratio(hey99)} (limit {P99_BAR}x; hey "
            f"resolution 0.1 ms{note}); saturated wrk p99: {fmt_ms(p.get('p99_us'))} vs "
            f"{fmt_ms(h.get('p99_us'))} = {fmt_ratio(wrk99)}",
        )
    )
    rss = p.get("rss_mib")
    out.append(
        Bar(
            names[2], rss is not None and rss <= RSS_BAR_MIB, f"{fmt_num(rss, 1)} MiB (limit {RSS_BAR_MIB:g})"
        )
    )
    return out


def floor_line(targets: dict[str, TargetReport], summaries: dict[str, dict[str, float | None]]) -> str | None:
    """The informational (never PASS/FAIL) "minimal proxy / HAProxy" CPU line; None without a minimal row.

    Pillion / HAProxy factors exactly into (Pillion / minimal) x (minimal / HAProxy): the second factor is
    what the Python runtime (uvloop + httptools + asyncio callbacks) costs before Pillion does anything.
    """
    mini = targets.get("minimal")
    if mini is None:
        return None
    name = "minimal proxy / HAProxy CPU/request (informational, not a bar)"
    if not mini.usable:
        return f"{name}: - (minimal row {'FAILED' if mini.error is not None else 'has no data'})"
    hap = targets.get("haproxy")
    if hap is None or not hap.usable:
        return f"{name}: - (no HAProxy data)"
    m, h = summaries.get("minimal", {}), summaries.get("haproxy", {})
    cpu = ratio(m.get("cpu_us_per_req"), h.get("cpu_us_per_req"))
    hey = ratio(m.get("hey_cpu_us_per_req"), h.get("hey_cpu_us_per_req"))
    text = (
        f"{name}: {fmt_num(m.get('cpu_us_per_req'))} vs {fmt_num(h.get('cpu_us_per_req'))} µs/req "
        f"= {fmt_ratio(cpu)} (wrk); @2k: {fmt_num(m.get('hey_cpu_us_per_req'))} vs "
        f"{fmt_num(h.get('hey_cpu_us_per_req'))} µs/req = {fmt_ratio(hey)}"
    )
    pill = targets.get("pillion")
    if pill is not None and pill.usable:
        p = summaries.get("pillion", {})
        whole = ratio(p.get("cpu_us_per_req"), h.get("cpu_us_per_req"))
        own = ratio(p.get("cpu_us_per_req"), m.get("cpu_us_per_req"))
        if whole is not None and own is not None:
            text += (
                f". Pillion / HAProxy {fmt_ratio(whole)} = Pillion / minimal {fmt_ratio(own)} "
                f"x minimal / HAProxy {fmt_ratio(cpu)}"
            )
    text += (
        ". This is how far the floor itself, the smallest uvloop + httptools proxy, is from HAProxy; "
        "only Pillion / minimal is Pillion's own work"
    )
    if mini.errors:
        text += f" (⚠ the minimal row saw {mini.errors} errors/non-2xx responses)"
    return text


def mtls_floor_line(r: MtlsReport | None) -> str | None:
    """The informational (never PASS/FAIL) line of the mTLS run's calibration pair, two minimal proxies
    (A -> mTLS -> B): the p99 it adds and its sidecars' CPU/request against HAProxy's, beside the Pillion
    pair's. None when the run has no calibration pair. It shows where the floor of a plain uvloop +
    httptools pair sits against the added-p99 bar, as `floor_line` does for CPU/request."""
    if r is None or "minimal-mtls" not in r.pairs:
        return None
    name = "minimal uvloop+httptools pair, A -> mTLS -> B (calibration, informational, not a bar)"
    problem = _pair_problem(r, "minimal-mtls", "minimal pair")
    if problem is not None:
        return f"{name}: - ({problem})"
    m = r.summary("minimal-mtls")
    per_round = [rnd.added_p99_us("minimal-mtls") for rnd in r.clean_rounds]
    text = (
        f"{name}: adds {fmt_added(m['added_p99_us'])} p99 {r.rate_label} (per round "
        + ", ".join(fmt_added(x) for x in per_round)
        + f"{r.guard.note})"
    )
    for key, label in (("pillion-mtls", "Pillion pair"), ("haproxy-mtls", "HAProxy pair")):
        if r.usable(key):
            text += f"; {label} {fmt_added(r.summary(key)['added_p99_us'])}"
    if r.usable("haproxy-mtls"):
        h = r.summary("haproxy-mtls")
        cells = []
        for metric, side in (("client_cpu_us_per_req", "A"), ("server_cpu_us_per_req", "B")):
            rat = fmt_ratio(ratio(m[metric], h[metric]))
            cells.append(f"{side} {fmt_num(m[metric])} vs {fmt_num(h[metric])} = {rat}")
        text += ". CPU µs/request against HAProxy's, wrk: " + ", ".join(cells)
    text += (
        ". This pair does nothing but parse, copy and forward over uvloop's own TLS: what a plain uvloop + "
        "httptools pair costs on this core, before any of Pillion's work"
    )
    if r.errors("minimal-mtls"):
        text += f" (⚠ {r.errors('minimal-mtls')} errors/non-2xx responses)"
    return text


def info_lines(
    targets: dict[str, TargetReport], summaries: dict[str, dict[str, float | None]], mtls: MtlsReport | None
) -> list[str]:
    """The informational lines under the bars (the calibration row's and the calibration pair's)."""
    return [x for x in (floor_line(targets, summaries), mtls_floor_line(mtls)) if x is not None]


# ---- formatting -------------------------------------------------------------------------------------


def fmt_num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt_ms(us: float | None, digits: int = 3) -> str:
    return "-" if us is None else f"{us / 1000:.{digits}f} ms"


def fmt_added(us: float | None) -> str:
    """A latency difference with its sign, in ms to hey's 0.1 ms: "+0.9 ms", "-0.1 ms" (noise)."""
    return "-" if us is None else f"{us / 1000:+.1f} ms"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render_markdown(
    meta: dict[str, Any],
    targets: dict[str, TargetReport],
    summaries: dict[str, dict[str, float | None]],
    rat: dict[str, dict[str, float | None]],
    verdicts: list[Bar],
    *,
    slowloris: SlowlorisReport | None = None,
    mtls: MtlsReport | None = None,
) -> str:
    params = meta["params"]
    out: list[str] = ["# Pillion benchmark results", ""]
    out.append(
        f"Run {meta['date']} on {meta['machine']['nproc']} CPUs ({meta['machine']['cpu_model']}), "
        f"kernel {meta['machine']['kernel']}. Mode: **{params['mode']}**."
        + (f" **ABORTED: {meta['aborted']}**" if meta.get("aborted") else "")
    )
    out += ["", "## Results (medians over rounds)", ""]
    header = [
        "Target",
        "req/s",
        "p50",
        "p99",
        "CPU µs/req",
        "RSS MiB",
        "p50@2k",
        "p99@2k",
        "CPU µs/req @2k",
        "upstream CPU µs/req",
        f"core {params['server_cpu']}/{params['load_cpu']} busy",
        "status",
    ]
    rows: list[list[str]] = []
    for key, t in targets.items():
        s = summaries.get(key, {})
        if t.error is not None:
            status = "**FAILED**"
        elif t.errors:
            status = f"⚠ {t.errors} errors"
        else:
            status = "ok"
        if not t.rounds:
            rows.append([t.label, *(["-"] * (len(header) - 2)), status])
            continue
        rows.append(
            [
                t.label,
                fmt_num(s.get("rps"), 0),
                fmt_ms(s.get("p50_us")),
                fmt_ms(s.get("p99_us")),
                fmt_num(s.get("cpu_us_per_req")),
                fmt_num(s.get("rss_mib")),
                fmt_ms(s.get("hey_p50_us"), 1),
                fmt_ms(s.get("hey_p99_us"), 1),
                fmt_num(s.get("hey_cpu_us_per_req")),
                fmt_num(s.get("upstream_cpu_us_per_req")),
                f"{fmt_num(s.get('server_core_busy_pct'), 0)}% / {fmt_num(s.get('load_core_busy_pct'), 0)}%",
                status,
            ]
        )
    out += _table(header, rows)
    out += [
        "",
        "CPU µs/req is the target's own utime+stime (all its processes) during the measured run divided by "
        "the requests wrk completed; for the direct row the target *is* the upstream. p50/p99 are wrk's at "
        "saturation; p50@2k/p99@2k are hey's at a fixed ~2000 req/s (resolution 0.1 ms). RSS is VmRSS summed "
        "over the target's processes after its run. The busy column is how loaded the server core and the "
        "load-generator core were (all processes, including other jobs): a core well below 100% was not the "
        "bottleneck.",
    ]

    out += ["", "## Ratios (Pillion / baseline; below 1.00 = Pillion cheaper/faster, except req/s)", ""]
    pairs = [k for k in TABLE_PAIRS if k in rat]
    if pairs and any(v is not None for k in pairs for v in rat[k].values()):
        out += _table(
            ["Metric", *pairs],
            [[label, *(fmt_ratio(rat[k].get(m)) for k in pairs)] for m, label in RATIO_METRICS.items()],
        )
    else:
        out.append("No ratios: the Pillion rows have no data.")

    if slowloris is not None:
        out += ["", f"## Slowloris (Pillion under {slowloris.connections} slow connections)", ""]
        out += _slowloris_section(slowloris, params)

    if mtls is not None:
        out += ["", "## mTLS between two sidecars (A -> mTLS -> B -> upstream)", ""]
        out += _mtls_section(mtls, params)

    out += ["", "## Bar", ""]
    out += [f"- **{'PASS' if b.passed else 'FAIL'}** {b.name}: {b.detail}" for b in verdicts]
    out += [f"- **INFO** {info}." for info in info_lines(targets, summaries, mtls)]
    busy = max((m.outside_pct for t in targets.values() for m in t.rounds), default=0.0)
    if busy > NOISY_PCT:
        out.append(
            f"- ⚠ Measured on a busy machine (up to {busy:.0f}% of a core used by other jobs, see sanity "
            "checks): the latency verdict in particular is unreliable; CPU/request and RSS hold up better."
        )

    out += ["", "## Sanity checks", ""]
    out += _sanity(targets)

    out += ["", "## Spread across rounds (min .. max)", ""]
    spread_rows = []
    for key, t in targets.items():
        if not t.rounds:
            continue
        cells = [t.label, str(len(t.rounds))]
        for metric, digits, ms in (
            ("rps", 0, False),
            ("cpu_us_per_req", 1, False),
            ("p99_us", 3, True),
            ("hey_p99_us", 1, True),
        ):
            sp = spread(t, metric)
            if sp is None:
                cells.append("-")
            elif ms:
                cells.append(f"{fmt_ms(sp[0], digits)} .. {fmt_ms(sp[1], digits)}")
            else:
                cells.append(f"{fmt_num(sp[0], digits)} .. {fmt_num(sp[1], digits)}")
        spread_rows.append(cells)
        del key
    out += _table(["Target", "rounds", "req/s", "CPU µs/req", "p99", "p99@2k"], spread_rows)

    failed = [t for t in targets.values() if t.error]
    if failed:
        out += ["", "## Failed targets", ""]
        for t in failed:
            out += [f"### {t.label}", "", "```", t.error or "", "```", ""]

    out += ["", "## Load parameters", ""]
    out += [
        f"- Rounds: {params['rounds']}, each measuring every target once, order rotated per round "
        f"(round 1: {', '.join(params['order'])}).",
        f"- Per target per round: warm-up `{params['warmup_cmd']}`, then measured `{params['wrk_cmd']}`, "
        f"then fixed-rate `{params['hey_cmd']}` ({params['hey_total_rps']:g} req/s in total).",
        f"- Servers (upstream and the proxy under test) pinned to core {params['server_cpu']} "
        f"(`taskset -c {params['server_cpu']}`); wrk, hey and the harness on core {params['load_cpu']}. "
        "All single-process/single-threaded (HAProxy `nbthread 1`, nginx `worker_processes 1`, upstream "
        "nginx `master_process off`, the minimal proxy and Pillion one event loop), keep-alive on both "
        "sides, access logs off except the Pillion all-telemetry row.",
        '- Upstream: nginx `return 200 "hello world\\n"` (12-byte body), keepalive_requests 1000000.',
        "- All servers idle but running while another target is measured; every proxy is a new process "
        "in each round (the upstream runs throughout).",
    ]
    if "pillion-full" in targets and "collector_cmd" in params:
        out.append(
            "- Pillion all-telemetry row: access log to a file in its temporary directory, and tracing at "
            f"{TRACE_SAMPLING:.0%} exported over OTLP/HTTP to `{params['collector_cmd']}` "
            "(bench/collector.py: the project's FakeCollector, which decodes every span; on the load core, "
            "with wrk and hey)."
        )
    if "minimal_cmd" in params:
        out.append(
            f"- Minimal proxy (calibration): `{params['minimal_cmd']}` (bench/minimal_proxy.py: parse, copy "
            "the head, add X-Forwarded-For, pooled keep-alive upstream; nothing else)."
        )
    out += ["", "## Versions", ""]
    out += [f"- {name}: `{ver}`" for name, ver in meta["versions"].items()]
    out += ["", "## Notes", ""]
    out += [f"- {n}" for n in meta.get("notes", [])]
    return "\n".join(out) + "\n"


def _slowloris_section(r: SlowlorisReport, params: dict[str, Any]) -> list[str]:
    if not r.rounds:
        return [f"**FAILED**: {r.error or 'no data'}"]
    s = r.summary()
    base_req = [x.baseline.requests for x in r.rounds]
    att_req = [x.attacked.requests for x in r.rounds]
    base_err = sum(x.baseline.errors + x.baseline.non_2xx_3xx for x in r.rounds)
    att_err = sum(x.attacked.errors + x.attacked.non_2xx_3xx for x in r.rounds)
    out = _table(
        ["Pillion (metrics on, access log off)", "p50@2k", "p99@2k", "CPU µs/req @2k", "requests", "errors"],
        [
            [
                "baseline: no attack",
                fmt_ms(s["baseline_p50_us"], 1),
                fmt_ms(s["baseline_p99_us"], 1),
                fmt_num(s["baseline_cpu_us_per_req"]),
                "/".join(f"{n:,}" for n in base_req),
                str(base_err),
            ],
            [
                f"under {r.connections} slowloris connections",
                fmt_ms(s["attacked_p50_us"], 1),
                fmt_ms(s["attacked_p99_us"], 1),
                fmt_num(s["attacked_cpu_us_per_req"]),
                "/".join(f"{n:,}" for n in att_req),
                str(att_err),
            ],
            [
                "ratio (under attack / baseline)",
                fmt_ratio(ratio(s["attacked_p50_us"], s["baseline_p50_us"])),
                fmt_ratio(s["p99_ratio"]),
                fmt_ratio(ratio(s["attacked_cpu_us_per_req"], s["baseline_cpu_us_per_req"])),
                "",
                "",
            ],
        ],
    )
    a = [x.attacker for x in r.rounds]
    span = r.lifetime_range()
    deltas = [x.timeouts_delta for x in r.rounds]
    replies = sum(x.reply_bytes for x in a)
    sample = next((x.reply_sample for x in a if x.reply_sample), "")
    busy = fmt_num(s["load_core_busy_pct"], 0)
    counted = r.guard.counted
    out += [
        "",
        f"Medians over {len(r.rounds)} rounds; each round is one hey run without and one with the attack "
        "(alternating which comes first), both `"
        + str(params.get("slowloris_hey_cmd", "hey"))
        + "` against the "
        f"Pillion row, whose listener has `request_headers_timeout: {r.headers_timeout_s:g}s`. The attacker "
        f"(`{params.get('slowloris_cmd', 'bench/slowloris.py')}`, on the load core with hey) holds "
        f"{r.connections} connections that each sent a request line, a Host field and the start of a "
        "third field, then trickle one more byte of it every 0.2-0.3 s and never finish; each one Pillion "
        "closes is reopened at once.",
        "",
        f"- Slow connections: {sum(x.opened for x in a):,} opened, "
        f"{sum(x.closed_by_server for x in a):,} closed by Pillion "
        f"({sum(x.eof for x in a):,} FIN, {sum(x.reset for x in a):,} reset: the close raced a trickled "
        f"byte), {sum(x.connect_failed for x in a)} connect failures, at most "
        f"{max(x.max_open for x in a)} held at once"
        + (f", closed {span[0]:.2f}..{span[1]:.2f} s after their first byte" if span else "")
        + f"; still open when the attacker stopped: {sum(x.still_open for x in a)} "
        f"(oldest {max(x.oldest_open_s for x in a):.2f} s).",
        '- `pillion_downstream_timeouts_total{timeout="request_headers"}` rose by '
        + "/".join("?" if d is None else f"{d:,.0f}" for d in deltas)
        + " per round (attacker: "
        + "/".join(f"{x.closed_by_server:,}" for x in a)
        + " closed).",
        f"- Bytes Pillion sent to slow clients: {replies}"
        + (f" (e.g. {sample[:60]!r})" if replies else " (closed without an answer)")
        + f". Load core busy during the attacked runs (hey + attacker): {busy}%.",
        "- p99@2k per round, baseline / under attack: "
        + "; ".join(
            f"round {x.round} ({x.order}) {fmt_ms(x.baseline.p(99), 1)} / {fmt_ms(x.attacked.p(99), 1)}"
            + ("" if x.round in counted else " (left out of the bar)")
            for x in r.rounds
        ),
    ]
    if r.error is not None:
        out += ["", "```", r.error, "```"]
    return out


def _mtls_section(r: MtlsReport, params: dict[str, Any]) -> list[str]:
    at = r.rate_label
    header = [
        "",
        "req/s",
        "p99",
        "A CPU µs/req",
        "B CPU µs/req",
        f"A CPU µs/req {at}",
        f"B CPU µs/req {at}",
        f"p50{at}",
        f"p99{at}",
        f"added p99{at}",
        "RSS A / B MiB",
        "upstream CPU µs/req",
        "status",
    ]
    d = r.direct_summary()
    rows = [
        [
            "direct (upstream, no proxy)",
            *(["-"] * 6),
            fmt_ms(d["hey_p50_us"], 1),
            fmt_ms(d["hey_p99_us"], 1),
            "-",
            "-",
            "-",
            "not run"
            if not r.rounds
            else "ok"
            if all(x.direct is not None for x in r.rounds)
            else "**FAILED**",
        ]
    ]
    for key, pair in r.pairs.items():
        s = r.summary(key)
        if pair.error is not None:
            status = "**FAILED**"
        elif r.errors(key):
            status = f"⚠ {r.errors(key)} errors"
        else:
            status = "ok" if r.visits(key) else "no data"
        if not r.visits(key):
            rows.append([pair.label, *(["-"] * (len(header) - 2)), status])
            continue
        added = s["added_p99_us"]
        rows.append(
            [
                pair.label,
                fmt_num(s["rps"], 0),
                fmt_ms(s["p99_us"]),
                fmt_num(s["client_cpu_us_per_req"]),
                fmt_num(s["server_cpu_us_per_req"]),
                fmt_num(s["hey_client_cpu_us_per_req"]),
                fmt_num(s["hey_server_cpu_us_per_req"]),
                fmt_ms(s["hey_p50_us"], 1),
                fmt_ms(s["hey_p99_us"], 1),
                fmt_added(added),
                f"{fmt_num(s['client_rss_mib'])} / {fmt_num(s['server_rss_mib'])}",
                fmt_num(s["upstream_cpu_us_per_req"]),
                status,
            ]
        )
    rat = r.ratios()
    rows.append(
        [
            "ratio Pillion / HAProxy",
            fmt_ratio(rat["rps"]),
            "",
            fmt_ratio(rat["client_cpu_us_per_req"]),
            fmt_ratio(rat["server_cpu_us_per_req"]),
            fmt_ratio(rat["hey_client_cpu_us_per_req"]),
            fmt_ratio(rat["hey_server_cpu_us_per_req"]),
            "",
            fmt_ratio(rat["hey_p99_us"]),
            "",
            "",
            "",
            "",
        ]
    )
    out = _table(header, rows)
    out += [
        "",
        f"Medians over {len(r.rounds)} rounds. Each round measures the direct call and each pair once, in an "
        "order rotated per round, each pair new processes in each round; a pair's visit is a warm-up, then `"
        + str(params.get("mtls_wrk_cmd", "wrk"))
        + "` through A (req/s, p99 and CPU µs/req: each sidecar's own utime+stime over the run divided by "
        "the requests wrk completed), then `"
        + str(params.get("mtls_hey_cmd", "hey"))
        + f"` ({r.rate_rps:g} req/s) for the fixed-rate columns; the direct row is that hey run straight "
        f"to the upstream. Added p99{at} is, per round, p99 through the pair minus p99 of the direct call, "
        f"then the median over the rounds whose direct call did not stall (p99 <= "
        f"{DIRECT_STALL_US / 1000:g} ms; hey resolution 0.1 ms). A, B and the upstream share the server "
        "core. The pairs keep their connections alive (load generator -> A, A -> B, B -> upstream), so the "
        "measured runs are TLS record work, not handshakes.",
        "",
    ]
    for pair in r.pairs.values():
        if pair.error is not None:
            out += [f"- {pair.label}: **FAILED**", "", "```", pair.error, "```", ""]
            continue
        out.append(
            f"- {pair.label}: B negotiated `{pair.tls_seen or '?'}` with the harness presenting A's SVID; "
            f"B refused {pair.refusals or '?'}; the upstream saw X-Forwarded-For {pair.xff_seen!r} and "
            + (
                f"x-forwarded-client-cert `{pair.xfcc_seen}`"
                if pair.xfcc_seen
                else "no x-forwarded-client-cert (not added by this proxy)"
            )
            + f"; x-request-id and x-forwarded-proto {pair.ids_seen!r}."
        )
    for key, pair in r.pairs.items():
        visits = r.visits(key)
        if not visits:
            continue
        counted = [
            f"round {v.round}: A {v.client_counted:,.0f}, B {v.server_counted:,.0f} (wrk {v.wrk.requests:,})"
            for v in visits
            if v.client_counted is not None and v.server_counted is not None
        ]
        if counted:
            out.append(f"- {pair.label}: pillion_http_requests_total rose by " + "; ".join(counted) + ".")
        accepts = [v.server_accepts for v in visits]
        if any(x is not None for x in accepts):
            out.append(
                f"- {pair.label}: connections B accepted (TLS handshakes) during the measured wrk runs: "
                + "/".join("?" if x is None else f"{x:,.0f}" for x in accepts)
                + "."
            )
        opened = [v.upstream_conns_opened for v in visits]
        out.append(
            f"- {pair.label}: upstream connections opened during the measured wrk runs: "
            + "/".join("?" if x is None else str(x) for x in opened)
            + f"; CPU used outside the benchmark: {fmt_num(median([v.outside_pct for v in visits]), 0)}% "
            f"(max {fmt_num(max(v.outside_pct for v in visits), 0)}%) of a core; "
            f"core busy {fmt_num(median([v.server_core_busy_pct for v in visits]), 0)}% / "
            f"{fmt_num(median([v.load_core_busy_pct for v in visits]), 0)}%."
        )
        errs = [
            f"round {v.round}: wrk non-2xx {v.wrk.non_2xx_3xx}, socket errors {v.wrk.socket_errors or 0}, "
            f"hey errors {v.hey.errors}, hey non-2xx {v.hey.non_2xx_3xx}"
            for v in visits
            if v.errors
        ]
        if errs:
            out.append(f"- ⚠ {pair.label}: " + "; ".join(errs) + ".")

    def cell(x: MtlsRound, key: str) -> str:
        v = x.pairs.get(key)
        added = x.added_p99_us(key)
        if v is None:
            return f"{key} -"
        return (
            f"{key} {fmt_ms(v.hey.p(99), 1)}"
            + ("" if added is None else f" ({fmt_added(added)})")
            + f", A/B {fmt_num(v.client_cpu_us_per_req)}/{fmt_num(v.server_cpu_us_per_req)} µs/req"
        )

    kept = r.guard.counted
    out.append(
        f"- Per round, p99{at} direct; through each pair (added), and A/B CPU µs/req (wrk): "
        + "; ".join(
            f"round {x.round} ({', '.join(x.order)}): direct "
            + fmt_ms(x.direct_p99_us, 1)
            + ("" if x.round in kept else " (left out of the added p99)")
            + "".join(f"; {cell(x, key)}" for key in r.pairs)
            for x in r.rounds
        )
    )
    if r.error is not None:
        out += ["", "```", r.error, "```"]
    return out


def _counted(m: Measurement) -> str:
    """Pillion's own request count over the measured wrk run against wrk's."""
    if m.counter_name is None:
        return f"round {m.round}: not found ({m.counter_note or 'no *requests_total metric'})"
    delta = m.counter_delta or 0.0
    ok = abs(delta - m.wrk.requests) <= max(0.01 * m.wrk.requests, 4 * 64)
    return (
        f"round {m.round}: {m.counter_name} counted {delta:,.0f} requests "
        f"(wrk completed {m.wrk.requests:,}) {'OK' if ok else 'MISMATCH'}"
    )


def _metrics_off(m: Measurement) -> str:
    """The telemetry-off row's /metrics during a round: it must not have counted anything."""
    if m.counter_name is not None:
        return f"round {m.round}: ⚠ {m.counter_name} counted {m.counter_delta or 0:,.0f} requests"
    return f"round {m.round}: {m.counter_note or 'no request counter'}"


def _access_log(m: Measurement) -> str:
    if m.access_log_lines is None:
        return f"round {m.round}: not counted"
    flag = "" if m.access_log_lines else " ⚠ none"
    return f"round {m.round}: {m.access_log_lines:,} lines for {m.wrk.requests:,} requests{flag}"


def _traced(m: Measurement) -> str:
    """Spans the collector received over a visit, against the sampling rate, and the ones Pillion dropped."""
    sp = m.spans
    if sp is None or sp.received is None:
        return f"round {m.round}: ⚠ not counted (the collector's /stats was unreadable)"
    share = sp.share
    if not sp.received:
        flag = " ⚠ none"
    elif share is not None and not 0.5 * TRACE_SAMPLING <= share <= 1.5 * TRACE_SAMPLING:
        flag = f" ⚠ expected about {TRACE_SAMPLING:.0%}"
    else:
        flag = ""
    dropped = "?" if sp.dropped is None else f"{sp.dropped:,.0f}" + (" ⚠" if sp.dropped else "")
    requests = "?" if sp.requests is None else f"{sp.requests:,}"
    pct = "-" if share is None else f"{share:.2%}"
    return (
        f"round {m.round}: {sp.received:,.0f} spans for {requests} requests = {pct}{flag}, {dropped} dropped"
    )


def _pillion_sanity(t: TargetReport) -> list[str]:
    """Per Pillion row: its request counter against wrk (metrics really off for the telemetry-off row),
    and for the all-telemetry row the access-log lines and the spans exported."""
    if t.key == "pillion-off":
        seen = t.metrics_probe or "not checked (row FAILED)"
        rounds = "; ".join(_metrics_off(m) for m in t.rounds)
        return [
            f"- {t.label}: metrics off: at start, {seen}" + (f"; during the runs: {rounds}" if rounds else "")
        ]
    if not t.rounds:
        return [f"- {t.label}: metrics on: not measured (row FAILED)"]
    lines = [f"- {t.label}: metrics on: " + "; ".join(_counted(m) for m in t.rounds)]
    if t.key == "pillion-full":
        lines.append(
            f"- {t.label}: access log written (during the measured wrk run): "
            + "; ".join(_access_log(m) for m in t.rounds)
        )
        lines.append(
            f"- {t.label}: tracing at {TRACE_SAMPLING:.0%}: spans the collector received over each visit "
            "(warm-up, wrk and hey requests), and the rise of pillion_tracing_spans_dropped_total: "
            + "; ".join(_traced(m) for m in t.rounds)
        )
    return lines


def _sanity(targets: dict[str, TargetReport]) -> list[str]:
    lines: list[str] = []
    for key in ("pillion", "pillion-off", "pillion-full", "pillion-outbound"):
        t = targets.get(key)
        if t is not None:
            lines += _pillion_sanity(t)
    conns = []
    for t in targets.values():
        if t.rounds:
            opened = [m.upstream_conns_opened for m in t.rounds]
            served = [m.upstream_requests for m in t.rounds]
            conns.append(
                f"{t.label}: {'/'.join('?' if v is None else str(v) for v in opened)} connections opened, "
                f"{'/'.join('?' if v is None else f'{v:,}' for v in served)} requests served "
                f"(wrk: {'/'.join(f'{m.wrk.requests:,}' for m in t.rounds)})"
            )
    lines.append(
        "- Upstream keep-alive (per round, during the measured wrk run, from the upstream's stub_status): "
        + "; ".join(conns)
    )
    xff = [
        f"{t.label}: {t.xff_seen!r}"
        for t in targets.values()
        if t.key != "upstream" and t.xff_seen is not None
    ]
    if xff:
        lines.append("- X-Forwarded-For seen by the upstream: " + "; ".join(xff))
    ids = [
        f"{t.label}: {t.ids_seen!r}"
        for t in targets.values()
        if t.key != "upstream" and t.ids_seen is not None
    ]
    if ids:
        lines.append("- x-request-id and x-forwarded-proto seen by the upstream: " + "; ".join(ids))
    errs = [
        f"{t.label}: "
        + "; ".join(
            f"round {m.round}: wrk non-2xx {m.wrk.non_2xx_3xx}, socket errors {m.wrk.socket_errors or 0}"
            + (f", hey errors {m.hey.errors}, hey non-2xx {m.hey.non_2xx_3xx}" if m.hey else "")
            for m in t.rounds
            if m.errors
        )
        for t in targets.values()
        if t.errors
    ]
    lines.append(
        "- Errors: " + ("; ".join(errs) if errs else "none (no socket errors, no non-2xx/3xx answers)")
    )
    noise = [
        f"{t.label} {fmt_num(median([m.outside_pct for m in t.rounds]), 0)}% "
        f"(max {fmt_num(max(m.outside_pct for m in t.rounds), 0)}%)"
        for t in targets.values()
        if t.rounds
    ]
    lines.append(
        "- CPU used outside the benchmark's own processes during measured runs (other jobs on the machine, "
        "unattributed kernel work), % of one core, median (max): " + ", ".join(noise)
    )
    worst = max((m.outside_pct for t in targets.values() for m in t.rounds), default=0.0)
    busiest: dict[str, float] = {}
    for t in targets.values():
        for m in t.rounds:
            for who, pct in m.foreign_top:
                busiest[who] = max(busiest.get(who, 0.0), pct)
    if busiest:
        top = sorted(busiest.items(), key=lambda kv: -kv[1])[:6]
        lines.append(
            "- Busiest other processes during measured runs (max % of a core): "
            + "; ".join(f"`{who}` {pct:.0f}%" for who, pct in top)
        )
    if worst > NOISY_PCT:
        lines.append(
            f"- ⚠ **The machine was not quiet**: up to {worst:.0f}% of a core went to something else during "
            "a measured run; treat absolute numbers with care (ratios suffer less, see the spread table)."
        )
    steal = max((m.steal_pct for t in targets.values() for m in t.rounds), default=0.0)
    if steal > 2:
        lines.append(f"- ⚠ Hypervisor steal time reached {steal:.0f}% of a core during a measured run.")
    changed = [t.label for t in targets.values() if any(m.tree_changed for m in t.rounds)]
    if changed:
        lines.append(
            "- ⚠ The process tree changed during a run (a process exited or was started), so its CPU may be "
            "under-counted: " + ", ".join(changed)
        )
    return lines


def to_json(
    meta: dict[str, Any],
    targets: dict[str, TargetReport],
    summaries: dict[str, dict[str, float | None]],
    rat: dict[str, dict[str, float | None]],
    verdicts: list[Bar],
    *,
    slowloris: SlowlorisReport | None = None,
    mtls: MtlsReport | None = None,
) -> str:
    doc = {
        "meta": meta,
        "targets": {
            key: {
                "label": t.label,
                "failed": t.error is not None,
                "error": t.error,
                "errors": t.errors,
                "xff_seen": t.xff_seen,
                "ids_seen": t.ids_seen,
                "median": summaries.get(key),
                "rounds": [
                    {
                        **asdict(m),
                        "cpu_us_per_req": m.cpu_us_per_req,
                        "upstream_cpu_us_per_req": m.upstream_cpu_us_per_req,
                        "hey_cpu_us_per_req": m.hey_cpu_us_per_req,
                    }
                    for m in t.rounds
                ],
            }
            for key, t in targets.items()
        },
        "ratios": rat,
        "bars": [asdict(b) for b in verdicts],
        "floor": floor_line(targets, summaries),
        "mtls_floor": mtls_floor_line(mtls),
        "slowloris": None
        if slowloris is None
        else {
            **asdict(slowloris),
            "median": slowloris.summary(),
            "lifetime_range_s": slowloris.lifetime_range(),
            "p99_ratio_rounds_counted": slowloris.guard.counted,
        },
        "mtls": None
        if mtls is None
        else {
            **asdict(mtls),
            "median": {key: mtls.summary(key) for key in mtls.pairs},
            "direct_median": mtls.direct_summary(),
            "ratios": {"pillion-mtls/haproxy-mtls": mtls.ratios()},
            "added_p99_us_per_round": {key: [r.added_p99_us(key) for r in mtls.rounds] for key in mtls.pairs},
            "added_p99_rounds_counted": [r.round for r in mtls.clean_rounds],
        },
    }
    return json.dumps(doc, indent=2, default=str) + "\n"
