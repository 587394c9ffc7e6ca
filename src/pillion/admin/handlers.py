"""The admin endpoints: a table from path to (methods, handler, one-line help).

Theory of operation: `dispatch` looks the path up in `ENDPOINTS` (exact match; unknown → 404), checks the
method (→ 405 with `allow`; HEAD is accepted wherever GET is and answered as GET, the server drops the
body), then awaits the handler. Handlers only ask the `AdminTarget` and build a `Response`; they never touch
sockets. A side effect that must follow the reply -- draining, quitting -- goes in `Response.after`, which
the server runs once the response is written, so the client gets its 200 even if the action soon closes
the admin server itself. A handler that raises becomes a 500 and a log line; the connection lives on.

`/quitquitquit` is refused (403) unless the peer is a loopback address: exiting the process is for the
pod's own lifecycle hooks, not for anything that can reach the admin port over the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pillion.admin.target import AdminTarget, ListenersTarget
from pillion.telemetry.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = [
    "ENDPOINTS",
    "JSON",
    "READINESS_TIMEOUT",
    "TEXT",
    "Endpoint",
    "Request",
    "Response",
    "dispatch",
    "header_safe",
    "is_loopback",
    "json_response",
    "text",
]

log = logging.getLogger("pillion.admin")

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
READINESS_TIMEOUT = 5.0  # seconds; a probe that hangs must still get an answer before its own timeout


@dataclass(slots=True)
class Request:
    method: str  # as sent; HEAD stays HEAD
    path: str  # without the query string, not percent-decoded
    query: dict[str, list[str]] = field(default_factory=dict)
    client: str = ""  # the peer's IP address, "" when unknown


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()
    after: Callable[[], None] | None = None  # run once the response has been written


Handler = Callable[[AdminTarget, Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    methods: tuple[str, ...]
    handler: Handler
    help: str


def text(status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, body.encode("utf-8"), TEXT, headers)


def json_response(data: Any) -> Response:
    body = json.dumps(data, indent=2, default=str) + "\n"
    return Response(200, body.encode("utf-8"), JSON)


def header_safe(value: str, limit: int = 256) -> str:
    """A reason fit for a header value: one line of printable ASCII, at most `limit` characters."""
    cleaned = "".join(c if " " <= c <= "~" else " " if c in "\t\r\n" else "?" for c in value[:limit])
    return cleaned.strip()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z); False for anything else,
    including unparseable or empty addresses."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


# -- handlers --------------------------------------------------------------------------------------


async def _index(target: AdminTarget, request: Request) -> Response:
    lines = [f"pillion admin: {target.service}", ""]
    for path, ep in _visible(target):
        lines.append(f"  {' '.join(ep.methods):<5} {path:<15} {ep.help}")
    return text(200, "\n".join(lines) + "\n")


async def _ready(target: AdminTarget, request: Request) -> Response:
    try:
        ready, reason = await asyncio.wait_for(target.readiness(), READINESS_TIMEOUT)
    except TimeoutError:
        ready, reason = False, f"readiness check timed out after {READINESS_TIMEOUT:g}s"
    if ready:
        return text(200, "ready\n")
    reason = reason or "not ready"
    return text(503, reason + "\n", (("x-pillion-error", header_safe(reason)),))


async def _live(target: AdminTarget, request: Request) -> Response:
    if target.is_live():
        return text(200, "live\n")
    return text(503, "not live\n", (("x-pillion-error", "not live"),))


async def _metrics(target: AdminTarget, request: Request) -> Response:
    if not target.metrics_enabled:
        reason = (("x-pillion-error", "metrics_disabled"),)
        return text(404, "metrics are disabled (metrics.enabled: false)\n", reason)
    body = await target.metrics_text_merged()
    return Response(200, body.encode("utf-8"), METRICS_CONTENT_TYPE)


async def _config_dump(target: AdminTarget, request: Request) -> Response:
    return json_response(target.config_dump())


async def _clusters(target: AdminTarget, request: Request) -> Response:
    clusters = target.clusters_view()
    if request.query.get("format", ["json"])[-1] != "text":
        return json_response({"clusters": clusters})
    # Envoy's text form: one `cluster::endpoint::field::value` line per endpoint field, greppable.
    lines: list[str] = []
    for cluster in clusters:
        name = cluster.get("name", "")
        for key, value in cluster.items():
            if key not in ("name", "endpoints"):
                lines.append(f"{name}::{key}::{value}")
        for ep in cluster.get("endpoints", ()):
            address = ep.get("address", "")
            for key, value in ep.items():
                if key != "address":
                    lines.append(f"{name}::{address}::{key}::{value}")
    return text(200, "".join(line + "\n" for line in lines))


async def _listeners(target: AdminTarget, request: Request) -> Response:
    if not isinstance(target, ListenersTarget):
        return text(404, "not found\n")
    return json_response({"listeners": target.listeners_view()})


async def _certs(target: AdminTarget, request: Request) -> Response:
    if not isinstance(target, ListenersTarget):
        return text(404, "not found\n")
    return json_response(target.certs_view())


async def _drain(target: AdminTarget, request: Request) -> Response:
    response = text(200, "OK\n")
    response.after = target.drain
    return response


async def _quit(target: AdminTarget, request: Request) -> Response:
    if not is_loopback(request.client):
        return text(
            403,
            "forbidden: /quitquitquit is only accepted from loopback\n",
            (("x-pillion-error", "not loopback"),),
        )
    response = text(200, "OK\n")
    response.after = target.quit
    return response


ENDPOINTS: dict[str, Endpoint] = {
    "/": Endpoint(("GET",), _index, "this index"),
    "/ready": Endpoint(("GET",), _ready, "200 when ready to take traffic, else 503 with the reason"),
    "/live": Endpoint(("GET",), _live, "200 while the process is alive"),
    "/metrics": Endpoint(("GET",), _metrics, "Prometheus metrics"),
    "/config_dump": Endpoint(("GET",), _config_dump, "the effective configuration (JSON)"),
    "/clusters": Endpoint(("GET",), _clusters, "clusters and endpoints (JSON; ?format=text for lines)"),
    "/listeners": Endpoint(("GET",), _listeners, "listeners (JSON)"),
    "/certs": Endpoint(
        ("GET",), _certs, "the workload certificate in service and TLS per listener/cluster (JSON)"
    ),
    "/drain": Endpoint(("POST",), _drain, "stop accepting; close keep-alive connections"),
    "/quitquitquit": Endpoint(("POST",), _quit, "drain, then exit (loopback clients only)"),
}


_RUNTIME_ONLY = ("/listeners", "/certs")


def _visible(target: AdminTarget) -> list[tuple[str, Endpoint]]:
    return [
        (path, ep)
        for path, ep in ENDPOINTS.items()
        if path not in _RUNTIME_ONLY or isinstance(target, ListenersTarget)
    ]


def _allow(ep: Endpoint) -> str:
    return ", ".join((*ep.methods, "HEAD") if "GET" in ep.methods else ep.methods)


async def dispatch(target: AdminTarget, request: Request) -> Response:
    ep = ENDPOINTS.get(request.path)
    if ep is None or (request.path in _RUNTIME_ONLY and not isinstance(target, ListenersTarget)):
        return text(404, "not found; GET / lists the endpoints\n")
    method = "GET" if request.method == "HEAD" else request.method
    if method not in ep.methods:
        return text(405, f"method not allowed; use {_allow(ep)}\n", (("allow", _allow(ep)),))
    try:
        return await ep.handler(target, request)
    except Exception as exc:
        log.exception("admin handler failed", extra={"path": request.path})
        return text(500, f"internal error: {type(exc).__name__}\n")
