"""Strict request handling beyond the corpus: what is forwarded, in which form, and what each limit
and timeout does to the connection. Real sockets, a real recording upstream."""

from __future__ import annotations

import asyncio

import pytest

from pillion.runtime.runtime import Runtime
from pillion.testing.http import parse_responses, raw_exchange_detailed
from pillion.testing.loops import Run
from pillion.testing.metrics import metric
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


def test_trailer_fields_are_dropped_and_never_reach_the_next_request(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up, running_sidecar(sidecar_config([up.address])) as rt:
            data = (
                b"POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nHost: evil\r\n\r\n"
                b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            result = await raw_exchange_detailed(HOST, rt.listeners[0].port, data)
            assert [r.status for r in parse_responses(result.data)] == [200, 200]
            first, second = up.requests
            assert first.body == b"abc" and first.trailers == []
            assert second.header("x-trailer") is None
            assert second.header_values("host") == ["a"]

    run(main())


def test_absolute_form_is_routed_and_forwarded_by_its_authority(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up, ScriptableUpstream() as other:
            routes = [
                {"match": {"host": "b.example"}, "cluster": "b"},
                {"match": {"prefix": "/"}, "cluster": "app"},
            ]
            b = {"name": "b", "endpoints": [other.address]}
            cfg = sidecar_config([up.address], routes=routes, extra_clusters=[b])
            async with running_sidecar(cfg) as rt:
                data = b"GET http://b.example/x?y=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"
                result = await raw_exchange_detailed(HOST, rt.listeners[0].port, data)
                assert parse_responses(result.data)[0].status == 200
                assert up.requests == []
                (seen,) = other.requests
                assert seen.target == "/x?y=1"
                assert seen.header_values("host") == ["b.example"]
                bad = b"GET http://user@b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"
                refused = parse_responses((await raw_exchange_detailed(HOST, rt.listeners[0].port, bad)).data)
                assert refused[0].status == 400 and refused[0].header("x-pillion-error") == "invalid_uri"

    run(main())


def test_an_invalid_host_is_refused_every_time_whatever_came_before(run: Run) -> None:
    """Host values are checked once and remembered (the last one, and a set): a refused value must
    never be remembered as checked, so the same bad Host is refused again, right after a good one or
    after itself; and an empty one is checked on a fresh listener too (a fuzzer's find)."""

    async def main() -> None:
        async with ScriptableUpstream() as up, running_sidecar(sidecar_config([up.address])) as rt:
            port = rt.listeners[0].port
            statuses: list[tuple[int, str | None]] = []
            for host in (b"", b"good.example", b"bad host", b"bad host", b"good.example", b"a b"):
                data = b"GET / HTTP/1.1\r\nHost: %b\r\nConnection: close\r\n\r\n" % host
                (response,) = parse_responses((await raw_exchange_detailed(HOST, port, data)).data)
                statuses.append((response.status, response.header("x-pillion-error")))
            refused = (400, "invalid_host")
            assert statuses == [refused, (200, None), refused, refused, (200, None), refused]
            assert [r.header_values("host") for r in up.requests] == [["good.example"]] * 2

    run(main())


def test_a_good_request_is_answered_before_a_broken_one_behind_it(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up, running_sidecar(sidecar_config([up.address])) as rt:
            data = (
                b"POST /good HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
                b"POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX"
                b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            result = await raw_exchange_detailed(HOST, rt.listeners[0].port, data)
            responses = parse_responses(result.data)
            assert [r.status for r in responses] == [200, 400]
            assert responses[1].header("x-pillion-error") == "invalid_chunk"
            assert result.ending in ("eof", "reset")
            assert [r.target for r in up.requests] == ["/good"]
            assert b"/bad" not in b"".join(up.raw) and b"smuggled" not in b"".join(up.raw)

    run(main())


def _body_limit_config() -> tuple[list[dict[str, object]], dict[str, str]]:
    routes: list[dict[str, object]] = [
        {"match": {"prefix": "/small"}, "cluster": "app", "max_request_body_size": "10B"},
        {"match": {"prefix": "/big"}, "cluster": "app", "max_request_body_size": "1MiB"},
        {"match": {"prefix": "/"}, "cluster": "app"},
    ]
    return routes, {"max_request_body_size": "100B"}


def test_a_route_sets_its_own_body_limit(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            routes, limits = _body_limit_config()
            async with running_sidecar(sidecar_config([up.address], routes=routes, limits=limits)) as rt:
                port = rt.listeners[0].port

                async def post(path: str, body: bytes, *, chunked: bool = False) -> tuple[int, str | None]:
                    head = f"POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                    if chunked:
                        head += "Transfer-Encoding: chunked\r\n\r\n"
                        payload = head.encode() + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
                    else:
                        payload = head.encode() + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
                    result = await raw_exchange_detailed(HOST, port, payload, read_timeout=3.0)
                    r = parse_responses(result.data)[0]
                    return r.status, r.header("x-pillion-error")

                too_large = (413, "request_body_too_large")
                assert await post("/small", b"x" * 10) == (200, None)
                assert await post("/small", b"x" * 11) == too_large
                assert await post("/small", b"x" * 11, chunked=True) == too_large
                assert await post("/other", b"x" * 101) == too_large  # the listener's limit
                assert await post("/big", b"x" * 5000) == (200, None)  # the route's, over the listener's
                assert await post("/big", b"x" * 5000, chunked=True) == (200, None)
                assert [r.body_length for r in up.requests] == [10, 5000, 5000]

    run(main())


def test_request_timeout_answers_408_and_counts_it(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg = sidecar_config([up.address], limits={"request_timeout": "1s"})
            async with running_sidecar(cfg) as rt:
                data = b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"  # 7 bytes short
                result = await raw_exchange_detailed(HOST, rt.listeners[0].port, data, read_timeout=4.0)
                (r,) = parse_responses(result.data)
                assert r.status == 408 and r.header("x-pillion-error") == "request_timeout"
                assert result.ending in ("eof", "reset")
                assert _timeouts(rt, "request") == 1

    run(main())


@pytest.mark.parametrize(
    "sent",
    [b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r\n\r\n", b"G", b""],
    ids=["header-bytes", "empty-lines", "partial-method", "nothing"],
)
def test_a_slow_head_is_closed_and_counted(sent: bytes, run: Run) -> None:
    """The head timer runs from accept and from any byte sent between requests, not from the request
    target: empty lines, a lone first byte of a method, or nothing at all are closed in time too."""

    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg = sidecar_config([up.address], limits={"request_headers_timeout": "500ms"})
            async with running_sidecar(cfg) as rt:
                loop = asyncio.get_running_loop()
                started = loop.time()
                result = await raw_exchange_detailed(HOST, rt.listeners[0].port, sent, read_timeout=4.0)
                assert result.data == b"" and result.ending in ("eof", "reset")
                assert loop.time() - started < 2.5  # 500 ms, plus at most one once-a-second sweep
                assert _timeouts(rt, "request_headers") == 1
                assert up.requests == []

    run(main())


def _timeouts(rt: Runtime, kind: str) -> float:
    return metric(rt, "pillion_downstream_timeouts_total", listener="inbound", timeout=kind)
