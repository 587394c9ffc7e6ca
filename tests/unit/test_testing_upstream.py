"""The test doubles themselves, over real loopback sockets: ScriptableUpstream and the client helpers.

Every test runs on both event loops the proxy's tests may use (asyncio's and uvloop), and checks that no
task spawned by the doubles outlives the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from pillion.testing import (
    BEHAVIOUR_HEADER,
    ClientConnection,
    IncompleteResponseError,
    NoResponseError,
    ScriptableUpstream,
    http_request,
    parse_responses,
    pattern_bytes,
    pattern_chunks,
    pattern_sha256,
    raw_exchange,
    raw_exchange_detailed,
)
from pillion.testing.loops import Run

T = TypeVar("T")
HOST = "127.0.0.1"
MB = 1_000_000


# default, status, delay, health


def test_default_answer_echoes_method_and_target(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream(name="a") as up:
            assert up.address == f"127.0.0.1:{up.port}"
            response = await http_request(HOST, up.port, "GET", "/some/path?q=1")
            assert response.status == 200
            assert response.body == b"GET /some/path?q=1\n"
            assert response.header("content-length") == str(len(response.body))
            assert response.header("x-upstream") == "a"
            [seen] = up.requests
            assert (seen.method, seen.target, seen.path, seen.version) == (
                "GET",
                "/some/path?q=1",
                "/some/path",
                "1.1",
            )
            assert seen.complete and seen.body == b"" and seen.body_length == 0
            assert up.connections_accepted == 1

    run(scenario())


def test_headers_are_recorded_in_order_with_their_case(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            request = (
                b"GET /x HTTP/1.1\r\nHost: h\r\nX-Custom: One\r\nx-custom: two\r\nACCEPT: */*\r\n"
                b"connection: close\r\n\r\n"
            )
            reply = await raw_exchange(HOST, up.port, request)
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            [seen] = up.requests
            assert seen.headers == [
                (b"Host", b"h"),
                (b"X-Custom", b"One"),
                (b"x-custom", b"two"),
                (b"ACCEPT", b"*/*"),
                (b"connection", b"close"),
            ]
            assert seen.header("x-CUSTOM") == "One"
            assert seen.header_values("x-custom") == ["One", "two"]
            assert up.raw == [request]

    run(scenario())


def test_status_path_answers_that_status(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            response = await http_request(HOST, up.port, "GET", "/status/503")
            assert (response.status, response.body) == (503, b"status 503\n")
            no_content = await http_request(HOST, up.port, "GET", "/status/204")
            assert (no_content.status, no_content.body, no_content.header("content-length")) == (
                204,
                b"",
                None,
            )
            bad = await http_request(HOST, up.port, "GET", "/status/abc")
            assert bad.status == 400

    run(scenario())


def test_delay_waits_before_answering(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            started = time.monotonic()
            response = await http_request(HOST, up.port, "GET", "/delay/0.2")
            assert response.status == 200
            assert time.monotonic() - started >= 0.2

    run(scenario())


def test_healthz_follows_the_healthy_flag(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            ok = await http_request(HOST, up.port, "GET", "/healthz")
            assert (ok.status, ok.body) == (200, b"ok\n")
            up.healthy = False
            assert (await http_request(HOST, up.port, "GET", "/healthz")).status == 503

    run(scenario())


# bodies


def test_bytes_and_chunked_send_the_pattern(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            fixed = await http_request(HOST, up.port, "GET", "/bytes/100000")
            assert fixed.header("content-length") == "100000"
            assert fixed.body == pattern_bytes(100_000)
            chunked = await http_request(HOST, up.port, "GET", "/chunked/100000")
            assert chunked.header("transfer-encoding") == "chunked"
            assert chunked.header("content-length") is None
            assert chunked.body == pattern_bytes(100_000)
            empty = await http_request(HOST, up.port, "GET", "/chunked/0")
            assert (empty.status, empty.body) == (200, b"")

    run(scenario())


def test_large_download_is_streamed_intact(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            for path in ("/bytes/", "/chunked/"):
                response = await http_request(HOST, up.port, "GET", f"{path}{50 * MB}", store_body=False)
                assert response.status == 200
                assert response.body_length == 50 * MB
                assert response.body_sha256 == pattern_sha256(50 * MB)

    run(scenario())


def test_echo_returns_the_body_with_matching_framing(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            fixed = await http_request(
                HOST, up.port, "POST", "/echo", body=b"hello", headers={"content-type": "x/y"}
            )
            assert (fixed.body, fixed.header("content-length"), fixed.header("content-type")) == (
                b"hello",
                "5",
                "x/y",
            )
            streamed = await http_request(HOST, up.port, "POST", "/echo", body=[b"a", b"bc", b"def"])
            assert streamed.header("transfer-encoding") == "chunked"
            assert streamed.body == b"abcdef"
            assert up.requests[-1].body == b"abcdef"

    run(scenario())


def test_large_echo_flows_both_ways_at_once(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            response = await http_request(
                HOST, up.port, "PUT", "/echo", body=pattern_chunks(8 * MB), store_body=False, time_limit=30
            )
            assert response.body_length == 8 * MB
            assert response.body_sha256 == pattern_sha256(8 * MB)

    run(scenario())


def test_sha256_consumes_a_large_chunked_upload(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:

            async def upload() -> AsyncIterator[bytes]:
                for chunk in pattern_chunks(20 * MB, chunk_size=50_000):
                    yield chunk

            response = await http_request(HOST, up.port, "POST", "/sha256", body=upload(), time_limit=30)
            assert response.json() == {"length": 20 * MB, "sha256": pattern_sha256(20 * MB)}
            [seen] = up.requests
            assert seen.header("transfer-encoding") == "chunked"
            assert seen.complete
            assert seen.body is None  # over the 1 MiB recording limit
            assert seen.body_length == 20 * MB
            assert seen.body_sha256 == pattern_sha256(20 * MB)
            assert len(up.raw[0]) == 1024 * 1024  # capped

    run(scenario())


def test_chunked_request_body_and_trailers_are_recorded(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            request = (
                b"POST /upload HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n"
            )
            reply = await raw_exchange(HOST, up.port, request)
            [response] = parse_responses(reply)
            assert response.body == b"POST /upload\n"
            [seen] = up.requests
            assert seen.body == b"hello, world"
            assert seen.body_length == 12
            assert seen.body_sha256 == hashlib.sha256(b"hello, world").hexdigest()
            assert seen.trailers == [(b"x-checksum", b"abc")]

    run(scenario())


def test_headers_path_returns_request_headers_as_json(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            response = await http_request(
                HOST, up.port, "GET", "/headers", headers=[("X-A", "1"), ("x-a", "2")]
            )
            payload = response.json()
            assert payload["method"] == "GET" and payload["target"] == "/headers"
            assert payload["headers"] == [["host", f"127.0.0.1:{up.port}"], ["X-A", "1"], ["x-a", "2"]]

    run(scenario())


def test_response_headers_path_sets_headers_from_the_query(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            response = await http_request(HOST, up.port, "GET", "/response-headers?x-one=1&x-two=2&x-one=3")
            assert response.header_values("x-one") == ["1", "3"]
            assert response.header("x-two") == "2"

    run(scenario())


# connection-level behaviours


def test_reset_drops_the_connection_without_a_response(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            exchange = await raw_exchange_detailed(HOST, up.port, b"GET /reset HTTP/1.1\r\nhost: h\r\n\r\n")
            assert exchange.data == b""
            assert exchange.ending == "reset"
            with pytest.raises(NoResponseError):
                await http_request(HOST, up.port, "GET", "/reset")
            assert [seen.path for seen in up.requests] == ["/reset", "/reset"]

    run(scenario())


def test_close_after_head_truncates_the_body(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            with pytest.raises(IncompleteResponseError) as caught:
                await http_request(HOST, up.port, "GET", "/close-after-head")
            partial = caught.value.partial
            assert partial is not None
            assert (partial.status, partial.header("content-length"), partial.body) == (200, "100", b"x" * 10)
            exchange = await raw_exchange_detailed(
                HOST, up.port, b"GET /close-after-head HTTP/1.1\r\nhost: h\r\n\r\n"
            )
            assert exchange.ending == "eof"
            assert exchange.data.endswith(b"\r\n\r\n" + b"x" * 10)

    run(scenario())


def test_close_path_answers_then_closes(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            exchange = await raw_exchange_detailed(HOST, up.port, b"GET /close HTTP/1.1\r\nhost: h\r\n\r\n")
            assert exchange.ending == "eof"
            [response] = parse_responses(exchange.data)
            assert response.header("connection") == "close"

    run(scenario())


def test_pipelined_requests_are_answered_in_order(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            pipeline = (
                b"GET /delay/0.1 HTTP/1.1\r\nhost: h\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nfirst"
                b"POST /echo HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
                b"6\r\nsecond\r\n0\r\n\r\n"
                b"GET /status/404 HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n"
            )
            exchange = await raw_exchange_detailed(HOST, up.port, pipeline)
            assert exchange.ending == "eof"  # closed after the last, not left to time out
            responses = parse_responses(exchange.data)
            assert [(r.status, r.body) for r in responses] == [
                (200, b"GET /delay/0.1\n"),
                (200, b"first"),
                (200, b"second"),
                (404, b"status 404\n"),
            ]
            assert up.connections_accepted == 1
            assert [seen.target for seen in up.requests] == ["/delay/0.1", "/echo", "/echo", "/status/404"]

    run(scenario())


def test_half_closed_client_still_gets_its_answers(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            pipeline = b"GET /a HTTP/1.1\r\nhost: h\r\n\r\nGET /b HTTP/1.1\r\nhost: h\r\n\r\n"
            exchange = await raw_exchange_detailed(HOST, up.port, pipeline, shutdown_write=True)
            assert exchange.ending == "eof"
            assert [r.body for r in parse_responses(exchange.data)] == [b"GET /a\n", b"GET /b\n"]

    run(scenario())


def test_keep_alive_carries_many_requests_on_one_connection(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            async with await ClientConnection.open(HOST, up.port) as conn:
                for index in range(5):
                    response = await conn.request("POST", f"/echo/{index}", body=b"x" * index)
                    assert response.status == 200
                head = await conn.request("HEAD", "/bytes/1000")
                assert (head.status, head.header("content-length"), head.body) == (200, "1000", b"")
                after = await conn.request("GET", "/after-head")
                assert after.body == b"GET /after-head\n"
                assert conn.reusable
            assert up.connections_accepted == 1
            assert {seen.connection for seen in up.requests} == {0}

    run(scenario())


def test_http10_gets_close_delimited_bodies(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            exchange = await raw_exchange_detailed(HOST, up.port, b"GET /chunked/300 HTTP/1.0\r\n\r\n")
            assert exchange.ending == "eof"
            head, _, body = exchange.data.partition(b"\r\n\r\n")
            assert b"transfer-encoding" not in head.lower()
            assert b"connection: close" in head
            assert body == pattern_bytes(300)
            kept = await raw_exchange(
                HOST,
                up.port,
                b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
            )
            first, second = parse_responses(kept)
            assert first.header("connection") == "keep-alive"
            assert second.header("connection") == "close"

    run(scenario())


def test_expect_continue_gets_an_interim_response(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            reader, writer = await asyncio.open_connection(HOST, up.port)
            writer.write(
                b"POST /sha256 HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 3\r\n"
                b"connection: close\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            rest = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            [response] = parse_responses(interim + rest)
            assert response.informational == [100]
            assert response.json()["length"] == 3

    run(scenario())


def test_expect_continue_is_not_sent_once_the_body_is_in(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            response = await http_request(
                HOST, up.port, "POST", "/sha256", headers={"expect": "100-continue"}, body=b"abc"
            )
            # The body normally lands with the head, so no 100 is due; a split segment may still earn one.
            assert response.informational in ([], [100])
            assert response.json()["length"] == 3

    run(scenario())


def test_malformed_request_gets_400_and_close(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            exchange = await raw_exchange_detailed(
                HOST, up.port, b"GET /ok HTTP/1.1\r\nhost: h\r\n\r\nGARBAGE\x01 / HTTP/1.1\r\n\r\n"
            )
            assert exchange.ending == "eof"
            ok, bad = parse_responses(exchange.data)
            assert (ok.status, bad.status) == (200, 400)

    run(scenario())


# scripting


def test_behaviour_header_script_and_override(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            chosen = await http_request(HOST, up.port, "GET", "/x", headers={BEHAVIOUR_HEADER: "/status/418"})
            assert chosen.status == 418
            up.script.extend(["/status/503", "/reset"])
            up.override = "/status/502"
            # Health checks never consume the script or see the override.
            assert (await http_request(HOST, up.port, "GET", "/healthz")).status == 200
            assert (await http_request(HOST, up.port, "GET", "/x")).status == 503
            with pytest.raises(NoResponseError):
                await http_request(HOST, up.port, "GET", "/x")
            assert (await http_request(HOST, up.port, "GET", "/x")).status == 502
            up.override = None
            assert (await http_request(HOST, up.port, "GET", "/x")).status == 200
            assert [seen.behaviour for seen in up.requests] == [
                "/status/418",
                "/healthz",
                "/status/503",
                "/reset",
                "/status/502",
                "/x",
            ]

    run(scenario())


def test_wait_for_requests_and_clear(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream() as up:
            pending = asyncio.ensure_future(up.wait_for_requests(2))
            await http_request(HOST, up.port, "GET", "/one")
            assert not pending.done()
            await http_request(HOST, up.port, "GET", "/two")
            assert [seen.path for seen in await pending] == ["/one", "/two"]
            with pytest.raises(TimeoutError):
                await up.wait_for_requests(3, time_limit=0.05)
            up.clear()
            assert up.requests == [] and up.raw == [b"", b""]

    run(scenario())


# lifecycle


def test_close_ends_idle_and_busy_connections(run: Run) -> None:
    async def scenario() -> None:
        up = await ScriptableUpstream().start()
        idle = await ClientConnection.open(HOST, up.port)
        assert (await idle.request("GET", "/")).status == 200
        busy = asyncio.ensure_future(http_request(HOST, up.port, "GET", "/delay/30"))
        await up.wait_for_requests(2)
        started = time.monotonic()
        await up.close()
        assert time.monotonic() - started < 1.0
        with pytest.raises(NoResponseError):
            await busy
        with pytest.raises(ConnectionError):
            await idle.request("GET", "/")
        await idle.close()
        assert up.connections_open == 0

    run(scenario())


def test_restart_reuses_the_port(run: Run) -> None:
    async def scenario() -> None:
        up = ScriptableUpstream()
        async with up:
            port = up.port
            assert (await http_request(HOST, port, "GET", "/")).status == 200
        with pytest.raises(OSError):
            await http_request(HOST, port, "GET", "/")
        async with up:
            assert up.port == port
            assert (await http_request(HOST, port, "GET", "/")).status == 200

    run(scenario())


def test_idle_timeout_closes_quiet_keep_alive_connections(run: Run) -> None:
    async def scenario() -> None:
        async with ScriptableUpstream(idle_timeout=0.1) as up:
            async with await ClientConnection.open(HOST, up.port) as conn:
                assert (await conn.request("GET", "/delay/0.2")).status == 200  # busy is not idle
                assert (await conn.request("GET", "/")).status == 200
                await asyncio.sleep(0.3)
                with pytest.raises(NoResponseError):
                    await conn.request("GET", "/")
            assert up.connections_open == 0

    run(scenario())
