"""Route matching: the first route whose host and path conditions hold wins.

A route is compiled once per config into a tuple of plain values; matching is a short loop of string
comparisons. Hosts are compared without port and case-insensitively; `*.example.com` matches any name
ending in `.example.com`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pillion.config.model import Route

if TYPE_CHECKING:
    from pillion.proxy.cluster import Cluster
    from pillion.telemetry.stats import Counter, CounterFamily, Histogram


@dataclass(slots=True, eq=False)
class RouteStats:
    """The metric children every request on one route touches, resolved once."""

    duration: Histogram
    requests: CounterFamily
    labels: tuple[str, str, str]  # listener, route, cluster
    by_code: dict[int, Counter] = field(default_factory=dict)

    def count(self, code: int) -> None:
        counter = self.by_code.get(code)
        if counter is None:
            counter = self.by_code[code] = self.requests.labels(*self.labels, str(code))
        counter.value += 1


@dataclass(slots=True, eq=False, kw_only=True)
class RouteEntry(RouteStats):
    """A compiled route: its match conditions, its cluster, its timeout."""

    name: str
    cluster: Cluster
    timeout: float
    prefix: bytes | None
    path: bytes | None
    host: bytes | None  # exact host, or the suffix (with its leading dot) of a wildcard
    host_is_suffix: bool

    def matches(self, host: bytes, path: bytes) -> bool:
        if self.host is not None:
            if self.host_is_suffix:
                if not host.endswith(self.host):
                    return False
            elif host != self.host:
                return False
        if self.path is not None:
            return path == self.path
        return self.prefix is None or path.startswith(self.prefix)


def compile_route(
    listener: str,
    route: Route,
    cluster: Cluster,
    requests: CounterFamily,
    duration: Histogram,
) -> RouteEntry:
    m = route.match
    host: bytes | None = None
    suffix = False
    if m.host is not None:
        name = m.host.lower()
        suffix = name.startswith("*.")
        host = (name[1:] if suffix else name).encode()
    return RouteEntry(
        name=route.name,
        cluster=cluster,
        timeout=float(route.timeout),
        prefix=m.prefix.encode() if m.prefix is not None else None,
        path=m.path.encode() if m.path is not None else None,
        host=host,
        host_is_suffix=suffix,
        duration=duration,
        requests=requests,
        labels=(listener, route.name, cluster.name),
    )


class Router:
    """The ordered routes of one listener."""

    __slots__ = ("_any_host", "routes")

    def __init__(self, routes: list[RouteEntry]) -> None:
        self.routes = routes
        self._any_host = all(r.host is None for r in routes)

    def match(self, host: bytes, target: bytes) -> RouteEntry | None:
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        if not self._any_host:
            # Host without port, lower-cased; IPv6 literals keep their brackets.
            end = host.rfind(b":")
            if end > host.rfind(b"]"):
                host = host[:end]
            host = host.lower()
        for route in self.routes:
            if route.matches(host, path):
                return route
        return None
