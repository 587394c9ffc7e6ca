"""The configuration model: typed, frozen, documented where declared.

Theory of operation: YAML is parsed into plain data, `${VAR}` references are substituted, and the generic
converter in `loader.py` walks these dataclasses' type hints to build frozen objects, naming the path of
every problem (`listeners[0].routes[1].cluster: unknown cluster 'paymnts'`). The same type hints produce
the JSON Schema (`pillion schema`) and docs/configuration.md, so the three cannot drift apart.

Every field carries its documentation in `metadata["doc"]`; `field_doc()` is the only way fields are made.
Units: `Duration` values are seconds (written `250ms`, `2s`, `1m`), `Size` values are bytes (`1MiB`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class Duration(float):
    """Seconds. Written in YAML as `250ms`, `2s`, `1.5s`, `1m`, `1h` (a bare number means seconds)."""


class Size(int):
    """Bytes. Written in YAML as `512`, `64KiB`, `1MiB`, `1GiB` (or `kB`, `MB`, `GB` for powers of 10)."""


def field_doc(doc: str, default: Any = ..., *, factory: Any = None) -> Any:
    """A dataclass field with its documentation attached; `...` as default means required."""
    meta = {"doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is ...:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Address:
    """A socket address, written `host:port` (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`)."""

    host: str = field_doc("IP address or host name.")
    port: int = field_doc("TCP port, 0-65535 (0 = any free port, useful in tests).")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    """What a request must look like to take a route. All given conditions must hold."""

    prefix: str | None = field_doc("The path starts with this string (`/` matches everything).", None)
    path: str | None = field_doc("The path (without query string) equals this string exactly.", None)
    host: str | None = field_doc(
        "The Host header (port ignored, case-insensitive) equals this name, or ends with the suffix of a "
        "`*.example.com` wildcard.",
        None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One routing rule of a listener. Routes are tried in order; the first match wins."""

    match: RouteMatch = field_doc("The conditions a request must meet.", factory=RouteMatch)
    cluster: str = field_doc("The cluster that serves matching requests (a name from `clusters`).")
    name: str = field_doc("Label for metrics and logs; defaults to `route<index>` within its listener.", "")
    timeout: Duration = field_doc(
        "Time from the end of the request until the whole upstream response head has arrived; past it the "
        "client gets 504. `0` disables.",
        Duration(15.0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-listener protection against oversized or slow requests."""

    max_request_headers_size: Size = field_doc(
        "Most bytes of request line plus headers; over it the client gets 431.", Size(60 * 1024)
    )
    max_request_headers: int = field_doc("Most header fields in a request; over it the client gets 431.", 100)
    max_request_body_size: Size = field_doc(
        "Most bytes of request body; over it the client gets 413. `0` means no limit (bodies stream).",
        Size(0),
    )
    request_headers_timeout: Duration = field_doc(
        "Time a client has to send a complete request head once it has started one; past it the "
        "connection is closed (slowloris protection).",
        Duration(10.0),
    )
    idle_timeout: Duration = field_doc(
        "A keep-alive client connection with no request in progress is closed after this long.",
        Duration(300.0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """A socket Pillion accepts connections on, and the routes for what arrives there."""

    name: str = field_doc("Unique name; a label on every metric of this listener.")
    address: Address = field_doc("Where to listen, `host:port`.")
    protocol: Literal["http"] = field_doc("Wire protocol. `http` is HTTP/1.1 (and 1.0).", "http")
    routes: tuple[Route, ...] = field_doc("Routing rules, tried in order; no match gives 404.", factory=tuple)
    limits: Limits = field_doc("Request size and time limits.", factory=Limits)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A named group of upstream endpoints that serve the same thing."""

    name: str = field_doc("Unique name; routes refer to it and metrics carry it.")
    endpoints: tuple[Address, ...] = field_doc("Upstream addresses, `host:port`; chosen round robin.")
    connect_timeout: Duration = field_doc(
        "Time allowed to open a TCP connection to an endpoint; past it the client gets 504.", Duration(1.0)
    )
    max_idle_connections: int = field_doc(
        "Most idle keep-alive connections kept per endpoint for reuse.", 128
    )
    idle_timeout: Duration = field_doc(
        "An idle pooled upstream connection is closed after this long. Keep it below the app's own "
        "keep-alive timeout.",
        Duration(30.0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadyCheck:
    """The app's own health check, consulted by `GET /ready` on the admin server."""

    cluster: str = field_doc("The cluster whose first endpoint is the app (a name from `clusters`).")
    path: str = field_doc("Path requested with GET; any 2xx or 3xx answer means ready.", "/")
    timeout: Duration = field_doc("Time allowed for the app to answer.", Duration(1.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    """The admin server: health, metrics, config and lifecycle endpoints."""

    address: Address = field_doc(
        "Where the admin server listens.", factory=lambda: Address("127.0.0.1", 9901)
    )
    ready_check: ReadyCheck | None = field_doc(
        "When set, `/ready` is 200 only if this check of the app passes too.", None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLog:
    """One JSON line per request."""

    enabled: bool = field_doc("Write the access log.", False)
    path: str = field_doc("File to append to; `-` means standard output.", "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration file."""

    service: str = field_doc("This workload's name: used in metrics, logs, and later traces and identity.")
    admin: Admin = field_doc("Admin server settings.", factory=Admin)
    listeners: tuple[Listener, ...] = field_doc("Sockets to accept traffic on.", factory=tuple)
    clusters: tuple[Cluster, ...] = field_doc("Upstream services.", factory=tuple)
    drain_timeout: Duration = field_doc(
        "On SIGTERM or `/quitquitquit`, how long in-flight requests may take to finish before exit.",
        Duration(5.0),
    )
    access_log: AccessLog = field_doc("Per-request log.", factory=AccessLog)
    log_level: Literal["debug", "info", "warning", "error"] = field_doc("Process log threshold.", "info")
