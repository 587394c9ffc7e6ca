"""The admin server over real sockets: every endpoint, methods, errors, keep-alive and bad input."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop

from pillion.admin import AdminServer, AdminTarget, start_admin
from pillion.admin import handlers as admin_handlers
from pillion.admin import server as admin_server
from pillion.admin.handlers import Request, dispatch, header_safe, is_loopback
from pillion.telemetry.prometheus import CONTENT_TYPE
from pillion.testing.loops import LOOPS

HOST = "127.0.0.1"


class FakeRuntime:
    """A plain object implementing AdminTarget, standing in for the Runtime."""

    def __init__(self) -> None:
        self.service = "checkout"
        self.metrics_enabled = True
        self.ready: tuple[bool, str] = (True, "ready")
        self.ready_delay = 0.0
        self.drained = 0
        self.quitted = 0
        self.fail_config = False

    def is_live(self) -> bool:
        return True

    async def readiness(self) -> tuple[bool, str]:
        if self.ready_delay:
            await asyncio.sleep(self.ready_delay)
        return self.ready

    def metrics_text(self) -> str:
        return "# HELP pillion_up Up.\n# TYPE pillion_up gauge\npillion_up 1\n"

    async def metrics_text_merged(self) -> str:
        return self.metrics_text()

    def config_dump(self) -> dict[str, Any]:
        if self.fail_config:
            raise RuntimeError("broken")
        return {"service": self.service, "listeners": [{"name": "inbound", "port": 15006}]}

    def clusters_view(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "backend",
                "balancer": "round_robin",
                "endpoints": [
                    {
                        "address": "10.0.0.1:8080",
                        "state": "healthy",
                        "active_requests": 2,
                        "pooled_connections": 1,
                    }
                ],
            }
        ]

    def drain(self) -> None:
        self.drained += 1

    def quit(self) -> None:
        self.quitted += 1


class FakeRuntimeWithListeners(FakeRuntime):
    def listeners_view(self) -> list[dict[str, Any]]:
        return [{"name": "inbound", "address": "0.0.0.0:15006"}]

    def certs_view(self) -> dict[str, Any]:
        return {"identity": None, "listeners": {}, "clusters": {}}


Reply = tuple[int, dict[str, str], bytes]
_loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop


@pytest.fixture(autouse=True, params=LOOPS)
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on both loops (LOOPS): uvloop in production, asyncio's own as the reference."""
    global _loop_factory  # noqa: PLW0603 -- read by serve(); a fixture is the simplest switch
    _loop_factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    yield request.param
    _loop_factory = asyncio.new_event_loop


def serve(
    body: Callable[[AdminServer, FakeRuntime], Awaitable[None]], target: FakeRuntime | None = None
) -> FakeRuntime:
    """Start an admin server on a free port, run `body` against it, close it. Returns the target."""
    runtime = target if target is not None else FakeRuntime()

    async def main() -> None:
        checked: AdminTarget = runtime  # the test double must satisfy the Protocol, statically
        server = await start_admin(checked, HOST, 0)
        try:
            await body(server, runtime)
        finally:
            await server.close()

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        runner.run(main())
    return runtime


def _request(port: int, method: str, path: str) -> Reply:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def request(server: AdminServer, method: str, path: str) -> Reply:
    return await asyncio.to_thread(_request, server.port, method, path)


async def raw(server: AdminServer, data: bytes) -> bytes:
    """Send bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()


def _statuses(reply: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", reply)


def _common_headers(headers: dict[str, str], body: bytes) -> None:
    assert headers["content-length"] == str(len(body))
    assert headers["cache-control"] == "no-cache"


def test_ready_and_live() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, headers, data = await request(server, "GET", "/ready")
        assert (status, data) == (200, b"ready\n")
        _common_headers(headers, data)
        assert headers["content-type"].startswith("text/plain")
        rt.ready = (False, "listener inbound not bound")
        status, headers, data = await request(server, "GET", "/ready")
        assert (status, data) == (503, b"listener inbound not bound\n")
        assert headers["x-pillion-error"] == "listener inbound not bound"
        assert (await request(server, "GET", "/live"))[::2] == (200, b"live\n")

    serve(body)


def test_readiness_that_hangs_gets_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_handlers, "READINESS_TIMEOUT", 0.05)
    rt = FakeRuntime()
    rt.ready_delay = 5.0

    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, headers, data = await request(server, "GET", "/ready")
        assert status == 503 and b"timed out" in data
        assert "timed out" in headers["x-pillion-error"]

    serve(body, rt)


def test_metrics_config_dump_clusters() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, headers, data = await request(server, "GET", "/metrics")
        assert status == 200 and headers["content-type"] == CONTENT_TYPE
        assert data == rt.metrics_text().encode()
        _common_headers(headers, data)

        status, headers, data = await request(server, "GET", "/config_dump")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(data) == rt.config_dump()
        _common_headers(headers, data)

        status, headers, data = await request(server, "GET", "/clusters")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(data) == {"clusters": rt.clusters_view()}

        status, headers, data = await request(server, "GET", "/clusters?format=text")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert data.decode().splitlines() == [
            "backend::balancer::round_robin",
            "backend::10.0.0.1:8080::state::healthy",
            "backend::10.0.0.1:8080::active_requests::2",
            "backend::10.0.0.1:8080::pooled_connections::1",
        ]

    serve(body)


def test_listeners_only_when_the_target_has_them() -> None:
    async def without(server: AdminServer, rt: FakeRuntime) -> None:
        assert (await request(server, "GET", "/listeners"))[0] == 404
        assert b"/listeners" not in (await request(server, "GET", "/"))[2]

    async def with_them(server: AdminServer, rt: FakeRuntime) -> None:
        status, _, data = await request(server, "GET", "/listeners")
        assert status == 200 and json.loads(data)["listeners"][0]["name"] == "inbound"

    serve(without)
    serve(with_them, FakeRuntimeWithListeners())


def test_index() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, headers, data = await request(server, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        for path in ("/ready", "/live", "/metrics", "/config_dump", "/clusters", "/drain", "/quitquitquit"):
            assert path.encode() in data

    serve(body)


def test_drain_and_quit() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, _, data = await request(server, "POST", "/drain")
        assert status == 200 and rt.drained == 1
        status, _, data = await request(server, "POST", "/quitquitquit")
        assert (status, data) == (200, b"OK\n") and rt.quitted == 1

    serve(body)


def test_quitquitquit_refused_from_non_loopback() -> None:
    rt = FakeRuntime()
    response = asyncio.run(dispatch(rt, Request("POST", "/quitquitquit", client="10.1.2.3")))
    assert response.status == 403 and response.after is None
    assert rt.quitted == 0
    response = asyncio.run(dispatch(rt, Request("POST", "/quitquitquit", client="127.0.0.1")))
    assert response.status == 200 and response.after is not None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("0.0.0.0", False),
        ("", False),
        ("localhost", False),  # names are not addresses; peers are always addresses
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_header_safe() -> None:
    assert header_safe("a\r\nb\x00c é") == "a  b?c ?"
    assert len(header_safe("x" * 1000)) == 256


def test_wrong_method_and_unknown_path() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        status, headers, _ = await request(server, "POST", "/ready")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, _ = await request(server, "GET", "/drain")
        assert status == 405 and headers["allow"] == "POST"
        assert rt.drained == 0
        status, headers, data = await request(server, "GET", "/nope")
        assert status == 404
        _common_headers(headers, data)
        assert (await request(server, "GET", "/ready/"))[0] == 404

    serve(body)


def test_head_is_get_without_body() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reply = await raw(server, b"HEAD /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 6\r\n" in head + b"\r\n"
        assert rest == b""

    serve(body)


def test_malformed_request_gets_400_and_close() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        for garbage in (
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"\x00\x01\x02\xff\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ):
            reply = await raw(server, garbage)
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), garbage
            assert b"connection: close" in reply
        # The server is still fine afterwards.
        assert (await request(server, "GET", "/live"))[0] == 200

    serve(body)


def test_limits() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reply = await raw(server, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 414 ")
        headers = b"".join(b"x-h%d: v\r\n" % i for i in range(200))
        reply = await raw(server, b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 431 ")
        reply = await raw(server, b"POST /drain HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert rt.drained == 0

    serve(body)


def test_upgrade_is_answered_then_closed() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        upgrade = b"GET /live HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
        reply = await raw(server, upgrade)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in reply

    serve(body)


def test_keep_alive_two_requests_on_one_connection() -> None:
    def two_requests(port: int) -> tuple[Reply, Reply]:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            replies = []
            for path in ("/live", "/ready"):
                conn.request("GET", path)
                resp = conn.getresponse()
                replies.append((resp.status, dict(resp.getheaders()), resp.read()))
                assert conn.sock is not None  # http.client keeps the socket: the server did not close
            return replies[0], replies[1]
        finally:
            conn.close()

    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        first, second = await asyncio.to_thread(two_requests, server.port)
        assert (first[0], first[2]) == (200, b"live\n")
        assert (second[0], second[2]) == (200, b"ready\n")

    serve(body)


def test_pipelined_requests_answered_in_order() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reply = await raw(
            server,
            b"GET /ready HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
            b"GET /live HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
        )
        statuses = _statuses(reply)
        assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
        assert reply.endswith(b"live\n")

    serve(body)


def test_valid_request_then_garbage() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reply = await raw(server, b"GET /live HTTP/1.1\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        statuses = _statuses(reply)
        assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"]

    serve(body)


def test_http10_closes() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reply = await raw(server, b"GET /live HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in reply

    serve(body)


def test_handler_error_is_500_and_connection_survives() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        rt.fail_config = True
        reply = await raw(
            server, b"GET /config_dump HTTP/1.1\r\n\r\nGET /live HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        statuses = _statuses(reply)
        assert statuses == [b"HTTP/1.1 500 Internal Server Error", b"HTTP/1.1 200 OK"]

    serve(body)


def test_close_ends_idle_keep_alive_connections() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"GET /live HTTP/1.1\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"live\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    serve(body)


def test_server_exposes_sockets_and_port() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        assert server.port > 0
        assert server.sockets and server.sockets[0].getsockname()[1] == server.port

    serve(body)


def test_many_pipelined_requests_pause_and_resume_reading() -> None:
    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        n = 3 * admin_server.MAX_QUEUED
        data = b"GET /live HTTP/1.1\r\n\r\n" * (n - 1) + b"GET /live HTTP/1.1\r\nConnection: close\r\n\r\n"
        reply = await raw(server, data)
        assert _statuses(reply) == [b"HTTP/1.1 200 OK"] * n

    serve(body)


def test_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_server, "IDLE_TIMEOUT", 0.1)

    async def body(server: AdminServer, rt: FakeRuntime) -> None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"GET /live HTTP/1.1\r\n\r\nGET /li")  # one answered, one left hanging
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        assert _statuses(reply) == [b"HTTP/1.1 200 OK"]
        writer.close()

    serve(body)
