"""Route actions and per-route policies on real loopback sockets: direct responses, redirects, rewrites,
header edits, the no-route reply, local rate limiting and fault injection.

Each test runs a real Runtime in front of a real scriptable upstream under uvloop, and asserts on what
the client got, what the upstream received (or that it received nothing), and what the admin server's
`/metrics` counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import uvloop

from pillion.runtime.runtime import Runtime
from pillion.testing.http import ClientConnection, Response, http_request, parse_responses
from pillion.testing.metrics import admin_metric
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
Scenario = Callable[[ScriptableUpstream, Runtime, int], Awaitable[None]]
CATCH_ALL: dict[str, Any] = {"match": {"prefix": "/"}, "cluster": "app"}


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def with_routes(routes: Sequence[dict[str, Any]], scenario: Scenario) -> None:
    """An upstream, and a sidecar in front of it with these routes; then the scenario."""

    async def main() -> None:
        async with (
            ScriptableUpstream(name="up") as up,
            running_sidecar(sidecar_config([up.address], routes=routes)) as rt,
        ):
            await scenario(up, rt, rt.listeners[0].port)

    run(main())


def seen_headers(r: Response) -> list[tuple[str, str]]:
    """The request headers the upstream's `/headers` behaviour saw, names lower-cased."""
    return [(k.lower(), v) for k, v in r.json()["headers"]]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


async def from_address(source: str, port: int, request: bytes) -> Response:
    """One request (ending in `Connection: close`) from a chosen loopback source address."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
    (response,) = parse_responses(data)
    return response


# -- direct responses -----------------------------------------------------------------------------


def test_direct_response_is_answered_locally_and_keeps_the_connection() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": "/maintenance"},
            "direct_response": {
                "status": 503,
                "body": "<h1>back soon</h1>\n",
                "content_type": "text/html; charset=utf-8",
            },
        },
        {"match": {"path": "/ping"}, "direct_response": {"status": 200, "body": "pong\n"}},
        {"match": {"path": "/empty"}, "direct_response": {"status": 204}},
        CATCH_ALL,
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            r = await conn.request("GET", "/maintenance")
            assert r.status == 503 and r.body == b"<h1>back soon</h1>\n"
            assert r.header("content-type") == "text/html; charset=utf-8"
            assert r.header("content-length") == str(len(r.body))
            assert r.header("x-pillion-error") is None  # configured, not an error of the sidecar
            assert r.header("connection") != "close"

            r = await conn.request("GET", "/ping?x=1")
            assert (r.status, r.body) == (200, b"pong\n")
            assert r.header("content-type") == "text/plain; charset=utf-8"

            head = await conn.request("HEAD", "/ping")
            assert head.status == 200 and head.body == b"" and head.header("content-length") == "5"

            r = await conn.request("GET", "/empty")
            assert r.status == 204 and r.body == b""

            # The same connection still reaches the upstream.
            r = await conn.request("GET", "/after")
            assert r.status == 200 and r.text == "GET /after\n"
            assert conn.reusable
        assert [req.path for req in up.requests] == ["/after"]
        assert await admin_metric(rt, "pillion_http_requests_total", route="route0", code="503") == 1
        assert await admin_metric(rt, "pillion_local_replies_total") == 0

    with_routes(routes, scenario)


def test_direct_response_to_a_request_with_a_body() -> None:
    routes: list[dict[str, Any]] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 403, "body": "no\n"}}
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        r = await http_request(HOST, port, "POST", "/upload", body=b"x" * 10_000)
        assert (r.status, r.body) == (403, b"no\n")
        assert up.requests == []

    with_routes(routes, scenario)


# -- redirects ------------------------------------------------------------------------------------


def test_redirects_build_the_exact_location() -> None:
    routes: list[dict[str, Any]] = [
        {"match": {"path": "/old"}, "redirect": {"path": "/new"}},
        {"match": {"prefix": "/v1/"}, "redirect": {"prefix": "/v2/", "status": 301}},
        {
            "match": {"prefix": "/secure/"},
            "redirect": {"scheme": "https", "host": "example.com:8443", "strip_query": True, "status": 308},
        },
        {"match": {"prefix": "/moved/"}, "redirect": {"host": "new.example.com", "status": 307}},
        {"match": {"prefix": "/tls/"}, "redirect": {"scheme": "https"}},
        {"match": {"prefix": "/bare"}, "redirect": {"strip_query": True, "path": "/", "status": 303}},
        CATCH_ALL,
    ]
    cases = [
        ("/old", 302, "/new"),
        ("/old?a=1&b=2", 302, "/new?a=1&b=2"),
        ("/v1/users/7?fields=name", 301, "/v2/users/7?fields=name"),
        ("/v1/", 301, "/v2/"),
        ("/secure/login?next=%2Fhome", 308, "https://example.com:8443/secure/login"),
        ("/moved/a/b?q=1", 307, "http://new.example.com/moved/a/b?q=1"),
        ("/tls/page?x", 302, "https://shop.test:8080/tls/page?x"),
        ("/bare?drop=me", 303, "/"),
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            for target, status, location in cases:
                r = await conn.request("GET", target, headers=[("host", "shop.test:8080")])
                assert (r.status, r.header_values("location")) == (status, [location]), target
                assert r.body == b"" and r.header("content-length") == "0"
                assert r.header("x-pillion-error") is None
            r = await conn.request("GET", "/older")  # neither the exact path nor a redirect prefix
            assert r.status == 200 and r.header("location") is None
        assert [req.path for req in up.requests] == ["/older"]

    with_routes(routes, scenario)


# -- rewrites and header edits --------------------------------------------------------------------


def test_prefix_and_host_rewrite_reach_the_upstream() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/api/"},
            "cluster": "app",
            "prefix_rewrite": "/",
            "host_rewrite": "backend.internal:9000",
        },
        {"match": {"prefix": "/legacy"}, "cluster": "app", "prefix_rewrite": "/v2"},
        CATCH_ALL,
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        r = await http_request(HOST, port, "GET", "/api/headers?x=1", headers=[("host", "front.test")])
        assert r.status == 200
        seen = r.json()
        assert seen["target"] == "/headers?x=1"
        assert values(seen_headers(r), "host") == ["backend.internal:9000"]

        r = await http_request(HOST, port, "GET", "/legacy/items/3?sort=asc", headers=[("host", "f.test")])
        assert r.text == "GET /v2/items/3?sort=asc\n"
        assert up.requests[-1].header_values("host") == ["f.test"]

        # A request without a Host header (HTTP/1.0) gets the rewritten one, once.
        data = await raw(port, b"GET /api/headers HTTP/1.0\r\n\r\n")
        (response,) = parse_responses(data)
        assert response.json()["target"] == "/headers"
        assert values(seen_headers(response), "host") == ["backend.internal:9000"]

        r = await http_request(HOST, port, "GET", "/other")
        assert r.text == "GET /other\n"

    with_routes(routes, scenario)


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def test_request_headers_are_added_replaced_appended_and_removed() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/"},
            "cluster": "app",
            "request_headers_add": [
                {"name": "x-added", "value": "a"},
                {"name": "X-Replaced", "value": "new"},
                {"name": "x-appended", "value": "two", "replace": False},
            ],
            "request_headers_remove": ["X-Secret", "x-also-gone"],
        }
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        r = await http_request(
            HOST,
            port,
            "GET",
            "/headers",
            headers=[
                ("x-replaced", "old"),
                ("x-replaced", "older"),
                ("x-appended", "one"),
                ("x-secret", "s3cr3t"),
                ("X-ALSO-GONE", "1"),
                ("x-kept", "k"),
            ],
        )
        seen = seen_headers(r)
        assert values(seen, "x-added") == ["a"]
        assert values(seen, "x-replaced") == ["new"]
        assert values(seen, "x-appended") == ["one", "two"]
        assert values(seen, "x-secret") == [] and values(seen, "x-also-gone") == []
        assert values(seen, "x-kept") == ["k"]
        # Pillion's own fields are still there, once each.
        assert len(values(seen, "x-request-id")) == 1
        assert values(seen, "x-forwarded-for") == ["127.0.0.1"]
        assert len(values(seen, "host")) == 1

        # The same edits apply to a request with a body, which still arrives whole.
        r = await http_request(HOST, port, "POST", "/echo", headers=[("x-secret", "s")], body=b"payload")
        assert r.body == b"payload"
        last = up.requests[-1]
        assert last.header("x-secret") is None and last.header("x-added") == "a"

    with_routes(routes, scenario)


def test_response_headers_are_added_and_removed() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/"},
            "cluster": "app",
            "response_headers_add": [
                {"name": "x-frame-options", "value": "DENY"},
                {"name": "x-version", "value": "2"},
                {"name": "x-multi", "value": "proxy", "replace": False},
            ],
            "response_headers_remove": ["server", "X-Internal"],
        }
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            r = await conn.request(
                "GET", "/response-headers?server=app%2F1.0&x-internal=1&x-version=1&x-multi=app&x-kept=k"
            )
            assert r.status == 200 and r.body == b"ok\n"
            assert r.header_values("x-frame-options") == ["DENY"]
            assert r.header_values("x-version") == ["2"]
            assert r.header_values("x-multi") == ["app", "proxy"]
            assert r.header("server") is None and r.header("x-internal") is None
            assert r.header_values("x-kept") == ["k"]
            assert r.header("x-upstream") == "up"
            # A chunked response keeps its framing, and the connection stays usable.
            r = await conn.request("GET", "/chunked/1000")
            assert r.status == 200 and len(r.body) == 1000
            assert r.header_values("x-frame-options") == ["DENY"]
            assert (await conn.request("GET", "/again")).status == 200

    with_routes(routes, scenario)


def test_no_route_is_404_and_keeps_the_connection() -> None:
    routes: list[dict[str, Any]] = [{"match": {"prefix": "/api/"}, "cluster": "app"}]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            r = await conn.request("GET", "/elsewhere")
            assert r.status == 404 and r.header("x-pillion-error") == "no_route"
            assert "no_route" in r.text
            r = await conn.request("GET", "/api/x")
            assert r.status == 200 and r.text == "GET /api/x\n"
        # Pipelined: local replies and proxied ones, answered in order on the one connection.
        data = await raw(
            port,
            b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /api/delay/0.1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /api/last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        replies = parse_responses(data)
        assert [r.status for r in replies] == [404, 200, 404, 200]
        assert [r.header("connection") for r in replies] == ["keep-alive", None, "keep-alive", "close"]
        assert replies[3].text == "GET /api/last\n"
        assert [req.path for req in up.requests] == ["/api/x", "/api/delay/0.1", "/api/last"]
        assert await admin_metric(rt, "pillion_local_replies_total", reason="no_route") == 3

    with_routes(routes, scenario)


# -- rate limiting --------------------------------------------------------------------------------


def test_rate_limit_per_route_allows_the_burst_then_429() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/limited"},
            "cluster": "app",
            "name": "limited",
            "rate_limit": {"requests_per_second": 0.5, "burst": 3},
        },
        {**CATCH_ALL, "name": "free"},
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            statuses = [(await conn.request("GET", f"/limited/{i}")).status for i in range(3)]
            assert statuses == [200, 200, 200]
            for i in range(3):
                r = await conn.request("GET", f"/limited/over/{i}")
                assert r.status == 429
                assert r.header("x-pillion-error") == "rate_limited"
                # One token takes 2 s at 0.5/s; refused requests take none, so the wait does not grow.
                assert r.header("retry-after") == "2"
            # Another route is not limited, and the connection survived the 429s.
            assert (await conn.request("GET", "/free")).status == 200
        # A fresh connection shares the route's bucket.
        assert (await http_request(HOST, port, "GET", "/limited/new")).status == 429
        assert len([q for q in up.requests if q.path.startswith("/limited")]) == 3
        assert await admin_metric(rt, "pillion_rate_limited_total", listener="inbound", route="limited") == 4
        assert await admin_metric(rt, "pillion_rate_limited_total", route="free") == 0
        assert await admin_metric(rt, "pillion_local_replies_total", reason="rate_limited") == 4
        assert await admin_metric(rt, "pillion_http_requests_total", route="limited", code="429") == 4

    with_routes(routes, scenario)


def test_rate_limit_per_header_value() -> None:
    routes: list[dict[str, Any]] = [
        {
            **CATCH_ALL,
            "rate_limit": {"requests_per_second": 0.1, "burst": 2, "key": "header", "header": "X-Api-Key"},
        }
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async def status(key: str | None) -> int:
            headers = [("x-api-key", key)] if key is not None else []
            return (await http_request(HOST, port, "GET", "/", headers=headers)).status

        assert [await status("alice") for _ in range(3)] == [200, 200, 429]
        assert [await status("bob") for _ in range(3)] == [200, 200, 429]
        # Requests without the header share one bucket of their own.
        assert [await status(None) for _ in range(3)] == [200, 200, 429]
        assert await status("alice") == 429
        assert await admin_metric(rt, "pillion_rate_limited_total") == 4
        assert len(up.requests) == 6

    with_routes(routes, scenario)


def test_rate_limit_per_client_address() -> None:
    routes: list[dict[str, Any]] = [
        {**CATCH_ALL, "rate_limit": {"requests_per_second": 0.1, "burst": 2, "key": "client_address"}}
    ]
    request = b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        # Linux routes all of 127/8 to loopback, so each address is a distinct client.
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            statuses = [(await from_address(source, port, request)).status for _ in range(3)]
            assert statuses == [200, 200, 429], source
        refused = await from_address("127.0.0.2", port, request)
        assert refused.header("x-pillion-error") == "rate_limited" and refused.header("retry-after")
        assert sorted({q.header("x-forwarded-for") or "" for q in up.requests}) == [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
        ]
        assert len(up.requests) == 6
        assert await admin_metric(rt, "pillion_rate_limited_total", route="route0") == 4

    with_routes(routes, scenario)


def test_rate_limit_refills() -> None:
    # 2/s: the second request must come within the 0.5 s refill to be refused, which holds on a loaded
    # machine too (at 10/s, 0.1 s, a slow scheduling round once let it through).
    routes: list[dict[str, Any]] = [{**CATCH_ALL, "rate_limit": {"requests_per_second": 2, "burst": 1}}]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            assert (await conn.request("GET", "/1")).status == 200
            over = await conn.request("GET", "/2")
            assert over.status == 429 and over.header("retry-after") == "1"  # 0.5 s, rounded up
            await asyncio.sleep(0.6)
            assert (await conn.request("GET", "/3")).status == 200

    with_routes(routes, scenario)


# -- fault injection ------------------------------------------------------------------------------


def test_fault_abort_answers_every_request_with_the_status() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/teapot"},
            "cluster": "app",
            "name": "teapot",
            "fault": {"abort": {"percent": 100, "status": 418}},
        },
        {**CATCH_ALL, "name": "rest"},
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        async with await ClientConnection.open(HOST, port) as conn:
            for _ in range(5):
                r = await conn.request("GET", "/teapot")
                assert r.status == 418
                assert r.header("x-pillion-error") == "fault_injected"
            assert (await conn.request("GET", "/fine")).status == 200
        assert [q.path for q in up.requests] == ["/fine"]
        assert await admin_metric(rt, "pillion_fault_aborts_total", listener="inbound", route="teapot") == 5
        assert await admin_metric(rt, "pillion_fault_delays_total") == 0
        assert await admin_metric(rt, "pillion_http_requests_total", route="teapot", code="418") == 5

    with_routes(routes, scenario)


def test_fault_delay_holds_requests_for_the_duration() -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/slow"},
            "cluster": "app",
            "name": "slow",
            "fault": {"delay": {"percent": 100, "duration": "400ms"}},
        },
        {
            "match": {"prefix": "/both"},
            "cluster": "app",
            "name": "both",
            "fault": {"delay": {"percent": 100, "duration": "400ms"}, "abort": {"percent": 100}},
        },
        {**CATCH_ALL, "name": "fast"},
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        loop = asyncio.get_running_loop()
        async with await ClientConnection.open(HOST, port) as conn:
            started = loop.time()
            r = await conn.request(
                "POST", "/slow", headers=[("x-pillion-behaviour", "/echo")], body=b"held body"
            )
            took = loop.time() - started
            assert r.status == 200 and r.body == b"held body"
            assert 0.38 <= took < 1.5
            # The upstream saw nothing until the delay was over.
            assert up.requests[-1].received_at - started >= 0.38

            started = loop.time()
            r = await conn.request("GET", "/fast")
            assert r.status == 200 and loop.time() - started < 0.3  # not held: under one delay

            started = loop.time()
            r = await conn.request("GET", "/both")
            took = loop.time() - started
            assert r.status == 503 and r.header("x-pillion-error") == "fault_injected"
            assert 0.38 <= took < 1.5
            assert (await conn.request("GET", "/after")).status == 200

        # Concurrent delayed requests are held side by side, not one after another.
        started = loop.time()
        replies = await asyncio.gather(*(http_request(HOST, port, "GET", f"/slow/{i}") for i in range(5)))
        assert [r.status for r in replies] == [200] * 5
        assert 0.38 <= loop.time() - started < 1.2  # one after another would be 2 s
        assert await admin_metric(rt, "pillion_fault_delays_total", route="slow") == 6
        assert await admin_metric(rt, "pillion_fault_delays_total", route="both") == 1
        assert await admin_metric(rt, "pillion_fault_aborts_total", route="both") == 1
        assert "/both" not in [q.path for q in up.requests]

    with_routes(routes, scenario)


def test_fault_percent_zero_never_fires() -> None:
    routes: list[dict[str, Any]] = [
        {
            **CATCH_ALL,
            "fault": {"delay": {"percent": 0, "duration": "1s"}, "abort": {"percent": 0, "status": 500}},
        }
    ]

    async def scenario(up: ScriptableUpstream, rt: Runtime, port: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with await ClientConnection.open(HOST, port) as conn:
            for i in range(50):
                assert (await conn.request("GET", f"/{i}")).status == 200
        assert loop.time() - started < 1.0
        assert len(up.requests) == 50
        assert await admin_metric(rt, "pillion_fault_delays_total") == 0
        assert await admin_metric(rt, "pillion_fault_aborts_total") == 0

    with_routes(routes, scenario)
