"""Clusters on real loopback sockets: load balancing, circuit breaking, health checks, DNS endpoints,
retries (bodies, connect failures, per-try timeouts) and the access log's response flags.

Each test runs a real Runtime in front of real scriptable upstreams under uvloop; endpoints tell which
of them served a request by the `x-upstream` response header. Metrics and endpoint states are read from
the admin server (`/metrics`, `/clusters`), as an operator would.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import uvloop

from pillion.runtime.runtime import Runtime
from pillion.testing.http import ClientConnection, Response, http_request
from pillion.testing.metrics import admin_metric
from pillion.testing.ports import free_port
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream, pattern_bytes

HOST = "127.0.0.1"
FAST_BACKOFF = {"base": "1ms", "max": "2ms"}


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


async def upstreams(stack: AsyncExitStack, *names: str) -> list[ScriptableUpstream]:
    return [await stack.enter_async_context(ScriptableUpstream(name=name)) for name in names]


async def endpoint_states(rt: Runtime, cluster: str = "app") -> dict[str, str]:
    """address -> state (healthy, unhealthy, ejected), from the admin server's /clusters."""
    reply = await http_request(HOST, rt.admin.port, "GET", "/clusters")
    assert reply.status == 200
    (view,) = [c for c in reply.json()["clusters"] if c["name"] == cluster]
    return {e["address"]: e["state"] for e in view["endpoints"]}


async def assert_settled(rt: Runtime) -> None:
    """Every cluster's in-flight counters are back to zero (the admin's /clusters)."""
    reply = await http_request(HOST, rt.admin.port, "GET", "/clusters")
    for view in reply.json()["clusters"]:
        counters = (view["requests_active"], view["pending"], view["retries_active"])
        assert counters == (0, 0, 0), view
        assert all(e["active_requests"] == 0 for e in view["endpoints"]), view


async def until(condition: Callable[[], Coroutine[Any, Any, bool]], limit: float = 3.0) -> None:
    """Poll an async condition every 20 ms (states change in background tasks with nothing to await)."""
    async with asyncio.timeout(limit):
        while not await condition():  # noqa: ASYNC110 -- nothing to wait on but the state itself
            await asyncio.sleep(0.02)


async def served_by(port: int, count: int, path: str = "/", **kwargs: Any) -> list[str]:
    """The `x-upstream` of `count` sequential requests on one keep-alive connection."""
    names = []
    async with await ClientConnection.open(HOST, port) as conn:
        for _ in range(count):
            r = await conn.request("GET", path, **kwargs)
            assert r.status == 200, r
            names.append(r.header("x-upstream") or "")
    return names


def app_requests(up: ScriptableUpstream) -> list[str]:
    """Paths the upstream received, health checks left out."""
    return [r.path for r in up.requests if r.path != "/healthz"]


# -- load balancing -------------------------------------------------------------------------------


def test_weighted_round_robin_is_exact() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b = await upstreams(stack, "a", "b")
            endpoints = [{"address": a.address, "weight": 1}, {"address": b.address, "weight": 3}]
            cfg = sidecar_config([], cluster={"endpoints": endpoints})
            rt = await stack.enter_async_context(running_sidecar(cfg))
            served = await served_by(rt.listeners[0].port, 400)
            assert Counter(served) == {"a": 100, "b": 300}
            # Interleaved, not grouped: every window of one period (4) holds exactly one `a`.
            assert all(served[i : i + 4].count("a") == 1 for i in range(len(served) - 3))

    run(main())


def test_least_request_and_random_reach_every_endpoint() -> None:
    async def main() -> None:
        for lb in ("least_request", "random"):
            async with AsyncExitStack() as stack:
                ups = await upstreams(stack, "a", "b", "c")
                cfg = sidecar_config([u.address for u in ups], cluster={"lb": lb})
                rt = await stack.enter_async_context(running_sidecar(cfg))
                served = Counter(await served_by(rt.listeners[0].port, 90))
                assert set(served) == {"a", "b", "c"}, (lb, served)
                assert all(n >= 10 for n in served.values()), (lb, served)

    run(main())


def test_least_request_prefers_the_endpoint_with_fewer_requests_in_flight() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b = await upstreams(stack, "a", "b")
            cfg = sidecar_config([a.address, b.address], cluster={"lb": "least_request"})
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            slow = asyncio.ensure_future(http_request(HOST, port, "GET", "/delay/0.5"))
            await until(lambda: _true(len(a.requests) + len(b.requests) == 1))
            busy = "a" if a.requests else "b"
            # With two endpoints both are always drawn, and the idle one wins while the other is busy.
            served = await served_by(port, 10)
            assert served == ["b" if busy == "a" else "a"] * 10
            assert (await slow).header("x-upstream") == busy

    run(main())


async def _true(value: bool) -> bool:
    return value


def test_ring_hash_by_header_is_sticky_and_spreads() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            ups = await upstreams(stack, "a", "b", "c")
            cfg = sidecar_config(
                [u.address for u in ups], cluster={"lb": "ring_hash", "hash_on": {"header": "X-User"}}
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            owner: dict[str, str] = {}
            async with await ClientConnection.open(HOST, port) as conn:
                for _ in range(3):
                    for i in range(30):
                        r = await conn.request("GET", "/", headers=[("x-user", f"user-{i}")])
                        served = r.header("x-upstream") or ""
                        assert owner.setdefault(f"user-{i}", served) == served
            assert len(set(owner.values())) >= 2
            # A new connection (another client port) changes nothing: the header decides.
            for i in range(5):
                r = await http_request(HOST, port, "GET", "/", headers=[("x-user", f"user-{i}")])
                assert r.header("x-upstream") == owner[f"user-{i}"]

    run(main())


def test_ring_hash_by_cookie_is_sticky_and_spreads() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            ups = await upstreams(stack, "a", "b", "c")
            cfg = sidecar_config(
                [u.address for u in ups], cluster={"lb": "ring_hash", "hash_on": {"cookie": "session"}}
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            owner: dict[str, str] = {}
            async with await ClientConnection.open(HOST, port) as conn:
                for round_ in range(3):
                    for i in range(30):
                        # Other cookies, and the session cookie's place among them, do not matter.
                        cookie = f"theme=t{round_}; session=s{i}" if round_ % 2 else f"session=s{i}; z=1"
                        r = await conn.request("GET", "/", headers=[("cookie", cookie)])
                        served = r.header("x-upstream") or ""
                        assert owner.setdefault(f"s{i}", served) == served, (cookie, owner)
            assert len(set(owner.values())) >= 2

    run(main())


# -- circuit breaking -----------------------------------------------------------------------------


def test_max_requests_overflow_fails_fast() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config([up.address], cluster={"circuit_breaker": {"max_requests": 1}})
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            loop = asyncio.get_running_loop()
            slow = asyncio.ensure_future(http_request(HOST, port, "GET", "/delay/0.5"))
            await up.wait_for_requests(1)
            started = loop.time()
            r = await http_request(HOST, port, "GET", "/second")
            assert r.status == 503 and r.header("x-pillion-error") == "overflow"
            assert loop.time() - started < 0.45  # failed fast, did not wait for the slow one (0.5 s)
            assert (await slow).status == 200
            assert app_requests(up) == ["/delay/0.5"]
            assert (
                await admin_metric(rt, "pillion_upstream_overflows_total", cluster="app", limit="requests")
                == 1
            )
            # Once the slow one is done the limit has room again.
            assert (await http_request(HOST, port, "GET", "/third")).status == 200

    run(main())


def test_max_pending_overflow_fails_fast_and_the_waiter_gets_the_freed_connection() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config(
                [up.address], cluster={"circuit_breaker": {"max_connections": 1, "max_pending": 1}}
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            cluster = rt.clusters["app"]
            first = asyncio.ensure_future(http_request(HOST, port, "GET", "/delay/0.4"))
            await up.wait_for_requests(1)
            waiting = asyncio.ensure_future(http_request(HOST, port, "GET", "/waited"))
            await until(lambda: _true(cluster.pending == 1))
            r = await http_request(HOST, port, "GET", "/third")
            assert r.status == 503 and r.header("x-pillion-error") == "overflow"
            assert (await first).status == 200
            waited = await waiting
            assert waited.status == 200 and waited.text == "GET /waited\n"
            assert up.connections_accepted == 1  # the waiter took the connection the first gave back
            assert app_requests(up) == ["/delay/0.4", "/waited"]
            overflows = "pillion_upstream_overflows_total"
            assert await admin_metric(rt, overflows, cluster="app", limit="pending") == 1
            assert await admin_metric(rt, overflows, cluster="app", limit="requests") == 0
            await assert_settled(rt)

    run(main())


def test_max_pending_zero_serves_only_on_idle_connections() -> None:
    # Like Envoy's max_pending_requests: a request waiting for a connection being opened is pending, so
    # with 0 a request that finds no idle connection overflows.
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config(
                [up.address], cluster={"circuit_breaker": {"max_connections": 1, "max_pending": 0}}
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            r = await http_request(HOST, rt.listeners[0].port, "GET", "/")
            assert r.status == 503 and r.header("x-pillion-error") == "overflow"
            assert up.connections_accepted == 0
            assert (
                await admin_metric(rt, "pillion_upstream_overflows_total", cluster="app", limit="pending")
                == 1
            )

    run(main())


# -- health checks --------------------------------------------------------------------------------

HEALTH_CHECK = {
    "path": "/healthz",
    "interval": "100ms",
    "timeout": "500ms",
    "unhealthy_threshold": 1,
    "healthy_threshold": 1,
}


def test_health_checks_take_an_endpoint_out_and_back() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b = await upstreams(stack, "a", "b")
            cfg = sidecar_config([a.address, b.address], cluster={"health_check": HEALTH_CHECK})
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port

            async def states_are(want_a: str, want_b: str) -> bool:
                states = await endpoint_states(rt)
                return (states[a.address], states[b.address]) == (want_a, want_b)

            assert await states_are("healthy", "healthy")
            b.healthy = False
            await until(lambda: states_are("healthy", "unhealthy"))
            assert set(await served_by(port, 10)) == {"a"}
            assert await admin_metric(rt, "pillion_endpoint_healthy", cluster="app", endpoint=b.address) == 0

            b.healthy = True
            await until(lambda: states_are("healthy", "healthy"))
            assert Counter(await served_by(port, 10)) == {"a": 5, "b": 5}

            # Both unhealthy, no_healthy_endpoint: fail (the default).
            a.healthy = b.healthy = False
            await until(lambda: states_are("unhealthy", "unhealthy"))
            before = len(app_requests(a)) + len(app_requests(b))
            r = await http_request(HOST, port, "GET", "/")
            assert r.status == 503 and r.header("x-pillion-error") == "no_healthy_endpoint"
            assert len(app_requests(a)) + len(app_requests(b)) == before
            assert await admin_metric(rt, "pillion_local_replies_total", reason="no_healthy_endpoint") == 1

            a.healthy = True
            await until(lambda: states_are("healthy", "unhealthy"))
            assert set(await served_by(port, 4)) == {"a"}

    run(main())


def test_panic_serves_when_every_endpoint_is_unhealthy() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b = await upstreams(stack, "a", "b")
            cfg = sidecar_config(
                [a.address, b.address],
                cluster={"health_check": HEALTH_CHECK, "no_healthy_endpoint": "panic"},
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            a.healthy = b.healthy = False

            async def both_unhealthy() -> bool:
                return set((await endpoint_states(rt)).values()) == {"unhealthy"}

            await until(both_unhealthy)
            assert Counter(await served_by(rt.listeners[0].port, 10)) == {"a": 5, "b": 5}

    run(main())


# -- DNS ------------------------------------------------------------------------------------------


def test_a_host_name_endpoint_is_resolved_at_start() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config(
                [f"localhost:{up.port}"],
                # Where localhost also resolves to ::1 (where nothing listens), a try there is retried.
                routes=[{"match": {"prefix": "/"}, "cluster": "app", "retries": {"on": ["connect-failure"]}}],
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            assert f"127.0.0.1:{up.port}" in await endpoint_states(rt)
            assert await served_by(rt.listeners[0].port, 3) == ["up"] * 3
            assert await admin_metric(rt, "pillion_dns_refreshes_total", cluster="app") >= 1
            assert await admin_metric(rt, "pillion_dns_failures_total", cluster="app") == 0

    run(main())


# -- retries --------------------------------------------------------------------------------------


def retry_route(**policy: Any) -> list[dict[str, Any]]:
    return [
        {"match": {"prefix": "/"}, "cluster": "app", "retries": {"backoff": FAST_BACKOFF, **policy}},
    ]


async def paced(data: bytes, pieces: int) -> AsyncIterator[bytes]:
    """`data` in `pieces` writes with pauses, so it arrives after the request head was sent upstream."""
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        await asyncio.sleep(0.01)
        yield data[i : i + step]


def test_a_post_is_not_retried_after_a_response_by_default() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config([up.address], routes=retry_route(attempts=2))
            rt = await stack.enter_async_context(running_sidecar(cfg))
            up.script.append("/status/503")
            r = await http_request(HOST, rt.listeners[0].port, "POST", "/echo", body=b"charge card 42")
            assert r.status == 503 and r.header("x-upstream") == "up"  # the app's answer, passed on
            assert r.header("x-pillion-error") is None
            assert len(up.requests) == 1
            refused = "pillion_upstream_retries_refused_total"
            assert await admin_metric(rt, refused, cluster="app", why="not_idempotent") == 1
            assert await admin_metric(rt, "pillion_upstream_retries_total", cluster="app") == 0

    run(main())


def test_non_idempotent_retries_replay_the_same_body() -> None:
    body = pattern_bytes(40_000)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config([up.address], routes=retry_route(attempts=2, non_idempotent=True))
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            cases: list[tuple[str, list[tuple[str, str]], Any]] = [
                ("in one piece", [], body),
                ("streamed, content-length", [("content-length", str(len(body)))], paced(body, 8)),
                ("streamed, chunked", [], paced(body, 8)),
            ]
            async with await ClientConnection.open(HOST, port) as conn:
                for label, headers, payload in cases:
                    up.clear()
                    up.script.extend(["/status/503", "/status/502"])
                    r = await conn.request("POST", "/echo", headers=headers, body=payload)
                    assert r.status == 200 and r.body == body, label
                    behaviours = [q.behaviour for q in up.requests]
                    assert behaviours == ["/status/503", "/status/502", "/echo"], label
                    for q in up.requests:
                        assert q.complete and q.body == body, label
                # The client's connection carried all of it and is still good.
                assert (await conn.request("GET", "/last")).text == "GET /last\n"
            assert await admin_metric(rt, "pillion_upstream_retries_total", cluster="app") == 6
            await assert_settled(rt)

    run(main())


def test_a_body_over_the_buffer_is_not_retried() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config([up.address], routes=retry_route(attempts=2, buffer="1KiB"))
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port

            up.script.append("/status/503")
            r = await http_request(HOST, port, "PUT", "/echo", body=pattern_bytes(4096))
            assert r.status == 503 and len(up.requests) == 1
            assert up.requests[0].body == pattern_bytes(4096)  # the one try got all of it
            refused = "pillion_upstream_retries_refused_total"
            assert await admin_metric(rt, refused, cluster="app", why="body_not_kept") == 1

            # Streamed past the buffer in pieces: the same.
            up.clear()
            up.script.append("/status/503")
            r = await http_request(HOST, port, "PUT", "/echo", body=paced(pattern_bytes(4096), 8))
            assert r.status == 503 and len(up.requests) == 1
            assert await admin_metric(rt, refused, cluster="app", why="body_not_kept") == 2

            # Within the buffer, the PUT (idempotent) is retried.
            up.clear()
            up.script.append("/status/503")
            r = await http_request(HOST, port, "PUT", "/echo", body=pattern_bytes(1000))
            assert r.status == 200 and r.body == pattern_bytes(1000)
            assert len(up.requests) == 2

    run(main())


def test_a_post_is_retried_after_a_connect_failure() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (live,) = await upstreams(stack, "live")
            dead = f"127.0.0.1:{free_port()}"
            cfg = sidecar_config([dead, live.address], routes=retry_route(attempts=1, on=["connect-failure"]))
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            for i in range(4):
                payload = f"order {i}".encode() * 100
                r = await http_request(HOST, port, "POST", "/echo", body=payload)
                assert r.status == 200 and r.body == payload
                assert live.requests[-1].body == payload
            assert len(live.requests) == 4
            failures = await admin_metric(rt, "pillion_upstream_connect_failures_total", endpoint=dead)
            assert failures >= 3  # round robin sends every request but perhaps the first to the dead one
            assert await admin_metric(rt, "pillion_upstream_retries_total", cluster="app") == failures
            await assert_settled(rt)

    run(main())


def test_per_try_timeout_retries_on_the_other_endpoint() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b = await upstreams(stack, "a", "b")
            cfg = sidecar_config(
                [a.address, b.address],
                routes=retry_route(attempts=1, on=["per-try-timeout"], per_try_timeout="200ms"),
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            loop = asyncio.get_running_loop()
            (first,) = await served_by(port, 1)
            nxt, other = (b, a) if first == "a" else (a, b)  # round robin: the next try goes to `nxt`
            nxt.script.append("/delay/1")
            async with await ClientConnection.open(HOST, port) as conn:
                started = loop.time()
                r = await conn.request("GET", "/work")
                took = loop.time() - started
                assert r.status == 200 and r.text == "GET /work\n"
                assert r.header("x-upstream") == other.name
                assert 0.19 <= took < 0.7
                assert [q.path for q in nxt.requests] == ["/work"]
                assert (await conn.request("GET", "/next")).status == 200
            assert await admin_metric(rt, "pillion_upstream_timeouts_total", cluster="app") == 1
            assert await admin_metric(rt, "pillion_upstream_retries_total", cluster="app") == 1

            # Both slow: the retry times out too, and the client gets 504 after two tries.
            a.script.append("/delay/1")
            b.script.append("/delay/1")
            started = loop.time()
            r = await http_request(HOST, port, "GET", "/both-slow")
            assert r.status == 504 and r.header("x-pillion-error") == "upstream_timeout"
            assert 0.38 <= loop.time() - started < 0.9
            await assert_settled(rt)

    run(main())


def test_the_retry_budget_caps_retries_across_requests() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config(
                [up.address],
                routes=retry_route(attempts=3),
                # No share of requests, a floor of 0.2/s over 10 s: two retries in the window.
                cluster={"retry_budget": {"ratio": 0, "min_per_second": 0.2, "ttl": "10s"}},
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            up.override = "/status/503"
            for i in range(3):
                assert (await http_request(HOST, rt.listeners[0].port, "GET", f"/{i}")).status == 503
            assert len(up.requests) == 3 + 2  # the first request's two retries, then none
            assert await admin_metric(rt, "pillion_upstream_retries_total", cluster="app") == 2
            refused = "pillion_upstream_retries_refused_total"
            assert await admin_metric(rt, refused, cluster="app", why="budget") == 3
            await assert_settled(rt)

    run(main())


def test_max_retries_limits_requests_retrying_at_once() -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            (up,) = await upstreams(stack, "up")
            cfg = sidecar_config(
                [up.address],
                routes=[
                    {
                        "match": {"prefix": "/"},
                        "cluster": "app",
                        "retries": {"attempts": 1, "backoff": {"base": "200ms", "max": "200ms"}},
                    }
                ],
                cluster={"circuit_breaker": {"max_retries": 1}},
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            up.override = "/status/503"
            replies = await asyncio.gather(*(http_request(HOST, port, "GET", f"/{i}") for i in range(3)))
            assert [r.status for r in replies] == [503] * 3
            assert len(up.requests) == 3 + 1  # one of them retried; the others found the limit reached
            overflows = "pillion_upstream_overflows_total"
            assert await admin_metric(rt, overflows, cluster="app", limit="retries") == 2
            refused = "pillion_upstream_retries_refused_total"
            assert await admin_metric(rt, refused, cluster="app", why="overflow") == 2
            await assert_settled(rt)

    run(main())


# -- access log flags -----------------------------------------------------------------------------


def test_access_log_response_flags(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            up, small = await upstreams(stack, "up", "small")
            cfg = sidecar_config(
                [up.address],
                routes=[
                    {
                        "match": {"prefix": "/retry"},
                        "cluster": "app",
                        "retries": {"attempts": 1, "on": ["5xx"], "backoff": FAST_BACKOFF},
                    },
                    {
                        "match": {"prefix": "/limited"},
                        "cluster": "app",
                        "rate_limit": {"requests_per_second": 0.1, "burst": 1},
                    },
                    {"match": {"prefix": "/small"}, "cluster": "small"},
                    {"match": {"prefix": "/abort"}, "cluster": "app", "fault": {"abort": {"percent": 100}}},
                    {
                        "match": {"prefix": "/delayed-abort"},
                        "cluster": "app",
                        "fault": {"delay": {"percent": 100, "duration": "10ms"}, "abort": {"percent": 100}},
                    },
                    {
                        "match": {"prefix": "/per-try"},
                        "cluster": "app",
                        "retries": {
                            "attempts": 1,
                            "on": ["per-try-timeout"],
                            "per_try_timeout": "100ms",
                            "backoff": FAST_BACKOFF,
                        },
                    },
                    {"match": {"prefix": "/ok"}, "cluster": "app"},
                ],
                extra_clusters=[
                    {"name": "small", "endpoints": [small.address], "circuit_breaker": {"max_requests": 1}}
                ],
                access_log={"enabled": True, "path": str(log_path)},
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port

            async def get(path: str, **kwargs: Any) -> Response:
                return await http_request(HOST, port, "GET", path, **kwargs)

            assert (await get("/ok")).status == 200
            failing = [("x-pillion-behaviour", "/status/500")]
            assert (await get("/retry/exhausted", headers=failing)).status == 500
            assert (await get("/limited/1")).status == 200
            assert (await get("/limited/2")).status == 429
            slow = asyncio.ensure_future(get("/small/slow", headers=[("x-pillion-behaviour", "/delay/0.3")]))
            await small.wait_for_requests(1)
            assert (await get("/small/overflow")).status == 503
            assert (await slow).status == 200
            assert (await get("/abort")).status == 503
            assert (await get("/delayed-abort")).status == 503
            assert (await get("/per-try", headers=[("x-pillion-behaviour", "/delay/1")])).status == 504
            assert (await get("/nowhere")).status == 404
            assert len(up.requests) == 6  # /ok, two tries of /retry, /limited/1, two tries of /per-try

        # The runtime has shut down, which flushed the log.
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        flags = {line["path"]: (line["status"], line["flags"]) for line in lines}
        assert flags == {
            "/ok": (200, ""),
            "/retry/exhausted": (500, "URX"),
            "/limited/1": (200, ""),
            "/limited/2": (429, "RL"),
            "/small/slow": (200, ""),
            "/small/overflow": (503, "UO"),
            "/abort": (503, "FI"),
            # Flags decided along the way (a delay, retries given up) add to the outcome's own.
            "/delayed-abort": (503, "FI,DI"),
            "/per-try": (504, "UT,URX"),
            "/nowhere": (404, "NR"),
        }
        by_path = {line["path"]: line for line in lines}
        assert by_path["/small/overflow"]["error"] == "overflow"
        assert by_path["/small/overflow"]["cluster"] == "small"
        assert by_path["/retry/exhausted"]["upstream"] == up.address

    run(main())
