"""The orders demo app, in-process and as `python -m pillion.demo.app`, over real sockets."""

from __future__ import annotations

import asyncio
import time

from pillion.demo.app import serve_demo_app
from pillion.testing import ProcessRunner, free_port, http_request, python_module

HOST = "127.0.0.1"


def test_routes() -> None:
    async def scenario() -> None:
        app = await serve_demo_app(HOST, 0)
        try:
            port = app.port
            hello = await http_request(
                HOST,
                port,
                "GET",
                "/",
                headers={"x-request-id": "abc", "x-forwarded-for": "10.0.0.1", "x-forwarded-proto": "http"},
            )
            assert hello.status == 200
            assert hello.header("content-type") == "application/json"
            assert hello.json()["received_headers"] == {
                "x-request-id": "abc",
                "x-forwarded-for": "10.0.0.1",
                "x-forwarded-proto": "http",
            }
            bare = await http_request(HOST, port, "GET", "/")
            assert bare.json()["received_headers"]["x-request-id"] is None

            orders = (await http_request(HOST, port, "GET", "/orders")).json()
            assert [order["id"] for order in orders] == [1, 2, 3]
            one = await http_request(HOST, port, "GET", "/orders/2")
            assert (one.status, one.json()["item"]) == (200, "croissant")
            assert (await http_request(HOST, port, "GET", "/orders/99")).status == 404
            assert (await http_request(HOST, port, "GET", "/nowhere")).status == 404
            assert (await http_request(HOST, port, "GET", "/fail")).status == 500
            assert (await http_request(HOST, port, "POST", "/orders", body=b"{}")).status == 405
            health = await http_request(HOST, port, "GET", "/healthz")
            assert (health.status, health.body) == (200, b"ok\n")

            started = time.monotonic()
            slow = await http_request(HOST, port, "GET", "/slow?ms=150")
            assert slow.json() == {"slept_ms": 150}
            assert time.monotonic() - started >= 0.15
            assert (await http_request(HOST, port, "GET", "/slow?ms=soon")).status == 400
        finally:
            await app.close()

    asyncio.run(scenario())


def test_runs_as_a_module() -> None:
    port = free_port()
    runner = ProcessRunner(
        python_module("pillion.demo.app", "--port", str(port)),
        wait_url=f"http://{HOST}:{port}/healthz",
    )
    with runner:
        response = asyncio.run(http_request(HOST, port, "GET", "/orders/1"))
        assert response.json()["item"] == "espresso"
    # SIGTERM is a clean shutdown, and the access log went to stderr.
    assert runner.returncode == 0
    assert f"listening on http://{HOST}:{port}" in runner.stdout_text()
    assert "GET /orders/1" in runner.stderr_text()
