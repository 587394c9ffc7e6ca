"""`pillion top --admin ADDRESS [--interval 1s] [--once]`: a live terminal view of a running sidecar.

Theory of operation: every interval, GET `/metrics` and `/clusters` from the sidecar's admin API with
plain blocking `http.client` (one short connection per request, no event loop: this is a small tool that
must start at once and work against any sidecar it can reach). Each poll is parsed
(pillion.telemetry.scrape) and compared with the previous one: counter increases divided by the time
between the polls give requests/s, the 5xx and 4xx shares of those requests are the error rates, and the
request-duration histograms' bucket increases give p50 and p99 of exactly the requests answered in
between (linear interpolation inside a bucket, as PromQL's histogram_quantile). So the numbers describe
the last interval, not the process's lifetime; the first screen has no rates yet. A poll taken after the
sidecar restarted (its start time changed) starts over instead of comparing two processes.

Rows: one per route (listener, route, cluster) -- route `-` collects requests no route matched -- one per
cluster (its routes' traffic summed, plus what /clusters says: requests in flight, connections), and one
per endpoint (state, in-flight requests, responses/s and 5xx share from the per-endpoint counters, times
ejected). The service name comes from /config_dump, read once per sidecar process.

Output: full-screen curses, redrawn after each poll with erase + refresh (curses sends only the cells that
changed, so nothing flickers); `q` quits, a resize redraws at once. `--once` polls twice, one interval
apart, prints the same screen as plain text and exits: for scripts and tests. When the admin API cannot be
reached or answers nonsense, the screen says so and keeps retrying; `--once` says so on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pillion.config.address import parse_address
from pillion.config.units import parse_duration
from pillion.telemetry.scrape import Histogram, ParseError, Scrape, counter_delta, parse, quantile

if TYPE_CHECKING:
    import curses

__all__ = ["AdminClient", "AdminError", "Monitor", "Poll", "View", "compute", "configure", "main", "render"]

REQUESTS = "pillion_http_requests_total"
DURATION = "pillion_http_request_duration_seconds"
UPSTREAM_RESPONSES = "pillion_upstream_responses_total"
RETRIES = "pillion_upstream_retries_total"
START_TIME = "pillion_process_start_time_seconds"
MAX_REQUEST_TIMEOUT = 5.0  # seconds; a sidecar too busy to answer its admin API in this long is news itself
MIN_INTERVAL = 0.1

K = TypeVar("K", bound=Hashable)
# (text, style): style is one of "title", "heading", "normal", "bad", "note", or "message" (wrapped).
Line = tuple[str, str]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin", default="127.0.0.1:9901", metavar="ADDRESS", help="the sidecar's admin address (host:port)"
    )
    parser.add_argument("--interval", default="1s", metavar="DURATION", help="time between polls")
    parser.add_argument(
        "--once", action="store_true", help="print one snapshot (two polls one interval apart) and exit"
    )


def main(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.admin)
        interval = float(parse_duration(args.interval))
    except ValueError as exc:
        print(f"pillion top: {exc}", file=sys.stderr)
        return 2
    if interval < MIN_INTERVAL:
        print(f"pillion top: --interval must be at least {MIN_INTERVAL:g}s", file=sys.stderr)
        return 2
    timeout = min(max(interval, 1.0), MAX_REQUEST_TIMEOUT)
    client = AdminClient(address.host, address.port, timeout)
    try:
        if args.once:
            return _once(client, interval)
        return _live(client, interval)
    except KeyboardInterrupt:
        return 0


# -- polling ---------------------------------------------------------------------------------------


class AdminError(Exception):
    """The admin API could not be asked, or its answer made no sense; the message says which."""


@dataclass(slots=True)
class Poll:
    """One look at the sidecar: its metrics and its clusters, and when (monotonic seconds)."""

    at: float
    metrics: Scrape
    clusters: list[dict[str, Any]]

    @property
    def start_time(self) -> float | None:
        return self.metrics.value(START_TIME)


class AdminClient:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._service: tuple[float | None, str] | None = None  # (start time it was read for, name)

    def get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AdminError(f"cannot reach the admin API at {self.address} ({detail})") from None
        finally:
            conn.close()
        if response.status != 200:
            reason = response.getheader("x-pillion-error")
            why = f" ({reason})" if reason else ""
            raise AdminError(f"GET {path} on {self.address} answered {response.status}{why}")
        return body

    def get_json(self, path: str) -> Any:
        try:
            return json.loads(self.get(path))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AdminError(f"GET {path} on {self.address} did not answer JSON") from None

    def poll(self) -> Poll:
        at = time.monotonic()
        try:
            metrics = parse(self.get("/metrics").decode("utf-8"))
        except (UnicodeDecodeError, ParseError) as exc:
            raise AdminError(f"GET /metrics on {self.address} is not Prometheus text: {exc}") from None
        data = self.get_json("/clusters")
        clusters = data.get("clusters") if isinstance(data, dict) else None
        if not isinstance(clusters, list) or not all(isinstance(c, dict) for c in clusters):
            raise AdminError(f"GET /clusters on {self.address} has no list of clusters")
        return Poll(at, metrics, clusters)

    def service(self, poll: Poll) -> str:
        """The sidecar's service name, read from /config_dump once per process (keyed by start time)."""
        if self._service is None or self._service[0] != poll.start_time:
            try:
                dump = self.get_json("/config_dump")
                name = dump["config"]["service"]
            except (AdminError, KeyError, TypeError):
                name = None  # an older or stripped-down admin API: the rest of the screen still works
            self._service = (poll.start_time, name if isinstance(name, str) else "?")
        return self._service[1]


# -- the view: what one interval looked like ---------------------------------------------------------


@dataclass(slots=True)
class Traffic:
    """Requests answered in one interval, and how many of them were 4xx and 5xx."""

    requests: float = 0.0
    errors_4xx: float = 0.0
    errors_5xx: float = 0.0

    def add(self, code: str, n: float) -> None:
        self.requests += n
        if code.startswith("5"):
            self.errors_5xx += n
        elif code.startswith("4"):
            self.errors_4xx += n

    def plus(self, other: Traffic) -> Traffic:
        return Traffic(
            self.requests + other.requests,
            self.errors_4xx + other.errors_4xx,
            self.errors_5xx + other.errors_5xx,
        )


@dataclass(slots=True)
class Rates:
    """Per-second figures of one row over the last interval; every field None when unknown."""

    rps: float | None = None
    share_5xx: float | None = None
    share_4xx: float | None = None
    p50: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, traffic: Traffic | None, latency: Histogram | None, seconds: float | None) -> Rates:
        rates = cls()
        if traffic is not None and seconds:
            rates.rps = traffic.requests / seconds
            if traffic.requests > 0:
                rates.share_5xx = traffic.errors_5xx / traffic.requests
                rates.share_4xx = traffic.errors_4xx / traffic.requests
        if latency is not None and latency.count > 0:
            rates.p50 = quantile(0.5, latency.buckets)
            rates.p99 = quantile(0.99, latency.buckets)
        return rates


@dataclass(slots=True)
class RouteRow:
    listener: str
    route: str
    cluster: str
    rates: Rates


@dataclass(slots=True)
class ClusterRow:
    name: str
    rates: Rates
    active: int | None
    connections: int | None
    retries_per_s: float | None
    healthy: int
    endpoints: int


@dataclass(slots=True)
class EndpointRow:
    cluster: str
    address: str
    state: str
    active: int | None
    rates: Rates
    ejections: int | None


@dataclass(slots=True)
class View:
    admin: str
    service: str = "?"
    version: str = "?"
    uptime: float | None = None
    rss: float | None = None
    connections_down: float | None = None
    connections_up: float | None = None
    seconds: float | None = None  # the interval the rates cover; None on the first poll
    total: Rates = field(default_factory=Rates)
    routes: list[RouteRow] = field(default_factory=list)
    clusters: list[ClusterRow] = field(default_factory=list)
    endpoints: list[EndpointRow] = field(default_factory=list)


def compute(
    prev: Poll | None, cur: Poll, *, admin: str, service: str = "?", now: float | None = None
) -> View:
    """The view of `cur`, with rates over the interval since `prev` (none without one, or when the sidecar
    restarted in between: two processes' counters do not subtract)."""
    metrics = cur.metrics
    if prev is not None and prev.start_time != cur.start_time:
        prev = None
    seconds = cur.at - prev.at if prev is not None and cur.at > prev.at else None
    before = prev.metrics if prev is not None else None

    view = View(admin=admin, service=service, seconds=seconds)
    version = next((s.labels.get("version") for s in metrics.series("pillion_build_info")), None)
    view.version = version or "?"
    start = cur.start_time
    if start is not None:
        view.uptime = max(0.0, (time.time() if now is None else now) - start)
    view.rss = metrics.value("pillion_process_resident_memory_bytes")
    view.connections_down = metrics.total("pillion_downstream_connections_active")
    view.connections_up = metrics.total("pillion_upstream_connections_active")

    def route_of(labels: Mapping[str, str]) -> tuple[str, str, str]:
        return (labels.get("listener", ""), labels.get("route", ""), labels.get("cluster", ""))

    def cluster_of(labels: Mapping[str, str]) -> str:
        return labels.get("cluster", "")

    def endpoint_of(labels: Mapping[str, str]) -> tuple[str, str]:
        return (labels.get("cluster", ""), labels.get("endpoint", ""))

    # A row with no counter series at all has answered nothing yet: zero, once there is an interval.
    idle = Traffic() if before is not None else None
    route_traffic = _traffic(before, metrics, REQUESTS, "code", route_of)
    route_latency = _latency(before, metrics, route_of)
    keys = list(dict.fromkeys([*route_traffic, *route_latency]))
    # The no-route series exist from the start (pre-created per listener); hide them until used.
    lifetime = {route_of(dict(k)): h.count for k, h in metrics.histograms(DURATION).items()}
    keys = [k for k in keys if k[1] or k in route_traffic or lifetime.get(k, 0) > 0]
    # Requests no route matched (route ""): after the routes, they are the odd ones out.
    keys.sort(key=lambda k: k[1] == "")
    for key in keys:
        rates = Rates.of(route_traffic.get(key, idle), route_latency.get(key), seconds)
        view.routes.append(RouteRow(*key, rates))
    if before is not None and seconds:
        everything = _traffic(before, metrics, REQUESTS, "code", lambda _labels: "")
        everything_latency = _latency(before, metrics, lambda _labels: "")
        view.total = Rates.of(everything.get(""), everything_latency.get(""), seconds)

    cluster_traffic = _traffic(before, metrics, REQUESTS, "code", cluster_of)
    cluster_latency = _latency(before, metrics, cluster_of)
    retries = metrics.values(RETRIES)
    retries_before = before.values(RETRIES) if before is not None else {}
    endpoint_traffic = _traffic(before, metrics, UPSTREAM_RESPONSES, "code_class", endpoint_of)
    names = [str(c.get("name", "")) for c in cur.clusters]
    names += sorted({k for k in cluster_traffic if k and k not in names})
    views = {str(c.get("name", "")): c for c in cur.clusters}
    for name in names:
        data = views.get(name, {})
        listed = data.get("endpoints")
        endpoints = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
        retry_key = (("cluster", name),)
        retried = counter_delta(retries_before.get(retry_key), retries.get(retry_key, 0.0))
        view.clusters.append(
            ClusterRow(
                name=name,
                rates=Rates.of(cluster_traffic.get(name, idle), cluster_latency.get(name), seconds),
                active=_int(data.get("requests_active")),
                connections=_int(data.get("connections")),
                retries_per_s=retried / seconds if retried is not None and seconds else None,
                healthy=sum(1 for e in endpoints if e.get("state") == "healthy"),
                endpoints=len(endpoints),
            )
        )
        for e in endpoints:
            address = str(e.get("address", ""))
            view.endpoints.append(
                EndpointRow(
                    cluster=name,
                    address=address,
                    state=str(e.get("state", "?")),
                    active=_int(e.get("active_requests")),
                    rates=Rates.of(endpoint_traffic.get((name, address), idle), None, seconds),
                    ejections=_int(e.get("times_ejected")),
                )
            )
    return view


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _traffic(
    before: Scrape | None, after: Scrape, name: str, code_label: str, group: Callable[[Mapping[str, str]], K]
) -> dict[K, Traffic | None]:
    """The counter family's increase since `before`, summed per group and split by status class. A group
    any of whose series reset maps to None (no data); so does every group when there is no `before`."""
    out: dict[K, Traffic | None] = {}
    earlier = before.values(name) if before is not None else {}
    for sample in after.series(name):
        key = group(sample.labels)
        if before is None:
            out[key] = None
            continue
        delta = counter_delta(earlier.get(sample.key), sample.value)
        if delta is None:
            out[key] = None
            continue
        if key not in out:
            out[key] = Traffic()
        traffic = out[key]
        if traffic is not None:
            traffic.add(sample.labels.get(code_label, ""), delta)
    return out


def _latency(
    before: Scrape | None, after: Scrape, group: Callable[[Mapping[str, str]], K]
) -> dict[K, Histogram | None]:
    """The request-duration observations since `before`, merged per group; None where unknown."""
    out: dict[K, Histogram | None] = {}
    earlier = before.histograms(DURATION) if before is not None else {}
    for key, histogram in after.histograms(DURATION).items():
        group_key = group(dict(key))
        if before is None:
            out[group_key] = None
            continue
        delta = histogram.minus(earlier.get(key))
        so_far = out.get(group_key, Histogram())
        if delta is None or so_far is None:
            out[group_key] = None
            continue
        try:
            out[group_key] = delta if not so_far.buckets else so_far.plus(delta)
        except ValueError:
            out[group_key] = None  # two series with different buckets: no honest way to merge them
    return out


# -- rendering ----------------------------------------------------------------------------------------


def render(view: View, *, interval: float, live: bool) -> list[Line]:
    """The screen as lines of text with a style each; the same for curses and for --once."""
    lines: list[Line] = []
    connections = f"conns {_count(view.connections_down)} down / {_count(view.connections_up)} up"
    lines.append(
        (
            f"pillion top: {_printable(view.service)} at {view.admin} (pillion {_printable(view.version)})"
            f"  up {_uptime(view.uptime)}  rss {_bytes(view.rss)}  {connections}",
            "title",
        )
    )
    if view.seconds is None:
        summary = f"collecting: rates after the next poll, in {interval:g}s"
    else:
        t = view.total
        summary = (
            f"{_rate(t.rps)} req/s  5xx {_share(t.share_5xx)}  4xx {_share(t.share_4xx)}"
            f"  p50 {_latency_text(t.p50)}  p99 {_latency_text(t.p99)}  over the last {view.seconds:.1f}s"
        )
    keys = "  q quits" if live else ""
    lines.append((f"{summary}  at {time.strftime('%H:%M:%S')}{keys}", "note"))

    lines.append(("", "normal"))
    lines.append(("ROUTES", "title"))
    route_rows = [
        (
            [
                _printable(r.listener),
                _printable(r.route) or "-",
                _printable(r.cluster) or "-",
                *_rate_cells(r.rates),
            ],
            _bad(r.rates),
        )
        for r in view.routes
    ]
    lines += _table(["LISTENER", "ROUTE", "CLUSTER", "REQ/S", "5XX", "4XX", "P50", "P99"], 3, route_rows)

    lines.append(("", "normal"))
    lines.append(("CLUSTERS", "title"))
    cluster_rows = [
        (
            [
                _printable(c.name),
                *_rate_cells(c.rates),
                _count(c.active),
                _count(c.connections),
                _rate(c.retries_per_s),
                f"{c.healthy}/{c.endpoints}",
            ],
            _bad(c.rates) or c.healthy < c.endpoints,
        )
        for c in view.clusters
    ]
    headings = ["CLUSTER", "REQ/S", "5XX", "4XX", "P50", "P99", "ACTIVE", "CONNS", "RETRY/S", "HEALTHY"]
    lines += _table(headings, 1, cluster_rows)

    lines.append(("", "normal"))
    lines.append(("ENDPOINTS", "title"))
    endpoint_rows = [
        (
            [
                _printable(e.cluster),
                _printable(e.address),
                _printable(e.state),
                _count(e.active),
                _rate(e.rates.rps),
                _share(e.rates.share_5xx),
                _count(e.ejections),
            ],
            e.state != "healthy",
        )
        for e in view.endpoints
    ]
    lines += _table(
        ["CLUSTER", "ENDPOINT", "STATE", "ACTIVE", "RESP/S", "5XX", "EJECTIONS"], 3, endpoint_rows
    )
    return lines


def _table(headings: list[str], left: int, rows: list[tuple[list[str], bool]]) -> list[Line]:
    """Aligned columns: the first `left` are names (left-aligned), the rest numbers (right-aligned)."""
    if not rows:
        return [("  (none)", "note")]
    widths = [max(len(h), *(len(cells[i]) for cells, _ in rows)) for i, h in enumerate(headings)]

    def line(cells: list[str]) -> str:
        parts = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [(line(headings), "heading"), *((line(cells), "bad" if bad else "normal") for cells, bad in rows)]


def _rate_cells(rates: Rates) -> list[str]:
    return [
        _rate(rates.rps),
        _share(rates.share_5xx),
        _share(rates.share_4xx),
        _latency_text(rates.p50),
        _latency_text(rates.p99),
    ]


def _bad(rates: Rates) -> bool:
    return bool(rates.share_5xx)


def _printable(text: str) -> str:
    # Label values may hold any character (a newline arrives unescaped); one cell stays one line.
    return "".join(c if c.isprintable() else "?" for c in text)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _latency_text(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f}ms"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{s:02d}s"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


# -- the two front ends -----------------------------------------------------------------------------


class Monitor:
    """The poll-and-compare loop's state: the last poll, and the latest screen (or why there is none)."""

    def __init__(self, client: AdminClient, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.prev: Poll | None = None
        self.view: View | None = None
        self.error: str | None = None

    def refresh(self) -> None:
        try:
            cur = self.client.poll()
            service = self.client.service(cur)
        except AdminError as exc:
            # Rates after the outage are measured from the next good poll, not across the gap.
            self.prev, self.view, self.error = None, None, str(exc)
            return
        try:
            self.view = compute(self.prev, cur, admin=self.client.address, service=service)
        except Exception as exc:
            # Answers this version cannot make sense of (another version's /clusters, say): a line on
            # screen that says so beats a traceback over a half-drawn terminal.
            self.prev, self.view = None, None
            self.error = (
                f"cannot make sense of what {self.client.address} answered ({type(exc).__name__}: {exc})"
            )
            return
        self.prev, self.error = cur, None

    def lines(self, *, live: bool) -> list[Line]:
        if self.view is not None:
            return render(self.view, interval=self.interval, live=live)
        message = self.error or "connecting"
        retry = f"retrying every {self.interval:g}s ({time.strftime('%H:%M:%S')})   q quits" if live else ""
        return [
            (f"pillion top - admin {self.client.address}", "title"),
            (message, "message"),
            (retry, "note"),
        ]


def _once(client: AdminClient, interval: float) -> int:
    monitor = Monitor(client, interval)
    started = time.monotonic()
    monitor.refresh()
    if monitor.error is None:
        time.sleep(max(0.0, started + interval - time.monotonic()))  # the polls one interval apart
        monitor.refresh()
    if monitor.error is not None:
        print(f"pillion top: {monitor.error}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(text + "\n" for text, _ in monitor.lines(live=False)))
    return 0


def _live(client: AdminClient, interval: float) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("pillion top: the live view needs a terminal; use --once for a plain snapshot", file=sys.stderr)
        return 2
    import curses
    import locale

    locale.setlocale(locale.LC_ALL, "")  # so curses encodes non-ASCII names for this terminal
    # Ask the terminal for its size, never $LINES/$COLUMNS: those are often stale exports (pytest sets
    # 24x80), and ncurses would believe them over the real window and through every resize. (use_env(False)
    # is no cure: it means the terminfo default, 80 columns.)
    for name in ("LINES", "COLUMNS"):
        os.environ.pop(name, None)
    try:
        code: int = curses.wrapper(_screen, Monitor(client, interval))
    except curses.error as exc:
        print(f"pillion top: cannot drive this terminal ({exc}); use --once", file=sys.stderr)
        return 2
    return code


def _screen(stdscr: curses.window, monitor: Monitor) -> int:
    import curses

    styles = _styles()
    with contextlib.suppress(curses.error):
        curses.curs_set(0)  # a terminal that cannot hide its cursor shows it; nothing else changes
    stdscr.keypad(True)
    next_poll = time.monotonic()
    # Runs until `q` (or Ctrl-C, handled by main): a live view has no natural end.
    while True:
        if time.monotonic() >= next_poll:
            started = time.monotonic()
            monitor.refresh()
            # Polls start one interval apart, so "every 1s" holds however long a poll takes; a sidecar
            # slower to answer than that still gets a breather (and the keyboard a look) between polls.
            next_poll = max(started + monitor.interval, time.monotonic() + monitor.interval / 4)
            _draw(stdscr, monitor.lines(live=True), styles)
        stdscr.timeout(max(1, int((next_poll - time.monotonic()) * 1000)))
        key = stdscr.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            _draw(stdscr, monitor.lines(live=True), styles)


def _styles() -> dict[str, int]:
    import curses

    styles = {
        "title": curses.A_BOLD,
        "heading": curses.A_REVERSE,
        "normal": 0,
        "bad": curses.A_BOLD,
        "note": 0,
    }
    if curses.has_colors():
        try:
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
            curses.init_pair(2, curses.COLOR_CYAN, -1)
            styles["bad"] = curses.color_pair(1) | curses.A_BOLD
            styles["note"] = curses.color_pair(2)
        except curses.error:
            pass  # colours are a nicety: bold and reverse carry the meaning on their own
    return styles


def _draw(stdscr: curses.window, lines: list[Line], styles: dict[str, int]) -> None:
    import curses

    # erase (not clear) then refresh: curses diffs against what is on screen and sends only the changes.
    stdscr.erase()
    height, width = stdscr.getmaxyx()
    # A message (why the admin API cannot be read) wraps: its end is usually the useful part.
    lines = [
        (part, "bad" if style == "message" else style)
        for text, style in lines
        for part in (textwrap.wrap(text, max(width, 20)) if style == "message" else [text])
    ]
    if len(lines) > height:
        hidden = len(lines) - height + 1
        lines = [*lines[: height - 1], (f"... {hidden} more lines: enlarge the window", "note")]
    for y, (text, style) in enumerate(lines):
        for attempt in (text, text.encode("ascii", "replace").decode()):
            try:
                stdscr.addnstr(y, 0, attempt, width, styles.get(style, 0))
                break
            except UnicodeEncodeError:
                continue  # a name this terminal's encoding cannot show: again with `?` in its place
            except curses.error:
                break  # writing the bottom-right cell moves the cursor off screen, which curses reports
    stdscr.refresh()
