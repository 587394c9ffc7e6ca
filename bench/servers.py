"""The servers under test: an upstream, eight reverse proxies and two mTLS pairs in front of it, all children.

Theory of operation: each server gets a directory of its own under the run's temporary directory, holding
its generated configuration, its log (stdout+stderr) and, for nginx, its pid and temp paths -- nothing
touches /etc, /var or /run. Ports are picked free at start. Every server runs in the foreground
(`daemon off`, `haproxy -db`, `pillion run`, the calibration script) pinned with `taskset` to the server
core, single-threaded:

  * upstream  -- nginx, `master_process off` (one process), `return 200 "hello world\\n"` on `/`, an echo of
    the X-Forwarded-For it received on `/__xff`, of its x-request-id and x-forwarded-proto on `/__ids`, and
    `stub_status` on `/__status` so the harness can count
    the connections and requests the upstream saw (the proof that the proxies reuse upstream connections).
  * haproxy   -- `nbthread 1`, HTTP mode, keep-alive both sides, `http-reuse always`, `option forwardfor`,
    no `log` line; X-Forwarded-Proto and X-Request-ID (when absent) added, as Pillion adds them.
  * nginx     -- master + `worker_processes 1`, `upstream { keepalive 64; }`, HTTP/1.1 to the upstream with
    `Connection ""`, X-Forwarded-For, X-Forwarded-Proto and X-Request-ID (when absent) added,
    `access_log off`.
  * minimal   -- bench/minimal_proxy.py run by the harness's own interpreter (the project venv, which has
    uvloop and httptools): the smallest uvloop + httptools keep-alive proxy, X-Forwarded-For added, no
    config, no log. It is the calibration row: about the floor for a Python proxy on this runtime,
    so the report can split Pillion's cost into the runtime's share and Pillion's own. Ready when GET /
    answers through it.
  * pillion   -- `pillion run -c bench.yaml`, metrics on (the default), access log off, no tracing, and
    `request_headers_timeout: 2s` (the slowloris run attacks this one; no benchmark request is anywhere
    near it). Readiness is the admin server's `GET /ready`. Two rows bracket its telemetry:
    `pillion-off` is the same with `metrics: {enabled: false}` (check_forwarding also asks its admin
    `/metrics` for the 404 `metrics_disabled` that proves it), and `pillion-full` the same with the access
    log written to a file and tracing at 1% exported to the OTLP collector below.
  * collector -- not a target: bench/collector.py (pillion.testing.collector.FakeCollector), run by the
    harness's interpreter on the *load* core so its work is not charged to, and does not compete with,
    the server core. `pillion-full` exports its spans to it; the harness reads its span count on
    `GET /stats`. Ready when that answers. Without it `pillion-full` is not started (FAILED).
  * pillion-outbound -- Pillion as an outbound sidecar: listener `outbound` whose first three routes match
    other Host names (`payments.svc`, `*.internal`, `users.svc:8080`, clusters on a port nothing listens
    on), then `host: 127.0.0.1` (wrk's Host, port ignored) to cluster `app` with `retries: {attempts: 2,
    on: [5xx, connect-failure, reset]}`; `app` has a circuit breaker (1024 connections/pending/requests,
    3 retries) and outlier detection (5 consecutive 5xx, 30 s ejection); metrics on, access log off.
  * haproxy-outbound -- HAProxy doing the same job: the haproxy settings above, plus one `acl` per Host
    pattern on `req.hdr(host)` (`field(1,:)` drops the port where Pillion ignores it), `use_backend` per
    host in the same order and a 404 backend by default; backend `app` with `retries 2`, `retry-on` (every
    5xx HAProxy knows, conn-failure, empty/junk response, response timeout; all but conn-failure only for
    idempotent methods, as in Pillion), `option redispatch`, and a server with `maxconn 1024 maxqueue
    1024` (the circuit breaker) and `observe layer7 error-limit 5 on-error mark-down` (outlier detection;
    HAProxy needs `check` for it, and that check connects to HAProxy's own listener every 10 s, so it never
    touches the upstream). bench/README.md lists what is not exactly equivalent. check_forwarding also
    asks both for an unknown Host and expects 404.

The mTLS pairs are two sidecars each, in a row: A takes plaintext and originates mutual TLS, B terminates
it and calls the upstream in plaintext. `make_identities` makes a CA and SVIDs for A and B with `pillion
ca` (under tmp/mtls); the Pillion pair is `pillion-mtls` (A: outbound listener -> cluster `tls: {mode:
mesh, peer: B's SPIFFE ID}`; B: `tls: {mode: strict}` listener), the HAProxy pair `haproxy-mtls` (A: `server
... ssl verify required ca-file crt`; B: `bind ... ssl crt ca-file verify required`), both with Pillion's TLS
floor (1.2+, ECDHE + AEAD). The calibration pair `minimal-mtls` is two bench/minimal_proxy.py, A with
`--tls-out` and B with `--tls-in` (uvloop's own TLS, the same SVIDs): the floor of a plain uvloop +
httptools pair, which, like the minimal row, never decides a bar. B is ready when a TLS GET presenting
A's SVID answers 200, A when a GET through both does; `check_pair` then proves B is mTLS-only and, for
Pillion, that the upstream sees B's x-forwarded-client-cert naming A. The upstream echoes that header on
`/__xfcc`.

Both nginx instances and the proxy nginx's clients get `keepalive_requests 1000000`, so no server closes a
benchmark connection every 1000 requests (nginx's default) while the others keep theirs.

A server that fails to start (cannot be executed, exits, or is not ready in time) does not stop the run:
its `Target` carries `error` (reason + log tail) and the report shows the row as FAILED.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from procs import Proc, ProcGroup, http_exchange, http_get, tls_session, wait_http

from pillion.testing.ports import free_port

HOST = "127.0.0.1"
BODY = b"hello world\n"
MINIMAL_PROXY = Path(__file__).resolve().parent / "minimal_proxy.py"
COLLECTOR = Path(__file__).resolve().parent / "collector.py"

# Stable keys (JSON, --only) and the labels the report prints.
LABELS: dict[str, str] = {
    "upstream": "upstream (direct)",
    "haproxy": "HAProxy",
    "nginx": "nginx",
    "minimal": "minimal uvloop+httptools proxy (calibration)",
    "pillion": "Pillion (metrics on, access log off)",
    "pillion-off": "Pillion (telemetry off: no metrics, tracing or access log)",
    "pillion-full": "Pillion (all telemetry: metrics, tracing 1%, access log to a file)",
    "haproxy-outbound": "HAProxy (outbound: host routing, retries, circuit breaker, outlier detection)",
    "pillion-outbound": "Pillion (outbound: host routing, retries, circuit breaker, outlier detection)",
}
OUTBOUND_KEYS: tuple[str, ...] = ("haproxy-outbound", "pillion-outbound")

# The outbound rows' host routes that wrk's `Host: 127.0.0.1:PORT` must get past before the one that
# matches: (route/backend name, Host pattern). Their clusters/backends point at DECOY (nothing listens on
# the discard port), so a request routed there by mistake fails instead of reaching the upstream.
DECOY_HOSTS: tuple[tuple[str, str], ...] = (
    ("payments", "payments.svc"),
    ("internal", "*.internal"),
    ("users", "users.svc:8080"),
)
DECOY = f"{HOST}:9"
NO_ROUTE_HOST = "unknown.example"  # check_forwarding: no route takes it, both outbound rows answer 404
TARGET_KEYS: tuple[str, ...] = tuple(LABELS)
# The mTLS pairs (a run of their own after the rounds, see bench/README.md) and their two sidecars each:
# A takes plaintext from the load generator and originates mTLS, B terminates it in front of the upstream.
MTLS_LABELS: dict[str, str] = {
    "pillion-mtls": "Pillion pair (A -> mTLS -> B)",
    "haproxy-mtls": "HAProxy pair (A -> mTLS -> B)",
    "pillion-mtls-a": "Pillion A (client side: originates mTLS)",
    "pillion-mtls-b": "Pillion B (server side: terminates mTLS)",
    "haproxy-mtls-a": "HAProxy A (client side: originates mTLS)",
    "haproxy-mtls-b": "HAProxy B (server side: terminates mTLS)",
    "minimal-mtls": "minimal uvloop+httptools pair (A -> mTLS -> B, calibration)",
    "minimal-mtls-a": "minimal A (client side: originates mTLS)",
    "minimal-mtls-b": "minimal B (server side: terminates mTLS)",
}
MTLS_KEYS: tuple[str, ...] = ("pillion-mtls", "haproxy-mtls", "minimal-mtls")
TRUST_DOMAIN = "bench.local"
SPIFFE_A = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/a"
SPIFFE_B = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/b"
# Pillion's TLS settings (src/pillion/tls/contexts.py) for HAProxy: TLS 1.2 at least, and for 1.2 only
# ECDHE with an AEAD; TLS 1.3 (OpenSSL's default suites) is what both ends of either pair negotiate.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# The `pillion` row's request_headers_timeout: a slowloris connection is closed this long after its head
# began, plus up to one listener sweep (once a second).
PILLION_HEADERS_TIMEOUT_S = 2.0
# The `pillion-full` row's tracing: the share of new traces sampled (wrk and hey send no trace context,
# so every request starts one), exported to bench/collector.py.
TRACE_SAMPLING = 0.01
# Labels of the processes that are neither targets nor mTLS sidecars.
HELPER_LABELS: dict[str, str] = {"collector": "OTLP/HTTP collector (bench/collector.py, load core)"}


@dataclass
class Target:
    """Something wrk and hey are pointed at, and the process tree whose CPU and memory are charged to it."""

    key: str
    port: int
    proc: Proc | None = None
    error: str | None = None
    admin_port: int | None = None
    access_log: Path | None = None
    xff_seen: str | None = None
    ids_seen: str | None = None  # "<x-request-id> <x-forwarded-proto>" as the upstream saw them
    collector_port: int | None = None  # where its spans go (pillion-full): the harness counts them there
    metrics_probe: str | None = None  # pillion-off: what its admin /metrics answered (metrics really off)

    @property
    def label(self) -> str:
        return LABELS.get(self.key) or MTLS_LABELS.get(self.key) or HELPER_LABELS[self.key]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def fail(self, reason: str) -> None:
        tail = self.proc.tail() if self.proc is not None else ""
        self.error = reason + (f"\n--- log tail ---\n{tail}" if tail else "")


def _nginx_common(root: Path) -> str:
    """Directives that keep an nginx instance inside `root` (pid, temp paths) and quiet."""
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return (
        f"{user}pid {root / 'nginx.pid'};\n"
        f"error_log {root / 'error.log'} warn;\n"
        "daemon off;\n"
        "events { worker_connections 4096; multi_accept on; }\n"
    )


def _nginx_temp_paths(root: Path) -> str:
    return "".join(
        f"    {name}_temp_path {root / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def upstream_conf(root: Path, port: int) -> str:
    return (
        _nginx_common(root)
        + "master_process off;\n"
        + "http {\n"
        + "    access_log off;\n"
        + "    keepalive_requests 1000000;\n"
        + "    keepalive_timeout 300s;\n"
        + _nginx_temp_paths(root)
        + "    default_type text/plain;\n"
        + "    server {\n"
        + f"        listen {HOST}:{port} backlog=4096;\n"
        + '        location / { return 200 "hello world\\n"; }\n'
        + '        location = /__xff { return 200 "$http_x_forwarded_for"; }\n'
        + '        location = /__xfcc { return 200 "$http_x_forwarded_client_cert"; }\n'
        + '        location = /__ids { return 200 "$http_x_request_id $http_x_forwarded_proto"; }\n'
        + "        location = /__status { stub_status; }\n"
        + "    }\n"
        + "}\n"
    )


def nginx_proxy_conf(root: Path, port: int, upstream_port: int) -> str:
    return (
        _nginx_common(root)
        + "worker_processes 1;\n"
        + "http {\n"
        + "    access_log off;\n"
        + "    keepalive_requests 1000000;\n"
        + "    keepalive_timeout 300s;\n"
        + _nginx_temp_paths(root)
        # The header work Pillion does: an X-Request-ID ($request_id: 128 random bits) when the client sent
        # none, and X-Forwarded-Proto from the client connection.
        + "    map $http_x_request_id $pillion_request_id {\n"
        + '        "" $request_id;\n'
        + "        default $http_x_request_id;\n"
        + "    }\n"
        + "    upstream app {\n"
        + f"        server {HOST}:{upstream_port};\n"
        + "        keepalive 64;\n"
        + "        keepalive_requests 1000000;\n"
        + "    }\n"
        + "    server {\n"
        + f"        listen {HOST}:{port} backlog=4096;\n"
        + "        location / {\n"
        + "            proxy_pass http://app;\n"
        + "            proxy_http_version 1.1;\n"
        + '            proxy_set_header Connection "";\n'
        + "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        + "            proxy_set_header X-Forwarded-Proto $scheme;\n"
        + "            proxy_set_header X-Request-ID $pillion_request_id;\n"
        + "            proxy_connect_timeout 1s;\n"
        + "        }\n"
        + "    }\n"
        + "}\n"
    )


# What every HAProxy shares: one thread, keep-alive on both sides, connection reuse, forwardfor.
HAPROXY_GLOBAL = "global\n    nbthread 1\n    maxconn 4096\n"
HAPROXY_DEFAULTS = (
    "defaults\n"
    "    mode http\n"
    "    option http-keep-alive\n"
    "    option forwardfor\n"
    "    http-reuse always\n"
    "    timeout connect 1s\n"
    "    timeout client 300s\n"
    "    timeout server 300s\n"
    "    timeout http-keep-alive 300s\n"
)
HAPROXY_COMMON = HAPROXY_GLOBAL + HAPROXY_DEFAULTS
# Every HAProxy frontend does the per-request header work Pillion does (docs/proxy.md): X-Forwarded-Proto
# from the client connection, and an X-Request-ID (a random UUID) when the client sent none. HAProxy 2.6
# takes `http-request` rules only in a frontend or a named defaults section, hence a frontend snippet.
HAPROXY_REQUEST_HEADERS = (
    "    unique-id-format %[uuid()]\n"
    "    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]\n"
    "    http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }\n"
)


def haproxy_cfg(port: int, upstream_port: int) -> str:
    return (
        f"{HAPROXY_COMMON}"
        "frontend inbound\n"
        f"    bind {HOST}:{port}\n"
        f"{HAPROXY_REQUEST_HEADERS}"
        "    default_backend app\n"
        "backend app\n"
        f"    server app1 {HOST}:{upstream_port}\n"
    )


def _haproxy_host_match(pattern: str) -> str:
    """An ACL body matching the Host header as a Pillion `match.host` pattern does (case-insensitively;
    the header's port compared only when the pattern has one; `*.x` = any name ending in `.x`)."""
    if ":" in pattern:
        return f"req.hdr(host) -i {pattern}"
    if pattern.startswith("*."):
        return f"req.hdr(host),field(1,:) -i -m end {pattern[1:]}"
    return f"req.hdr(host),field(1,:) -i {pattern}"


def haproxy_outbound_cfg(port: int, upstream_port: int) -> str:
    """HAProxy doing the `pillion-outbound` job (see bench/README.md for what is and is not equivalent).

    Host routing: one ACL per Host pattern on the header's name part (`field(1,:)`, so the port is ignored
    as Pillion ignores it for a pattern without one), `use_backend` per host in Pillion's route order and
    a 404 for no match. Retries: `retries 2` + `retry-on` (L7 retries, which buffer the request like
    Pillion's replay buffer). Circuit breaker: the server's `maxconn`/`maxqueue`. Outlier detection:
    `observe layer7 error-limit 5 on-error mark-down`, which HAProxy only allows with `check`; the active
    check is a TCP connect to HAProxy's own listener (`port`), not to the upstream, so it never touches the
    upstream (whose connection counters are the keep-alive sanity check) and a marked-down server comes
    back after `rise 2` x `downinter 15s` = 30 s, like Pillion's `base_ejection: 30s`.
    """
    hosts = (*DECOY_HOSTS, ("app", HOST))
    acls = "".join(f"    acl host_{name} {_haproxy_host_match(pattern)}\n" for name, pattern in hosts)
    use = "".join(f"    use_backend {name} if host_{name}\n" for name, _ in hosts)
    decoys = "".join(f"backend {name}\n    server {name}1 {DECOY}\n" for name, _ in DECOY_HOSTS)
    return (
        f"{HAPROXY_COMMON}"
        "frontend outbound\n"
        f"    bind {HOST}:{port}\n"
        f"{HAPROXY_REQUEST_HEADERS}"
        f"{acls}{use}"
        "    default_backend no_route\n"
        "backend app\n"
        "    retries 2\n"
        # HAProxy 2.6 has no `5xx` word: these are every 5xx status it can retry on.
        "    retry-on 500 501 502 503 504 conn-failure empty-response junk-response response-timeout\n"
        "    option redispatch\n"
        # Pillion replays only idempotent methods once the app may have seen the request; connect
        # failures stay retriable in both (disable-l7-retry keeps HAProxy's connection retries).
        "    http-request disable-l7-retry unless METH_GET || METH_OPTIONS || METH_TRACE || METH_PUT"
        " || METH_DELETE\n"
        f"    server app1 {HOST}:{upstream_port} maxconn 1024 maxqueue 1024"
        f" check port {port} inter 10s downinter 15s rise 2 observe layer7 error-limit 5 on-error mark-down\n"
        f"{decoys}"
        "backend no_route\n"
        '    http-request return status 404 content-type text/plain string "no route"\n'
    )


def pillion_yaml(
    port: int,
    admin_port: int,
    upstream_port: int,
    access_log: Path | None,
    *,
    metrics: bool = True,
    otlp_endpoint: str | None = None,
) -> str:
    """The plain Pillion rows' config: `pillion` with the defaults; `access_log` writes the access log to
    that file, `metrics=False` turns metrics off and `otlp_endpoint` turns tracing on (TRACE_SAMPLING)."""
    log = (
        "{enabled: false}"
        if access_log is None
        else f"{{enabled: true, path: {json.dumps(str(access_log))}}}"
    )
    extra = "" if metrics else "metrics: {enabled: false}\n"
    if otlp_endpoint is not None:
        extra += f"tracing: {{otlp_endpoint: {json.dumps(otlp_endpoint)}, sampling: {TRACE_SAMPLING:g}}}\n"
    return (
        "service: bench\n"
        f"admin: {{address: {HOST}:{admin_port}}}\n"
        "listeners:\n"
        "  - name: inbound\n"
        f"    address: {HOST}:{port}\n"
        "    protocol: http\n"
        f"    limits: {{request_headers_timeout: {PILLION_HEADERS_TIMEOUT_S:g}s}}\n"
        "    routes:\n"
        "      - match: {prefix: /}\n"
        "        cluster: app\n"
        "clusters:\n"
        "  - name: app\n"
        f"    endpoints: [{HOST}:{upstream_port}]\n"
        "    connect_timeout: 1s\n"
        f"access_log: {log}\n"
        f"{extra}"
    )


def pillion_outbound_yaml(port: int, admin_port: int, upstream_port: int) -> str:
    """Pillion as an outbound sidecar: host routing past three routes that do not match, retries, a circuit
    breaker and outlier detection on the cluster that serves; metrics on (always), access log off."""
    decoy_routes = "".join(
        f"      - name: {name}\n        match: {{host: {json.dumps(pattern)}}}\n        cluster: {name}\n"
        for name, pattern in DECOY_HOSTS
    )
    decoy_clusters = "".join(
        f"  - name: {name}\n    endpoints: [{DECOY}]\n    connect_timeout: 1s\n" for name, _ in DECOY_HOSTS
    )
    return (
        "service: bench\n"
        f"admin: {{address: {HOST}:{admin_port}}}\n"
        "listeners:\n"
        "  - name: outbound\n"
        f"    address: {HOST}:{port}\n"
        "    protocol: http\n"
        "    routes:\n"
        f"{decoy_routes}"
        "      - name: app\n"
        f'        match: {{host: "{HOST}"}}\n'
        "        cluster: app\n"
        "        retries: {attempts: 2, on: [5xx, connect-failure, reset]}\n"
        "clusters:\n"
        "  - name: app\n"
        f"    endpoints: [{HOST}:{upstream_port}]\n"
        "    connect_timeout: 1s\n"
        "    circuit_breaker:\n"
        "      {max_connections: 1024, max_pending: 1024, max_requests: 1024, max_retries: 3}\n"
        "    outlier_detection: {consecutive_5xx: 5, base_ejection: 30s}\n"
        f"{decoy_clusters}"
        "access_log: {enabled: false}\n"
    )


def _dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _start(
    group: ProcGroup,
    target: Target,
    *,
    argv: list[str],
    log: Path,
    cpu: int,
    ready_port: int,
    ready_path: str,
    timeout: float,
) -> Target:
    """Spawn, then wait for readiness; on any failure record it on the target and stop the process."""
    try:
        target.proc = group.spawn(target.key, argv, log, cpu)
    except OSError as exc:
        target.error = f"cannot execute {argv[0]}: {exc}"
        return target
    try:
        wait_http(HOST, ready_port, ready_path, timeout, target.proc)
    except RuntimeError as exc:
        target.fail(str(exc))
        group.stop(target.proc)
    return target


def start_upstream(group: ProcGroup, tmp: Path, cpu: int, timeout: float) -> Target:
    root = _dir(tmp, "upstream")
    target = Target("upstream", free_port())
    conf = root / "nginx.conf"
    conf.write_text(upstream_conf(root, target.port))
    argv = ["nginx", "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    return _start(
        group,
        target,
        argv=argv,
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.port,
        ready_path="/",
        timeout=timeout,
    )


def start_haproxy(
    group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float, *, outbound: bool = False
) -> Target:
    key = "haproxy-outbound" if outbound else "haproxy"
    root = _dir(tmp, key)
    target = Target(key, free_port())
    cfg = root / "haproxy.cfg"
    make = haproxy_outbound_cfg if outbound else haproxy_cfg
    cfg.write_text(make(target.port, upstream_port))
    argv = ["haproxy", "-db", "-f", str(cfg)]
    return _start(
        group,
        target,
        argv=argv,
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.port,
        ready_path="/",
        timeout=timeout,
    )


def start_nginx(group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float) -> Target:
    root = _dir(tmp, "nginx-proxy")
    target = Target("nginx", free_port())
    conf = root / "nginx.conf"
    conf.write_text(nginx_proxy_conf(root, target.port, upstream_port))
    argv = ["nginx", "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    return _start(
        group,
        target,
        argv=argv,
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.port,
        ready_path="/",
        timeout=timeout,
    )


def minimal_argv(
    python: str, port: int, upstream_port: int, *, tls_in: Svid | None = None, tls_out: Svid | None = None
) -> list[str]:
    """The minimal proxy's command; `tls_in`/`tls_out`: mutual TLS with that SVID towards clients/upstream."""
    argv = [python, str(MINIMAL_PROXY), str(port), str(upstream_port)]
    for flag, svid in (("--tls-in", tls_in), ("--tls-out", tls_out)):
        if svid is not None:
            argv += [flag, str(svid.cert), str(svid.key), str(svid.bundle)]
    return argv


def start_minimal(
    group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float, *, python: str
) -> Target:
    """The calibration proxy; `python` must have uvloop and httptools (the harness passes sys.executable)."""
    root = _dir(tmp, "minimal")
    target = Target("minimal", free_port())
    return _start(
        group,
        target,
        argv=minimal_argv(python, target.port, upstream_port),
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.port,
        ready_path="/",
        timeout=timeout,
    )


def collector_argv(python: str, port: int) -> list[str]:
    return [python, str(COLLECTOR), str(port)]


def collector_url(port: int) -> str:
    return f"http://{HOST}:{port}/v1/traces"


def start_collector(group: ProcGroup, tmp: Path, cpu: int, timeout: float, *, python: str) -> Target:
    """The OTLP collector `pillion-full` exports to, pinned to `cpu` (the load core); `python` must import
    pillion.testing.collector (the harness passes sys.executable)."""
    root = _dir(tmp, "collector")
    target = Target("collector", free_port())
    return _start(
        group,
        target,
        argv=collector_argv(python, target.port),
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.port,
        ready_path="/stats",
        timeout=timeout,
    )


def _pillion_config(target: Target, upstream_port: int) -> str:
    assert target.admin_port is not None
    if target.key == "pillion-outbound":
        return pillion_outbound_yaml(target.port, target.admin_port, upstream_port)
    return pillion_yaml(
        target.port,
        target.admin_port,
        upstream_port,
        target.access_log,
        metrics=target.key != "pillion-off",
        otlp_endpoint=None if target.collector_port is None else collector_url(target.collector_port),
    )


def start_pillion(
    group: ProcGroup,
    tmp: Path,
    cpu: int,
    upstream_port: int,
    timeout: float,
    *,
    pillion: str,
    key: str,
    collector: Target | None = None,
) -> Target:
    """`pillion`, `pillion-off`, `pillion-outbound`, or `pillion-full`, which needs the running `collector`
    (without one it is returned FAILED, not started)."""
    root = _dir(tmp, key)
    admin_port = free_port()
    target = Target(key, free_port(), admin_port=admin_port)
    if key == "pillion-full":
        if collector is None or collector.error is not None:
            why = collector.error if collector is not None else "not started"
            target.error = f"the OTLP collector (bench/collector.py) is not running: {why}"
            return target
        target.access_log = root / "access.log"
        target.collector_port = collector.port
    cfg = root / "bench.yaml"
    cfg.write_text(_pillion_config(target, upstream_port))
    argv = [pillion, "run", "-c", str(cfg)]
    return _start(
        group,
        target,
        argv=argv,
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=admin_port,
        ready_path="/ready",
        timeout=timeout,
    )


def check_forwarding(target: Target) -> None:
    """GET / must return the upstream's body; GET /__xff records the X-Forwarded-For the upstream saw. The
    outbound rows must answer 404 for an unknown Host, and `pillion-off` must really have metrics off."""
    try:
        status, body = http_get(HOST, target.port, "/")
        if status != 200 or body != BODY:
            target.fail(f"GET / answered {status} {body[:200]!r}, expected 200 {BODY!r}")
            return
        status, body = http_get(HOST, target.port, "/__xff")
        target.xff_seen = body.decode(errors="replace") if status == 200 else f"(HTTP {status})"
        _check_request_headers(target)
        if target.key in OUTBOUND_KEYS:
            # The host routing is really in force: a Host no route takes must not reach the upstream.
            status, body = http_get(HOST, target.port, "/", headers={"Host": NO_ROUTE_HOST})
            if status != 404:
                target.fail(f"GET / with Host {NO_ROUTE_HOST} answered {status} {body[:200]!r}, expected 404")
        if target.key == "pillion-off":
            _check_metrics_off(target)
    except OSError as exc:
        target.fail(f"GET {target.url} failed: {type(exc).__name__}: {exc}")


def _check_request_headers(target: Target) -> None:
    """Every proxy but the minimal one does the same per-request header work (an x-request-id made when
    the client sent none, x-forwarded-proto), so the CPU rows compare like with like."""
    status, body = http_get(HOST, target.port, "/__ids")
    target.ids_seen = body.decode(errors="replace") if status == 200 else f"(HTTP {status})"
    request_id, _, proto = target.ids_seen.partition(" ")
    if target.key not in ("upstream", "minimal") and (len(request_id) < 16 or proto != "http"):
        target.fail(f"the upstream saw x-request-id/x-forwarded-proto {target.ids_seen!r}, expected both")


def _check_metrics_off(target: Target) -> None:
    """Metrics are really off: the admin /metrics answers 404 with `x-pillion-error: metrics_disabled`."""
    assert target.admin_port is not None
    status, headers, _ = http_exchange(HOST, target.admin_port, "/metrics")
    reason = headers.get("x-pillion-error")
    target.metrics_probe = f"GET /metrics answered {status} with x-pillion-error: {reason or '(none)'}"
    if status != 404 or reason != "metrics_disabled":
        target.fail(f"metrics are not off: {target.metrics_probe}, expected 404 metrics_disabled")


def upstream_status(port: int) -> tuple[int, int] | None:
    """(accepted connections, requests) from the upstream's stub_status, or None if unreadable."""
    try:
        status, body = http_get(HOST, port, "/__status")
        if status != 200:
            return None
        # Active connections: 1 \n server accepts handled requests \n 10 10 20 \n Reading: ...
        accepts, _handled, requests = (int(x) for x in body.decode().splitlines()[2].split())
        return accepts, requests
    except (OSError, ValueError, IndexError):
        return None


# ---- the mTLS pairs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Svid:
    """One workload's identity files, as `pillion ca issue` writes them, plus `combined` (certificate then
    key in one file, which is what HAProxy's `crt` takes)."""

    cert: Path
    key: Path
    bundle: Path
    combined: Path


@dataclass(frozen=True)
class Identities:
    """SVIDs for A and B from one throw-away CA (bench.local), made fresh for each run."""

    a: Svid
    b: Svid

    def client_context(self, *, certificate: bool = True) -> ssl.SSLContext:
        """The harness's TLS client towards a B: trusts the bundle, presents A's SVID (or no certificate, to
        see B refuse), and checks no host name (an SVID names a workload, not a host)."""
        ctx = ssl.create_default_context(cafile=str(self.a.bundle))
        ctx.check_hostname = False
        if certificate:
            ctx.load_cert_chain(self.a.cert, self.a.key)
        return ctx


def make_identities(tmp: Path, pillion: str, timeout: float = 30.0) -> Identities:
    """`pillion ca init` and two `pillion ca issue` under tmp/mtls; RuntimeError with the output if any
    fails. The CLI (not pillion.tls.ca) so the harness needs nothing from Pillion's package."""
    root = _dir(tmp, "mtls")
    ca = root / "ca"
    steps = [[pillion, "ca", "init", "--dir", str(ca)]]
    for name, spiffe_id in (("a", SPIFFE_A), ("b", SPIFFE_B)):
        steps.append(
            [pillion, "ca", "issue", "--ca", str(ca), "--spiffe-id", spiffe_id, "--out", str(root / name)]
        )
    for argv in steps:
        what = " ".join(argv[1:3])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{what} failed: {exc}") from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).strip()
            raise RuntimeError(f"{what} exited {done.returncode}" + (f":\n{out}" if out else ""))
    svids = []
    for name in ("a", "b"):
        d = root / name
        combined = root / f"{name}.pem"
        combined.write_text((d / "cert.pem").read_text() + (d / "key.pem").read_text())
        combined.chmod(0o600)
        svids.append(Svid(d / "cert.pem", d / "key.pem", d / "bundle.pem", combined))
    return Identities(*svids)


def _identity_yaml(svid: Svid) -> str:
    return (
        "identity:\n"
        f"  cert: {json.dumps(str(svid.cert))}\n"
        f"  key: {json.dumps(str(svid.key))}\n"
        f"  trust_bundle: {json.dumps(str(svid.bundle))}\n"
    )


def pillion_mtls_client_yaml(port: int, admin_port: int, server_port: int, svid: Svid) -> str:
    """Sidecar A: the app's plaintext calls on an outbound listener, to cluster `b` over mTLS, where B must
    present the SVID SPIFFE_B."""
    return (
        "service: bench-a\n"
        f"admin: {{address: {HOST}:{admin_port}}}\n" + _identity_yaml(svid) + "listeners:\n"
        "  - name: outbound\n"
        f"    address: {HOST}:{port}\n"
        "    protocol: http\n"
        "    direction: outbound\n"
        "    routes:\n"
        "      - match: {prefix: /}\n"
        "        cluster: b\n"
        "clusters:\n"
        "  - name: b\n"
        f"    endpoints: [{HOST}:{server_port}]\n"
        "    connect_timeout: 1s\n"
        f"    tls: {{mode: mesh, peer: {json.dumps(SPIFFE_B)}}}\n"
        "access_log: {enabled: false}\n"
    )


def pillion_mtls_server_yaml(port: int, admin_port: int, upstream_port: int, svid: Svid) -> str:
    """Sidecar B: an mTLS-only (`strict`) inbound listener in front of the upstream, plaintext to it."""
    return (
        "service: bench-b\n"
        f"admin: {{address: {HOST}:{admin_port}}}\n" + _identity_yaml(svid) + "listeners:\n"
        "  - name: inbound\n"
        f"    address: {HOST}:{port}\n"
        "    protocol: http\n"
        "    tls: {mode: strict}\n"
        "    routes:\n"
        "      - match: {prefix: /}\n"
        "        cluster: app\n"
        "clusters:\n"
        "  - name: app\n"
        f"    endpoints: [{HOST}:{upstream_port}]\n"
        "    connect_timeout: 1s\n"
        "access_log: {enabled: false}\n"
    )


HAPROXY_TLS_GLOBAL = (
    "    ssl-default-bind-options ssl-min-ver TLSv1.2\n"
    f"    ssl-default-bind-ciphers {TLS12_CIPHERS}\n"
    "    ssl-default-server-options ssl-min-ver TLSv1.2\n"
    f"    ssl-default-server-ciphers {TLS12_CIPHERS}\n"
)


def haproxy_mtls_client_cfg(port: int, server_port: int, svid: Svid) -> str:
    """HAProxy A: plaintext in, mTLS to B presenting A's SVID. `verify required` + `ca-file` checks B's
    chain only: no `sni`, so no name check (`verifyhost` compares DNS names/CN, never a URI SAN)."""
    return (
        f"{HAPROXY_GLOBAL}{HAPROXY_TLS_GLOBAL}{HAPROXY_DEFAULTS}"
        "frontend outbound\n"
        f"    bind {HOST}:{port}\n"
        f"{HAPROXY_REQUEST_HEADERS}"
        "    default_backend b\n"
        "backend b\n"
        f"    server b1 {HOST}:{server_port} ssl verify required ca-file {svid.bundle} crt {svid.combined}\n"
    )


def haproxy_mtls_server_cfg(port: int, upstream_port: int, svid: Svid) -> str:
    """HAProxy B: terminates mTLS (a client certificate chaining to the bundle required), plaintext on."""
    return (
        f"{HAPROXY_GLOBAL}{HAPROXY_TLS_GLOBAL}{HAPROXY_DEFAULTS}"
        "frontend inbound\n"
        f"    bind {HOST}:{port} ssl crt {svid.combined} ca-file {svid.bundle} verify required\n"
        f"{HAPROXY_REQUEST_HEADERS}"
        "    default_backend app\n"
        "backend app\n"
        f"    server app1 {HOST}:{upstream_port}\n"
    )


@dataclass
class Pair:
    """Two sidecars in a row: `client` (A, where the load goes) and `server` (B, in front of the upstream).
    What check_pair saw is kept for the report."""

    key: str
    client: Target
    server: Target
    error: str | None = None
    xff_seen: str | None = None
    xfcc_seen: str | None = None
    ids_seen: str | None = None  # "<x-request-id> <x-forwarded-proto>" as the upstream saw them
    tls_seen: str | None = None
    refusals: str | None = None

    @property
    def label(self) -> str:
        return MTLS_LABELS[self.key]

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def sides(self) -> tuple[Target, Target]:
        return self.client, self.server

    def fail(self, reason: str) -> None:
        tails = [f"--- {t.label} log tail ---\n{t.proc.tail()}" for t in self.sides if t.proc is not None]
        self.error = "\n".join([reason, *(x for x in tails if not x.endswith("---\n"))])


def _start_pair(
    group: ProcGroup,
    pair: Pair,
    argvs: tuple[list[str], list[str]],
    root: Path,
    *,
    cpu: int,
    timeout: float,
    ids: Identities,
    env: dict[str, str] | None = None,
) -> Pair:
    """Spawn B and A (with `env`, if given, as their whole environment), then wait for B (a TLS GET with
    A's certificate) and A (a plain GET through both); on a failure the pair carries the reason and both
    logs, and both are stopped."""
    for side, argv, name in ((pair.server, argvs[1], "b"), (pair.client, argvs[0], "a")):
        try:
            side.proc = group.spawn(side.key, argv, root / f"{name}.log", cpu, env=env)
        except OSError as exc:
            pair.error = f"cannot execute {argv[0]}: {exc}"
            stop_pair(group, pair)
            return pair
    assert pair.server.proc is not None and pair.client.proc is not None
    try:
        wait_http(HOST, pair.server.port, "/", timeout, pair.server.proc, context=ids.client_context())
        wait_http(HOST, pair.client.port, "/", timeout, pair.client.proc)
    except RuntimeError as exc:
        pair.fail(str(exc))
        stop_pair(group, pair)
    return pair


def stop_pair(group: ProcGroup, pair: Pair) -> None:
    for side in pair.sides:
        if side.proc is not None:
            group.stop(side.proc)


def start_pillion_pair(
    group: ProcGroup,
    tmp: Path,
    cpu: int,
    upstream_port: int,
    timeout: float,
    *,
    pillion: str,
    ids: Identities,
    env: dict[str, str] | None = None,
) -> Pair:
    root = _dir(tmp, "pillion-mtls")
    a = Target("pillion-mtls-a", free_port(), admin_port=free_port())
    b = Target("pillion-mtls-b", free_port(), admin_port=free_port())
    assert a.admin_port is not None and b.admin_port is not None
    (root / "a.yaml").write_text(pillion_mtls_client_yaml(a.port, a.admin_port, b.port, ids.a))
    (root / "b.yaml").write_text(pillion_mtls_server_yaml(b.port, b.admin_port, upstream_port, ids.b))
    argvs = ([pillion, "run", "-c", str(root / "a.yaml")], [pillion, "run", "-c", str(root / "b.yaml")])
    return _start_pair(
        group, Pair("pillion-mtls", a, b), argvs, root, cpu=cpu, timeout=timeout, ids=ids, env=env
    )


def start_haproxy_pair(
    group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float, *, ids: Identities
) -> Pair:
    root = _dir(tmp, "haproxy-mtls")
    a = Target("haproxy-mtls-a", free_port())
    b = Target("haproxy-mtls-b", free_port())
    (root / "a.cfg").write_text(haproxy_mtls_client_cfg(a.port, b.port, ids.a))
    (root / "b.cfg").write_text(haproxy_mtls_server_cfg(b.port, upstream_port, ids.b))
    argvs = (["haproxy", "-db", "-f", str(root / "a.cfg")], ["haproxy", "-db", "-f", str(root / "b.cfg")])
    return _start_pair(group, Pair("haproxy-mtls", a, b), argvs, root, cpu=cpu, timeout=timeout, ids=ids)


def start_minimal_pair(
    group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float, *, python: str, ids: Identities
) -> Pair:
    """The calibration pair: two minimal proxies (`python` must have uvloop and httptools), A originating
    mutual TLS to B, B terminating it in front of the upstream."""
    root = _dir(tmp, "minimal-mtls")
    a = Target("minimal-mtls-a", free_port())
    b = Target("minimal-mtls-b", free_port())
    argvs = (
        minimal_argv(python, a.port, b.port, tls_out=ids.a),
        minimal_argv(python, b.port, upstream_port, tls_in=ids.b),
    )
    return _start_pair(group, Pair("minimal-mtls", a, b), argvs, root, cpu=cpu, timeout=timeout, ids=ids)


def _refused(port: int, context: ssl.SSLContext | None) -> str | None:
    """How B refused a GET (plaintext, or TLS without a client certificate); None if it answered one."""
    try:
        status, _ = http_get(HOST, port, "/", context=context)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__ + (
            f" ({exc.reason})" if isinstance(exc, ssl.SSLError) and exc.reason else ""
        )
    del status
    return None


def check_pair(pair: Pair, ids: Identities) -> None:
    """The pair forwards (GET / through A returns the upstream's body) and B is really mTLS-only: it
    answers a TLS client presenting A's SVID, and refuses plaintext and a TLS client without a
    certificate. For Pillion, the upstream must also see B's x-forwarded-client-cert naming A; for every
    pair but the minimal one (the floor adds neither), an x-request-id and x-forwarded-proto https."""
    try:
        status, body = http_get(HOST, pair.client.port, "/")
        if status != 200 or body != BODY:
            pair.fail(f"GET / through A answered {status} {body[:200]!r}, expected 200 {BODY!r}")
            return
        pair.xff_seen = http_get(HOST, pair.client.port, "/__xff")[1].decode(errors="replace")
        pair.xfcc_seen = http_get(HOST, pair.client.port, "/__xfcc")[1].decode(errors="replace")
        pair.ids_seen = http_get(HOST, pair.client.port, "/__ids")[1].decode(errors="replace")
        pair.tls_seen = tls_session(HOST, pair.server.port, ids.client_context())
    except OSError as exc:
        pair.fail(f"probing the pair failed: {type(exc).__name__}: {exc}")
        return
    if pair.key == "pillion-mtls" and not (
        f"By={SPIFFE_B};" in pair.xfcc_seen and pair.xfcc_seen.endswith(f";URI={SPIFFE_A}")
    ):
        pair.fail(f"the upstream saw x-forwarded-client-cert {pair.xfcc_seen!r}, expected B's naming A")
        return
    request_id, _, proto = pair.ids_seen.partition(" ")
    if pair.key != "minimal-mtls" and (len(request_id) < 16 or proto != "https"):
        pair.fail(f"the upstream saw x-request-id/x-forwarded-proto {pair.ids_seen!r}, expected id and https")
        return
    plain = _refused(pair.server.port, None)
    anonymous = _refused(pair.server.port, ids.client_context(certificate=False))
    if plain is None or anonymous is None:
        which = "plaintext" if plain is None else "TLS without a client certificate"
        pair.fail(f"B answered a GET over {which}: it is not mTLS-only")
        return
    pair.refusals = f"plaintext: {plain}; TLS without a client certificate: {anonymous}"
