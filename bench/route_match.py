"""Cost of one route match, compiled matcher vs the old `RouteEntry.matches`: `python bench/route_match.py`.

Each case times `matches` on a request it accepts (the cost a winning route pays) with `timeit`, best of
several repeats, in nanoseconds per call. The request has the headers a typical client sends, so the
header-condition case pays for a realistic walk.
"""

from __future__ import annotations

import timeit
from dataclasses import dataclass, field
from typing import Any

from pillion.config.model import RouteMatch, ValueMatch
from pillion.proxy.route_match import compile_match, host_key, split_target
from pillion.proxy.router import RouteEntry


@dataclass
class Req:
    method: bytes = b"GET"
    host: bytes = b"api.local:8080"
    target: bytes = b"/api/v1/users?id=7"
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [
            (b"Host", b"api.local:8080"),
            (b"User-Agent", b"curl/8.5.0"),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"gzip, deflate"),
            (b"X-Request-Id", b"7f2c1a9e-0000-4000-8000-000000000001"),
            (b"X-Tenant", b"acme"),
            (b"Authorization", b"Bearer abc.def.ghi"),
            (b"X-Canary", b"1"),
        ]
    )


def _old(prefix: bytes | None, host: bytes | None, suffix: bool = False) -> RouteEntry:
    fake: Any = None
    return RouteEntry(
        name="r",
        cluster=fake,
        timeout=1.0,
        prefix=prefix,
        path=None,
        host=host,
        host_is_suffix=suffix,
        duration=fake,
        requests=fake,
        labels=("l", "r", "c"),
    )


def _old_host(host: bytes) -> bytes:
    """What `Router.match` did inline before: drop the port, lower-case."""
    end = host.rfind(b":")
    if end > host.rfind(b"]"):
        host = host[:end]
    return host.lower()


def _ns(stmt: Any, number: int = 500_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=7)) / number * 1e9


def main() -> None:
    req = Req()
    host = host_key(req.host)[0]
    path = split_target(req.target)[0]
    cases = {
        "prefix only": (RouteMatch(prefix="/api/"), _old(b"/api/", None)),
        "host + prefix": (RouteMatch(host="api.local", prefix="/api/"), _old(b"/api/", b"api.local")),
        "wildcard host + prefix": (
            RouteMatch(host="*.local", prefix="/api/"),
            _old(b"/api/", b".local", suffix=True),
        ),
        "prefix + 2 headers": (
            RouteMatch(
                prefix="/api/",
                headers=(ValueMatch(name="x-tenant", exact="acme"), ValueMatch(name="X-Canary")),
            ),
            None,
        ),
        "prefix + query": (RouteMatch(prefix="/api/", query=(ValueMatch(name="id", regex=r"\d+"),)), None),
        "regex": (RouteMatch(regex=r"/api/v\d+/users"), None),
    }
    print(f"{'case':<26}{'compiled ns':>12}{'old ns':>10}")
    for name, (match, old) in cases.items():
        m = compile_match(match)
        assert m.matches(req, host, path), name
        new = _ns(lambda m=m: m.matches(req, host, path))
        if old is not None:
            assert old.matches(host, path)
            was = f"{_ns(lambda old=old: old.matches(host, path)):10.0f}"
        else:
            was = f"{'-':>10}"
        print(f"{name:<26}{new:12.0f}{was}")
    base = _ns(lambda: None)
    print(f"{'(empty lambda)':<26}{base:12.0f}")
    hk_new, hk_old = _ns(lambda: host_key(req.host)), _ns(lambda: _old_host(req.host))
    print(f"{'host_key(host:port)':<26}{hk_new:12.0f}{hk_old:10.0f}")
    print(f"{'split_target':<26}{_ns(lambda: split_target(req.target)):12.0f}")


if __name__ == "__main__":
    main()
