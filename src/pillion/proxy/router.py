"""Routes compiled for the hot path, and the router: the first route whose conditions hold wins.

A route is compiled once per config into plain values: its match, its action (a cluster, a weighted
split, a redirect or a direct response) and its policies (retries, rate limit, fault injection, header
edits and rewrites). Matching is a short loop of comparisons. A route without policies costs the
downstream side one flag check.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from pillion.config.model import Authorization, DirectResponse, Fault, RateLimit, Redirect, Route
from pillion.http.header_edit import HeaderEdit, compile_edit

# Imported for real, not under TYPE_CHECKING: the compiled (mypyc) dataclasses below need these
# classes when they are created. The filters are named through protocols instead, so that they are
# imported only when a route uses them.
from pillion.proxy.cluster import Cluster
from pillion.proxy.retry_policy import RetryRule
from pillion.proxy.route_match import Matcher, RequestView, compile_match, host_key
from pillion.proxy.stats import ProxyStats
from pillion.telemetry.stats import Counter, CounterFamily, Histogram


class RateLimiter(Protocol):
    """What a route needs of filters/rate_limit.py's limiter."""

    def check(self, key: bytes) -> float: ...


class FaultInjector(Protocol):
    """What a route needs of filters/fault.py's injector."""

    def decide(self) -> tuple[float, int]: ...


class Authorizer(Protocol):
    """What a route needs of filters/authz.py's policy."""

    def decide(self, peer: str | None, req: RequestView) -> str | None: ...


@dataclass(slots=True, eq=False)
class RouteStats:
    """The metric children every request on one route touches, resolved once."""

    duration: Histogram
    request_size: Histogram
    response_size: Histogram
    requests: CounterFamily
    labels: tuple[str, str, str]  # listener, route, cluster
    by_code: dict[int, Counter] = field(default_factory=dict)
    # The status counted last and its counter: a route answers mostly one status, and comparing two
    # native ints costs a tenth of looking the code up in `by_code`. -1: none yet (the counter unused).
    # Not init fields, so a `replace` (split variants, each with its own children) starts afresh.
    last_code: int = field(default=-1, init=False)
    last_counter: Counter = field(default_factory=Counter, init=False)

    def count(self, code: int) -> None:
        if code != self.last_code:
            counter = self.by_code.get(code)
            if counter is None:
                counter = self.by_code[code] = self.requests.labels(*self.labels, str(code))
            self.last_code, self.last_counter = code, counter
        self.last_counter.value += 1


@dataclass(slots=True, eq=False, kw_only=True)
class RouteEntry(RouteStats):
    """A compiled route: its match conditions, its action, its policies.

    A `split` route is a parent whose variants (one per cluster, each with its own metric children)
    share its match and policies; `pick_variant` chooses one per request by weight."""

    name: str
    cluster: Cluster | None  # None for split parents, redirects and direct responses
    timeout: float
    matcher: Matcher
    prefix: bytes | None  # the matched prefix, for prefix rewrites and redirects
    body_limit: int = -1  # the route's max_request_body_size (0: none); -1: the listener's applies
    retry: RetryRule | None = None
    variants: tuple[RouteEntry, ...] = ()
    cumulative: tuple[int, ...] = ()  # running totals of the variants' weights
    # Anything beyond "send to the cluster": the downstream side checks this one flag per request.
    policies: bool = False
    rate_limiter: RateLimiter | None = None
    rate_key: str = "route"
    rate_header: bytes = b""
    fault: FaultInjector | None = None
    authorizer: Authorizer | None = None
    authz_denied: Counter | None = None
    direct: DirectResponse | None = None
    redirect: Redirect | None = None
    request_edit: HeaderEdit | None = None
    response_edit: HeaderEdit | None = None
    prefix_rewrite: bytes | None = None
    host_rewrite: bytes | None = None
    rate_limited: Counter | None = None
    fault_delays: Counter | None = None
    fault_aborts: Counter | None = None

    def pick_variant(self) -> RouteEntry:
        cumulative = self.cumulative
        return self.variants[bisect_right(cumulative, random.random() * cumulative[-1])]


def _rate_limiter(config: RateLimit | None) -> RateLimiter | None:
    if config is None:
        return None
    from pillion.filters import rate_limit  # filters load only when a route uses them

    return rate_limit.RateLimiter(config)


def _fault_injector(config: Fault | None) -> FaultInjector | None:
    if config is None:
        return None
    from pillion.filters import fault

    return fault.FaultInjector(config)


def _authorizer(config: Authorization | None) -> Authorizer | None:
    if config is None:
        return None
    from pillion.filters import authz

    return authz.Authorizer(config)


def compile_route(
    listener: str,
    route: Route,
    clusters: dict[str, Cluster],
    stats: ProxyStats,
    authorization: Authorization | None = None,
) -> RouteEntry:
    """`authorization` is the listener's policy, used when the route has none of its own."""
    m = route.match
    cluster = clusters[route.cluster] if route.cluster is not None else None
    cluster_label = cluster.name if cluster is not None else ""
    limit = route.rate_limit
    request_edit = compile_edit(route.request_headers_add, route.request_headers_remove)
    response_edit = compile_edit(route.response_headers_add, route.response_headers_remove)
    entry = RouteEntry(
        name=route.name,
        cluster=cluster,
        timeout=float(route.timeout),
        matcher=compile_match(m),
        prefix=m.prefix.encode() if m.prefix is not None else None,
        body_limit=int(route.max_request_body_size) if route.max_request_body_size is not None else -1,
        **stats.route_fields((listener, route.name, cluster_label)),
        retry=RetryRule(route.retries) if route.retries is not None else None,
        rate_limiter=_rate_limiter(limit),
        rate_key=limit.key if limit is not None else "route",
        rate_header=(limit.header or "").lower().encode() if limit is not None else b"",
        fault=_fault_injector(route.fault),
        authorizer=_authorizer(route.authorization or authorization),
        direct=route.direct_response,
        redirect=route.redirect,
        request_edit=request_edit,
        response_edit=response_edit,
        prefix_rewrite=route.prefix_rewrite.encode() if route.prefix_rewrite is not None else None,
        host_rewrite=route.host_rewrite.encode() if route.host_rewrite is not None else None,
    )
    if entry.rate_limiter is not None:
        entry.rate_limited = stats.rate_limit().limited.labels(listener, route.name)
    if entry.authorizer is not None:
        entry.authz_denied = stats.authz().denied.labels(listener, route.name)
    if entry.fault is not None:
        entry.fault_delays = stats.fault().delays.labels(listener, route.name)
        entry.fault_aborts = stats.fault().aborts.labels(listener, route.name)
    entry.policies = any(
        x is not None
        for x in (
            entry.rate_limiter,
            entry.fault,
            entry.authorizer,
            entry.direct,
            entry.redirect,
            request_edit,
            entry.prefix_rewrite,
            entry.host_rewrite,
        )
    )
    if route.split:
        variants = []
        total = 0
        cumulative = []
        for side in route.split:
            target = clusters[side.cluster]
            labels = (listener, route.name, target.name)
            variants.append(
                replace(
                    entry,
                    cluster=target,
                    **stats.route_fields(labels),
                )
            )
            total += side.weight
            cumulative.append(total)
        # Zero-weight sides stay in the list but can never be drawn (bisect skips empty intervals).
        entry.variants = tuple(variants)
        entry.cumulative = tuple(cumulative)
    return entry


HOST_CACHE_SIZE: Final = 256
_QUERY: Final = ord("?")


class Router:
    """The ordered routes of one listener."""

    __slots__ = ("_hosts", "_needs_host", "routes")

    def __init__(self, routes: list[RouteEntry]) -> None:
        self.routes = routes
        self._needs_host = any(r.matcher.needs_host for r in routes)
        # Host header -> matching key. A sidecar sees a handful of distinct Host values, so this spares
        # the parse on almost every request; bounded, since clients choose the values.
        self._hosts: dict[bytes, bytes] = {}

    def match(self, req: RequestView) -> RouteEntry | None:
        target = req.target
        # `in` with an int first: bytes.find parses its arguments with a format string (~10x the cost)
        path = target[: target.find(b"?")] if _QUERY in target else target
        host = b""
        if self._needs_host:
            raw = req.host
            host = self._hosts.get(raw, b"")
            if not host and raw:
                host = host_key(raw)[0]
                if len(self._hosts) < HOST_CACHE_SIZE:
                    self._hosts[raw] = host
        for route in self.routes:
            if route.matcher.matches(req, host, path):
                return route
        return None
