"""The demo application: a tiny "orders" service standing in for the user's own app behind the sidecar.

Theory of operation: an `HttpServer` (the same small asyncio HTTP/1.1 server the test upstream uses) with
a handful of read-only routes. `GET /` reports the x-request-id, x-forwarded-for and x-forwarded-proto
headers it received, so a newcomer calling through the sidecar sees exactly what the sidecar added; the
other routes give the sidecar something to route, retry (/fail), time out (/slow) and health-check
(/healthz). Run it alone with `python -m pillion.demo.app --port 8080`.

    GET /              JSON hello + the forwarding headers seen
    GET /orders        JSON list of orders
    GET /orders/<id>   one order, or 404
    GET /slow?ms=N     answers after N milliseconds (default 1000, at most 60000)
    GET /fail          500
    GET /healthz       200 ok
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from urllib.parse import parse_qs

from pillion.testing.server import HttpServer, ServerRequest, ServerResponse

log = logging.getLogger("pillion.demo")

ORDERS: list[dict[str, object]] = [
    {"id": 1, "item": "espresso", "quantity": 2, "status": "delivered"},
    {"id": 2, "item": "croissant", "quantity": 1, "status": "baking"},
    {"id": 3, "item": "flat white", "quantity": 3, "status": "queued"},
]
SHOWN_HEADERS = ("x-request-id", "x-forwarded-for", "x-forwarded-proto")
MAX_SLOW_MS = 60_000


class DemoApp(HttpServer):
    """The orders service. `serve_demo_app()` starts one; `await app.close()` stops it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        super().__init__(host, port, name="orders")

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        await request.discard()
        log.info("%s %s", request.method, request.target)
        if request.method not in ("GET", "HEAD"):
            await _json(response, 405, {"error": "method not allowed"}, [("allow", "GET, HEAD")])
            return
        path = request.path
        if path == "/":
            await _json(response, 200, _hello(request))
        elif path == "/orders":
            await _json(response, 200, ORDERS)
        elif path.startswith("/orders/"):
            order = _find_order(path.removeprefix("/orders/"))
            if order is None:
                await _json(response, 404, {"error": "no such order"})
            else:
                await _json(response, 200, order)
        elif path == "/slow":
            ms = _slow_ms(request.query)
            if ms is None:
                await _json(response, 400, {"error": "ms must be an integer"})
                return
            await asyncio.sleep(ms / 1000)
            await _json(response, 200, {"slept_ms": ms})
        elif path == "/fail":
            await _json(response, 500, {"error": "this endpoint always fails, to show retries"})
        elif path == "/healthz":
            await response.send(200, b"ok\n")
        else:
            await _json(response, 404, {"error": "not found"})


def _hello(request: ServerRequest) -> dict[str, object]:
    return {
        "service": "orders",
        "message": "Hello from the orders demo app. Headers below were added on the way here.",
        "received_headers": {name: request.header(name) for name in SHOWN_HEADERS},
        "routes": ["/orders", "/orders/<id>", "/slow?ms=N", "/fail", "/healthz"],
    }


def _find_order(raw_id: str) -> dict[str, object] | None:
    return next((order for order in ORDERS if str(order["id"]) == raw_id), None)


def _slow_ms(query: str) -> int | None:
    values = parse_qs(query).get("ms", ["1000"])
    try:
        return max(0, min(int(values[0]), MAX_SLOW_MS))
    except ValueError:
        return None


async def _json(
    response: ServerResponse,
    status: int,
    payload: object,
    headers: list[tuple[str | bytes, str | bytes]] | None = None,
) -> None:
    body = json.dumps(payload, indent=2).encode() + b"\n"
    await response.send(status, body, headers or [], content_type="application/json")


async def serve_demo_app(host: str = "127.0.0.1", port: int = 8080) -> DemoApp:
    """Start the demo app listening (port 0 picks a free one, see `.port`); `await app.close()` stops it."""
    return await DemoApp(host, port).start()


async def _run(host: str, port: int) -> None:
    app = await serve_demo_app(host, port)
    print(f"orders demo app listening on http://{app.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pillion.demo.app", description="The orders demo app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    import uvloop

    try:
        uvloop.run(_run(args.host, args.port))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
