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
class ValueMatch:
    """A condition on one request header or query parameter. Give at most one of `exact`, `regex` and
    `present`; with none, the name must be present."""

    name: str = field_doc("Header name (case-insensitive) or query parameter name (case-sensitive).")
    exact: str | None = field_doc("The value equals this string.", None)
    regex: str | None = field_doc(
        "The whole value matches this regular expression (Python `re` syntax).", None
    )
    present: bool | None = field_doc("`true`: the name must occur; `false`: it must not.", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    """What a request must look like to take a route. All given conditions must hold."""

    prefix: str | None = field_doc("The path starts with this string (`/` matches everything).", None)
    path: str | None = field_doc("The path (without query string) equals this string exactly.", None)
    regex: str | None = field_doc(
        "The whole path (without query string) matches this regular expression (Python `re` syntax).", None
    )
    host: str | None = field_doc(
        "The Host header (case-insensitive) equals this name, or ends with the suffix of a `*.example.com` "
        "wildcard. Without a port the Host header's port is ignored; with one (`api:8080`) it must match.",
        None,
    )
    methods: tuple[str, ...] = field_doc(
        "The method is one of these (upper case); empty means any.", factory=tuple
    )
    headers: tuple[ValueMatch, ...] = field_doc(
        "Conditions on request headers; all must hold.", factory=tuple
    )
    query: tuple[ValueMatch, ...] = field_doc("Conditions on query parameters; all must hold.", factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedCluster:
    """One side of a traffic split."""

    cluster: str = field_doc("A name from `clusters`.")
    weight: int = field_doc("Relative share of requests; `10` and `90` send 10% and 90%.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """Answer with a redirect instead of proxying. Unset parts keep the request's own."""

    status: Literal[301, 302, 303, 307, 308] = field_doc("Redirect status code.", 302)
    scheme: str | None = field_doc("New scheme (`https`).", None)
    host: str | None = field_doc("New host (with port if needed).", None)
    path: str | None = field_doc("New path; replaces the whole path.", None)
    prefix: str | None = field_doc("Replace the part of the path the route's `match.prefix` matched.", None)
    strip_query: bool = field_doc("Drop the query string.", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    """Answer with a fixed response instead of proxying (maintenance pages, health stubs, blocks)."""

    status: int = field_doc("Status code, 200-599.")
    body: str = field_doc(
        "Response body, sent as `text/plain; charset=utf-8` unless `content_type` says.", ""
    )
    content_type: str = field_doc("The response's content-type.", "text/plain; charset=utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """A header field to add."""

    name: str = field_doc("Field name.")
    value: str = field_doc("Field value.")
    replace: bool = field_doc("Remove any field of that name first (else the field is appended).", True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Waits between retries: full jitter over an exponential ceiling, `base * 2^n` capped at `max`."""

    base: Duration = field_doc("Ceiling of the first wait.", Duration(0.025))
    max: Duration = field_doc("Largest ceiling.", Duration(0.25))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how often a failed try is sent again (to another endpoint when there is one)."""

    attempts: int = field_doc("Retries after the first try (so `2` means up to 3 tries).", 2)
    on: tuple[str, ...] = field_doc(
        "What is retried: `5xx`, `gateway-error` (502, 503, 504), `connect-failure`, `reset` (the connection "
        "failed before a response head), `retriable-4xx` (409), `per-try-timeout`, or status codes (`503`).",
        factory=lambda: ("connect-failure", "reset", "gateway-error"),
    )
    per_try_timeout: Duration = field_doc(
        "Time one try may take to produce a response head; past it the try is abandoned (and retried if "
        "`per-try-timeout` is in `on`). `0` means only the route `timeout` applies.",
        Duration(0.0),
    )
    backoff: Backoff = field_doc("Waits between tries.", factory=Backoff)
    buffer: Size = field_doc(
        "Request bodies up to this size are kept so they can be replayed; a longer body makes the request "
        "not retriable.",
        Size(64 * 1024),
    )
    non_idempotent: bool = field_doc(
        "Also retry POST and PATCH after a response or reset. Connect failures are always retriable, since "
        "nothing reached the app.",
        False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """A token bucket: `burst` requests at once, refilled at `requests_per_second`; over it, 429."""

    requests_per_second: float = field_doc("Refill rate.")
    burst: int = field_doc("Bucket size; `0` means `requests_per_second` rounded up.", 0)
    key: Literal["route", "client_address", "header"] = field_doc(
        "One bucket for the route, one per client address, or one per value of `header`.", "route"
    )
    header: str | None = field_doc("The header whose value picks the bucket when `key` is `header`.", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzSource:
    """Who is calling: the caller's SPIFFE ID from its mTLS certificate. All given conditions must hold;
    within a list, any entry will do."""

    spiffe_ids: tuple[str, ...] = field_doc("The caller's SPIFFE ID is one of these.", factory=tuple)
    spiffe_prefixes: tuple[str, ...] = field_doc(
        "The caller's SPIFFE ID starts with one of these (e.g. `spiffe://example.org/ns/prod/`).",
        factory=tuple,
    )
    trust_domains: tuple[str, ...] = field_doc("The caller's trust domain is one of these.", factory=tuple)
    authenticated: bool | None = field_doc(
        "`true`: any caller with a verified certificate; `false`: only callers without one (plaintext on a "
        "`permissive` listener).",
        None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzRule:
    """One rule: when the caller is `source` and the request is `match`, take `action`."""

    action: Literal["allow", "deny"] = field_doc("What a matching request gets.", "allow")
    source: AuthzSource = field_doc("Conditions on the caller; any caller when unset.", factory=AuthzSource)
    match: RouteMatch = field_doc(
        "Conditions on the request, as in a route's `match` (path, methods, headers...); any when unset.",
        factory=RouteMatch,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Authorization:
    """Who may call what. Rules are tried in order; the first that matches decides. A denied request gets
    403 with `x-pillion-error: forbidden` (a deny rule) or `forbidden_by_default`."""

    default: Literal["allow", "deny"] = field_doc("The decision when no rule matches.", "deny")
    rules: tuple[AuthzRule, ...] = field_doc("The rules, in order.", factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultDelay:
    """Hold some requests before proxying them."""

    percent: float = field_doc("Share of requests delayed, 0-100.")
    duration: Duration = field_doc("How long.")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultAbort:
    """Answer some requests with an error instead of proxying them."""

    percent: float = field_doc("Share of requests aborted, 0-100.")
    status: int = field_doc("Status code of the local reply, 200-599.", 503)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """Deliberate failures, to test how the app copes (delays are applied before aborts)."""

    delay: FaultDelay | None = field_doc("Delay injection.", None)
    abort: FaultAbort | None = field_doc("Abort injection.", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One routing rule of a listener. Routes are tried in order; the first match wins. A route has exactly
    one action: `cluster`, `split`, `redirect` or `direct_response`."""

    match: RouteMatch = field_doc("The conditions a request must meet.", factory=RouteMatch)
    cluster: str | None = field_doc(
        "The cluster that serves matching requests (a name from `clusters`).", None
    )
    split: tuple[WeightedCluster, ...] = field_doc(
        "Share requests between clusters by weight (canaries).", factory=tuple
    )
    redirect: Redirect | None = field_doc("Answer with a redirect.", None)
    direct_response: DirectResponse | None = field_doc("Answer with a fixed response.", None)
    name: str = field_doc("Label for metrics and logs; defaults to `route<index>` within its listener.", "")
    timeout: Duration = field_doc(
        "Time from the end of the request until the whole upstream response head has arrived, retries "
        "included; past it the client gets 504. `0` disables.",
        Duration(15.0),
    )
    retries: RetryPolicy | None = field_doc("Retry failed tries; none when unset.", None)
    prefix_rewrite: str | None = field_doc("Replace the matched `match.prefix` of the path with this.", None)
    host_rewrite: str | None = field_doc("Send this as the Host header upstream.", None)
    request_headers_add: tuple[Header, ...] = field_doc("Fields added to the request.", factory=tuple)
    request_headers_remove: tuple[str, ...] = field_doc("Fields removed from the request.", factory=tuple)
    response_headers_add: tuple[Header, ...] = field_doc("Fields added to the response.", factory=tuple)
    response_headers_remove: tuple[str, ...] = field_doc("Fields removed from the response.", factory=tuple)
    rate_limit: RateLimit | None = field_doc("Local rate limit; over it the client gets 429.", None)
    fault: Fault | None = field_doc("Fault injection.", None)
    authorization: Authorization | None = field_doc(
        "Who may use this route; replaces the listener's `authorization` when set.", None
    )
    max_request_body_size: Size | None = field_doc(
        "Most bytes of request body on this route, instead of the listener's "
        "`limits.max_request_body_size`; over it the client gets 413. `0` means no limit.",
        None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-listener protection against oversized or slow requests."""

    max_request_headers_size: Size = field_doc(
        "Most bytes of request line plus headers; over it the client gets 431.", Size(60 * 1024)
    )
    max_request_headers: int = field_doc("Most header fields in a request; over it the client gets 431.", 100)
    max_uri_size: Size = field_doc(
        "Most bytes of request target (path and query); over it the client gets 414.", Size(16 * 1024)
    )
    max_request_body_size: Size = field_doc(
        "Most bytes of request body; over it the client gets 413. `0` means no limit (bodies stream).",
        Size(0),
    )
    request_headers_timeout: Duration = field_doc(
        "Time a client has to send a complete request head once it has started one; past it the "
        "connection is closed (slowloris protection).",
        Duration(10.0),
    )
    request_timeout: Duration = field_doc(
        "Time a client has to send a whole request, head and body, once it has started it; past it the "
        "client gets 408 and the connection closes. `0` (the default, like Envoy's) disables it, so long "
        "uploads are never cut; set it where clients are not trusted to send at a reasonable pace.",
        Duration(0.0),
    )
    idle_timeout: Duration = field_doc(
        "A keep-alive client connection with no request in progress is closed after this long.",
        Duration(300.0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTls:
    """TLS on a listener: mutual TLS with the workload identity between sidecars, or plain termination."""

    mode: Literal["off", "strict", "permissive", "simple"] = field_doc(
        "`strict`: clients must present a certificate chaining to `identity.trust_bundle` with a SPIFFE "
        "ID of this trust domain (mTLS between sidecars). `permissive`: the same for clients that start "
        "TLS, plaintext accepted too (the migration path). `simple`: TLS termination with `cert` and "
        "`key`, no client certificate. `off`: plaintext.",
        "off",
    )
    cert: str | None = field_doc("`simple` only: PEM certificate (chain) to serve.", None)
    key: str | None = field_doc("`simple` only: its PEM private key.", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """A socket Pillion accepts connections on, and the routes for what arrives there."""

    name: str = field_doc("Unique name; a label on every metric of this listener.")
    address: Address = field_doc("Where to listen, `host:port`.")
    protocol: Literal["http", "tcp"] = field_doc(
        "`http`: HTTP/1.1 (and 1.0) with routes. `tcp`: bytes forwarded both ways to `cluster`.", "http"
    )
    routes: tuple[Route, ...] = field_doc(
        "Routing rules (http), tried in order; no match gives 404.", factory=tuple
    )
    cluster: str | None = field_doc(
        "Where a `tcp` listener forwards connections (a name from `clusters`).", None
    )
    direction: Literal["inbound", "outbound"] = field_doc(
        "`inbound` carries calls to the app: on SIGTERM it stops accepting at once. `outbound` carries the "
        "app's own calls: while draining it keeps accepting (responses carry `connection: close`) until no "
        "connection is left or `drain_timeout` passes, so the app can finish what it is doing.",
        "inbound",
    )
    max_connections: int = field_doc(
        "Most client connections open at once; more are closed as soon as they are accepted (and counted). "
        "`0` means no limit.",
        0,
    )
    limits: Limits = field_doc("Request size and time limits.", factory=Limits)
    tls: ListenerTls = field_doc("TLS on this listener; off when unset.", factory=ListenerTls)
    authorization: Authorization | None = field_doc(
        "Who may call this listener's routes (a route may set its own); everyone when unset.", None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An upstream address and its weight. `host:port` alone is short for weight 1."""

    address: Address = field_doc(
        "`host:port`. A host name is resolved when the config loads and again every `dns_refresh`; each "
        "address it resolves to is an endpoint."
    )
    weight: int = field_doc("Relative share of requests, 1-1000.", 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class HashPolicy:
    """What `ring_hash` hashes so that the same client keeps reaching the same endpoint."""

    header: str | None = field_doc("Hash this request header's value.", None)
    cookie: str | None = field_doc("Hash this cookie's value.", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """Limits that make a cluster fail fast (503, `x-pillion-error: overflow`) instead of queueing."""

    max_connections: int = field_doc("Most open connections to the cluster's endpoints.", 1024)
    max_pending: int = field_doc(
        "Most requests waiting for a connection (being opened, or freed at `max_connections`).", 1024
    )
    max_requests: int = field_doc("Most requests in flight to the cluster.", 1024)
    max_retries: int = field_doc("Most retries in flight to the cluster.", 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """Caps retries so they cannot amplify an outage (Linkerd's budget): over a sliding `ttl`, retries may
    be at most `ratio` of requests plus `min_per_second`."""

    ratio: float = field_doc("Retries allowed per request, on top of the floor.", 0.2)
    min_per_second: float = field_doc("Retries always allowed per second.", 10.0)
    ttl: Duration = field_doc("The window requests and retries are counted over.", Duration(10.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    """Eject endpoints that keep failing: out for `base_ejection` times the times ejected, then back."""

    consecutive_5xx: int = field_doc("Eject after this many 5xx answers (or resets) in a row; `0` off.", 5)
    consecutive_gateway_errors: int = field_doc(
        "Eject after this many 502/503/504 answers, connect failures or resets in a row; `0` off.", 0
    )
    base_ejection: Duration = field_doc("Time out for a first ejection.", Duration(30.0))
    max_ejection_percent: int = field_doc(
        "Most endpoints ejected at once, in percent; one endpoint may always be ejected.", 10
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """Active checks of every endpoint; an unhealthy endpoint gets no requests."""

    path: str | None = field_doc(
        "HTTP GET this path (2xx is healthy); unset means a TCP connect check.", None
    )
    interval: Duration = field_doc("Time between checks of an endpoint.", Duration(5.0))
    timeout: Duration = field_doc("Time a check may take.", Duration(1.0))
    healthy_threshold: int = field_doc("Passes in a row that make an unhealthy endpoint healthy.", 2)
    unhealthy_threshold: int = field_doc("Failures in a row that make a healthy endpoint unhealthy.", 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTls:
    """TLS to a cluster's endpoints: mTLS to another sidecar, or TLS origination to an outside service."""

    mode: Literal["off", "mesh", "simple"] = field_doc(
        "`mesh`: present the workload identity and accept only a server certificate from "
        "`identity.trust_bundle` whose SPIFFE ID is `peer` (any ID of this trust domain when `peer` is "
        "unset). `simple`: ordinary TLS: the server's certificate is verified against `ca` (the system's "
        "CAs when unset) for the name `sni`. `off`: plaintext.",
        "off",
    )
    peer: str | None = field_doc("`mesh`: the SPIFFE ID the endpoints must present.", None)
    sni: str | None = field_doc(
        "`simple`: the server name sent and verified (the endpoint's host name when unset).", None
    )
    ca: str | None = field_doc("`simple`: PEM file of CAs to trust instead of the system's.", None)
    multiplex: bool = field_doc(
        "`mesh`, HTTP clusters: carry the connections to each endpoint as streams of a few mTLS "
        "connections (`pillion-mux/1`, offered by ALPN; a peer that does not select it gets one TLS "
        "connection per HTTP connection, as with `false`). See docs/mtls.md.",
        True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A named group of upstream endpoints that serve the same thing."""

    name: str = field_doc("Unique name; routes refer to it and metrics carry it.")
    endpoints: tuple[Endpoint, ...] = field_doc("Upstream endpoints: `host:port` or `{address, weight}`.")
    lb: Literal["round_robin", "least_request", "random", "ring_hash"] = field_doc(
        "How an endpoint is chosen: weighted round robin; the less loaded of two random picks; weighted "
        "random; or a consistent hash of `hash_on` (sticky sessions).",
        "round_robin",
    )
    hash_on: HashPolicy = field_doc(
        "What `ring_hash` hashes; the client address when unset.", factory=HashPolicy
    )
    dns_refresh: Duration = field_doc(
        "How often host names among the endpoints are resolved again.", Duration(5.0)
    )
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
    circuit_breaker: CircuitBreaker = field_doc("Fail-fast limits.", factory=CircuitBreaker)
    retry_budget: RetryBudget = field_doc("Cap on retries to this cluster.", factory=RetryBudget)
    outlier_detection: OutlierDetection | None = field_doc("Passive ejection of failing endpoints.", None)
    health_check: HealthCheck | None = field_doc("Active health checks.", None)
    no_healthy_endpoint: Literal["fail", "panic"] = field_doc(
        "When every endpoint is unhealthy or ejected: `fail` answers 503 `no_healthy_endpoint`; `panic` "
        "sends to all endpoints as if healthy.",
        "fail",
    )
    tls: ClusterTls = field_doc("TLS to the endpoints; off when unset.", factory=ClusterTls)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """This workload's identity: an X.509 SVID (`pillion ca issue`, cert-manager or SPIRE write these
    files). The files are watched: a new certificate is in use for new handshakes within a second."""

    cert: str = field_doc("PEM file: the workload certificate, intermediates after it.")
    key: str = field_doc("PEM file: its private key.")
    trust_bundle: str = field_doc("PEM file: the CA certificates peer certificates must chain to.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing:
    """Distributed tracing: W3C Trace Context and B3 propagation, spans exported over OTLP/HTTP
    (docs/tracing.md)."""

    otlp_endpoint: str = field_doc(
        "Where spans are sent: an OTLP/HTTP protobuf URL, e.g. `http://collector:4318/v1/traces`."
    )
    sampling: float = field_doc(
        "Share of new traces recorded, 0-1. A request that arrives with a trace follows its caller's "
        "decision (the sampled flag), so a trace is recorded by every sidecar or by none.",
        0.01,
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
class MergeApp:
    """The app's own Prometheus metrics, fetched at each scrape of `/metrics` and served after Pillion's,
    so one scrape target covers both (Istio's metrics merging). An app that cannot be reached, answers
    late or with anything but 200, or sends more than 8 MiB is left out: the scrape still gets Pillion's
    metrics, and `pillion_metrics_merge_failures_total` counts it."""

    cluster: str = field_doc("The cluster whose first endpoint is the app (a name from `clusters`).")
    path: str = field_doc(
        "Path requested with GET; the answer must be 200 in the Prometheus text format. The app's families "
        "named `pillion_*` are dropped, as they would clash with Pillion's.",
        "/metrics",
    )
    timeout: Duration = field_doc(
        "Time allowed for the app's whole answer; the scrape waits at most this long for it.", Duration(1.0)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """Prometheus metrics, served on the admin server's `/metrics` (docs/metrics.md)."""

    enabled: bool = field_doc(
        "`false`: requests are not counted or timed, and `/metrics` answers 404 `metrics_disabled`. For "
        "a benchmark baseline, or a fleet that takes its numbers from access logs or traces instead.",
        True,
    )
    merge_app: MergeApp | None = field_doc(
        "Also serve the app's own metrics on `/metrics`, fetched from it at each scrape; off when unset.",
        None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Overload:
    """Process-wide limits. Past one, Pillion sheds new work, and counts it, instead of running out of
    memory or descriptors; it recovers by itself once back under the limit."""

    max_connections: int = field_doc(
        "Most client connections open at once across all listeners (HTTP and TCP); more are closed as "
        "soon as they are accepted. `0` means no limit.",
        0,
    )
    max_memory: Size = field_doc(
        "Resident memory (RSS) at which Pillion sheds load: new connections are closed on accept and "
        "new requests get 503 `overloaded` with `connection: close`, while requests already in progress "
        "carry on. Shedding stops once RSS is below 95% of this. `0` disables.",
        Size(0),
    )
    check_interval: Duration = field_doc("How often resident memory is read.", Duration(0.25))


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLog:
    """One line per request, JSON or text, written off the event loop. A file is reopened on SIGUSR1,
    so logrotate can move it and signal (`postrotate`: `kill -USR1 <pid>`) without losing a line."""

    enabled: bool = field_doc("Write the access log.", False)
    path: str = field_doc("File to append to; `-` means standard output.", "-")
    format: Literal["json", "text"] = field_doc(
        "`json`: one JSON object per line with the keys `ts`, `listener`, `route`, `method`, `path`, "
        "`status`, `bytes_sent`, `bytes_received`, `duration_ms`, `upstream_duration_ms` (only when a "
        "response head came from an upstream), `upstream`, `cluster`, `request_id`, `trace_id`, `error` "
        "(the local-reply reason) and `flags` (response flags, see docs/proxy.md). `text`: the line "
        "`text_format` describes.",
        "json",
    )
    text_format: str = field_doc(
        "The line written with `format: text`; each `%FIELD%` is replaced by a value, `%%` is a `%`. "
        "Fields: `START_TIME` (UTC, ISO 8601, milliseconds), `METHOD`, `PATH`, `RESPONSE_CODE`, "
        "`RESPONSE_FLAGS`, `BYTES_RECEIVED`, `BYTES_SENT`, `DURATION` and `UPSTREAM_DURATION` "
        "(milliseconds, 3 decimals), `UPSTREAM_HOST`, `REQUEST_ID`, `TRACE_ID`, `LISTENER`, `ROUTE`, "
        '`CLUSTER`, `ERROR` (the local-reply reason). An empty value is written `-`; `\\`, `"`, control '
        "and non-ASCII characters are escaped as in JSON strings, so a quoted field never breaks the line. "
        "The default is modelled on Envoy's default format.",
        '[%START_TIME%] "%METHOD% %PATH%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% '
        '%DURATION% %UPSTREAM_DURATION% "%REQUEST_ID%" "%UPSTREAM_HOST%" %LISTENER% %ROUTE% %CLUSTER% '
        "%TRACE_ID% %ERROR%",
    )
    sampling: float = field_doc(
        "Share of requests logged, 0-1, chosen at random (`0.01`: one in a hundred). Errors are always "
        "logged: a status of 500 or more, and any request with an `error` (a local reply such as 404 "
        "`no_route`, 429 or 503 `overflow`; a client that disconnected; an upstream reset mid-response).",
        1.0,
    )


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
    metrics: Metrics = field_doc("Prometheus metrics.", factory=Metrics)
    access_log: AccessLog = field_doc("Per-request log.", factory=AccessLog)
    overload: Overload = field_doc("Load shedding past process-wide limits.", factory=Overload)
    tracing: Tracing | None = field_doc("Distributed tracing; off when unset.", None)
    identity: Identity | None = field_doc(
        "The workload identity for mutual TLS (listener `tls.mode` strict/permissive, cluster `mesh`).", None
    )
    log_level: Literal["debug", "info", "warning", "error"] = field_doc("Process log threshold.", "info")
    watch: bool = field_doc(
        "Reload when the config file changes, as on SIGHUP (checked every second).", False
    )
