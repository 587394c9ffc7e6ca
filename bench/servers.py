"""The servers under test: one upstream and five reverse proxies in front of it, all started as children.

Theory of operation: each server gets a directory of its own under the run's temporary directory, holding
its generated configuration, its log (stdout+stderr) and, for nginx, its pid and temp paths -- nothing
touches /etc, /var or /run. Ports are picked free at start. Every server runs in the foreground
(`daemon off`, `haproxy -db`, `pillion run`, the calibration script) pinned with `taskset` to the server
core, single-threaded:

  * upstream  -- nginx, `master_process off` (one process), `return 200 "hello world\\n"` on `/`, an echo of
    the X-Forwarded-For it received on `/__xff`, and `stub_status` on `/__status` so the harness can count
    the connections and requests the upstream saw (the proof that the proxies reuse upstream connections).
  * haproxy   -- `nbthread 1`, HTTP mode, keep-alive both sides, `http-reuse always`, `option forwardfor`,
    no `log` line.
  * nginx     -- master + `worker_processes 1`, `upstream { keepalive 64; }`, HTTP/1.1 to the upstream with
    `Connection ""`, X-Forwarded-For added, `access_log off`.
  * minimal   -- bench/minimal_proxy.py run by the harness's own interpreter (the project venv, which has
    uvloop and httptools): the smallest uvloop + httptools keep-alive proxy, X-Forwarded-For added, no
    config, no log. It is the calibration row: about the floor for a Python proxy on this runtime,
    so the report can split Pillion's cost into the runtime's share and Pillion's own. Ready when GET /
    answers through it.
  * pillion   -- `pillion run -c bench.yaml`, metrics on (always), access log off; `pillion-log` is the same
    with the access log written to a file. Readiness is the admin server's `GET /ready`.

Both nginx instances and the proxy nginx's clients get `keepalive_requests 1000000`, so no server closes a
benchmark connection every 1000 requests (nginx's default) while the others keep theirs.

A server that fails to start (cannot be executed, exits, or is not ready in time) does not stop the run:
its `Target` carries `error` (reason + log tail) and the report shows the row as FAILED.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from procs import Proc, ProcGroup, free_port, http_get, wait_http

HOST = "127.0.0.1"
BODY = b"hello world\n"
MINIMAL_PROXY = Path(__file__).resolve().parent / "minimal_proxy.py"

# Stable keys (JSON, --only) and the labels the report prints.
LABELS: dict[str, str] = {
    "upstream": "upstream (direct)",
    "haproxy": "HAProxy",
    "nginx": "nginx",
    "minimal": "minimal uvloop+httptools proxy (calibration)",
    "pillion": "Pillion (metrics on, access log off)",
    "pillion-log": "Pillion (access log on)",
}
TARGET_KEYS: tuple[str, ...] = tuple(LABELS)


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

    @property
    def label(self) -> str:
        return LABELS[self.key]

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
        + "            proxy_connect_timeout 1s;\n"
        + "        }\n"
        + "    }\n"
        + "}\n"
    )


def haproxy_cfg(port: int, upstream_port: int) -> str:
    return (
        "global\n"
        "    nbthread 1\n"
        "    maxconn 4096\n"
        "defaults\n"
        "    mode http\n"
        "    option http-keep-alive\n"
        "    option forwardfor\n"
        "    http-reuse always\n"
        "    timeout connect 1s\n"
        "    timeout client 300s\n"
        "    timeout server 300s\n"
        "    timeout http-keep-alive 300s\n"
        "frontend inbound\n"
        f"    bind {HOST}:{port}\n"
        "    default_backend app\n"
        "backend app\n"
        f"    server app1 {HOST}:{upstream_port}\n"
    )


def pillion_yaml(port: int, admin_port: int, upstream_port: int, access_log: Path | None) -> str:
    log = (
        "{enabled: false}"
        if access_log is None
        else f"{{enabled: true, path: {json.dumps(str(access_log))}}}"
    )
    return (
        "service: bench\n"
        f"admin: {{address: {HOST}:{admin_port}}}\n"
        "listeners:\n"
        "  - name: inbound\n"
        f"    address: {HOST}:{port}\n"
        "    protocol: http\n"
        "    routes:\n"
        "      - match: {prefix: /}\n"
        "        cluster: app\n"
        "clusters:\n"
        "  - name: app\n"
        f"    endpoints: [{HOST}:{upstream_port}]\n"
        "    connect_timeout: 1s\n"
        f"access_log: {log}\n"
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


def start_haproxy(group: ProcGroup, tmp: Path, cpu: int, upstream_port: int, timeout: float) -> Target:
    root = _dir(tmp, "haproxy")
    target = Target("haproxy", free_port())
    cfg = root / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(target.port, upstream_port))
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


def minimal_argv(python: str, port: int, upstream_port: int) -> list[str]:
    return [python, str(MINIMAL_PROXY), str(port), str(upstream_port)]


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


def start_pillion(
    group: ProcGroup,
    tmp: Path,
    cpu: int,
    upstream_port: int,
    timeout: float,
    *,
    pillion: str,
    access_log: bool,
) -> Target:
    key = "pillion-log" if access_log else "pillion"
    root = _dir(tmp, key)
    target = Target(key, free_port(), admin_port=free_port())
    target.access_log = root / "access.log" if access_log else None
    assert target.admin_port is not None
    cfg = root / "bench.yaml"
    cfg.write_text(pillion_yaml(target.port, target.admin_port, upstream_port, target.access_log))
    argv = [pillion, "run", "-c", str(cfg)]
    return _start(
        group,
        target,
        argv=argv,
        log=root / "stdout.log",
        cpu=cpu,
        ready_port=target.admin_port,
        ready_path="/ready",
        timeout=timeout,
    )


def check_forwarding(target: Target) -> None:
    """GET / must return the upstream's body; GET /__xff records the X-Forwarded-For the upstream saw."""
    try:
        status, body = http_get(HOST, target.port, "/")
        if status != 200 or body != BODY:
            target.fail(f"GET / answered {status} {body[:200]!r}, expected 200 {BODY!r}")
            return
        status, body = http_get(HOST, target.port, "/__xff")
        target.xff_seen = body.decode(errors="replace") if status == 200 else f"(HTTP {status})"
    except OSError as exc:
        target.fail(f"GET {target.url} failed: {type(exc).__name__}: {exc}")


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
