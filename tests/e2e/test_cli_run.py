"""`pillion run` and `pillion demo` as real subprocesses: lifecycle, memory, metrics, access log."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvloop

from pillion.config import load_config_text
from pillion.testing.http import ClientConnection, http_request
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.tools import require_tool
from pillion.testing.upstream import ScriptableUpstream, pattern_sha256
from pillion.tls.loading import tls_uses

HOST = "127.0.0.1"
PILLION = [sys.executable, "-m", "pillion"]


def write_config(tmp_path: Path, upstream: str, *, extra: str = "") -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    path = tmp_path / "pillion.yaml"
    path.write_text(
        f"""
service: e2e
admin: {{address: "127.0.0.1:{admin}"}}
drain_timeout: 5s
listeners:
  - name: inbound
    address: "127.0.0.1:{port}"
    routes:
      - match: {{prefix: /}}
        cluster: app
clusters:
  - name: app
    endpoints: ["{upstream}"]
{extra}
"""
    )
    return path, port, admin


@asynccontextmanager
async def running_pillion(
    tmp_path: Path, *, extra: str = ""
) -> AsyncIterator[tuple[ScriptableUpstream, subprocess.Popen[bytes], int, int]]:
    """A scriptable upstream and `pillion run` in front of it, ready: (upstream, process, port, admin)."""
    async with ScriptableUpstream() as up:
        cfg, port, admin = write_config(tmp_path, up.address, extra=extra)
        async with ProcessRunner(
            [*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready"
        ) as proc:
            assert proc.popen is not None
            yield up, proc.popen, port, admin


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_10kib_request_costs_less_than_100_times_its_size(tmp_path: Path) -> None:
    """The issue's memory bound, on the real process: 200 requests with 10 KiB heads held in flight
    (the upstream answers after a delay), then 200 connections holding 10 KiB of an unfinished head."""
    count, size = 200, 10 * 1024
    fields = b"".join(b"x-pad-%03d: %b\r\n" % (i, b"v" * 1012) for i in range(10))
    assert len(fields) >= size

    async def main() -> None:
        async with running_pillion(tmp_path) as (up, popen, port, _):
            writers: list[asyncio.StreamWriter] = []
            try:
                before = rss_kib(popen.pid)
                for _ in range(count):
                    _, w = await asyncio.open_connection(HOST, port)
                    w.write(b"GET /delay/5 HTTP/1.1\r\nhost: x\r\n%b\r\n" % fields)
                    writers.append(w)
                await up.wait_for_requests(count, time_limit=10.0)
                whole = (rss_kib(popen.pid) - before) / count
                before = rss_kib(popen.pid)
                for _ in range(count):
                    _, w = await asyncio.open_connection(HOST, port)
                    w.write(b"GET /partial HTTP/1.1\r\nhost: x\r\n%b" % fields)  # no blank line: unfinished
                    writers.append(w)
                for w in writers[count:]:
                    await w.drain()
                await asyncio.sleep(0.5)  # (nothing to wait on: the proxy reads them into its buffers)
                partial = (rss_kib(popen.pid) - before) / count
                print(f"RSS per 10 KiB request: {whole:.1f} KiB in flight, {partial:.1f} KiB unfinished")
                assert whole < 100 * 10 and partial < 100 * 10, (whole, partial)
                assert len(up.requests) == count  # the unfinished heads never went upstream
            finally:
                for w in writers:
                    w.close()

    uvloop.run(main())


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_pillion(tmp_path) as (up, popen, port, _):
            async with await ClientConnection.open(HOST, port) as conn:
                in_flight = asyncio.ensure_future(conn.request("GET", "/delay/1"))
                await up.wait_for_requests(1)
                popen.send_signal(signal.SIGTERM)
                r = await in_flight
                assert r.status == 200 and r.text == "GET /delay/1\n"
                assert r.header("connection") == "close"
            code = await asyncio.to_thread(popen.wait, 10)
            assert code == 0
            # New connections are refused once draining began.
            try:
                await http_request(HOST, port, "GET", "/", time_limit=1)
                raise AssertionError("listener still accepting after exit")
            except OSError:
                pass

    uvloop.run(main())


def test_quitquitquit_exits_0(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_pillion(tmp_path) as (_, popen, _, admin):
            r = await http_request(HOST, admin, "POST", "/quitquitquit")
            assert r.status == 200
            assert await asyncio.to_thread(popen.wait, 10) == 0

    uvloop.run(main())


def test_300mb_download_keeps_rss_under_80mb(tmp_path: Path) -> None:
    size = 300 * 1000 * 1000

    async def main() -> None:
        async with running_pillion(tmp_path) as (_, popen, port, _):
            pid = popen.pid
            peak = rss_kib(pid)
            download = asyncio.ensure_future(
                http_request(HOST, port, "GET", f"/bytes/{size}", store_body=False, time_limit=120)
            )
            while not download.done():
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.02)
            r = download.result()
            assert r.status == 200 and r.body_length == size and r.body_sha256 == pattern_sha256(size)
            peak = max(peak, rss_kib(pid))
            assert peak < 80 * 1024, f"peak RSS {peak} KiB"

    uvloop.run(main())


def test_live_metrics_pass_promtool_and_access_log_is_json(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    log_path = tmp_path / "access.log"

    async def main() -> str:
        extra = f'access_log: {{enabled: true, path: "{log_path}"}}\n'
        async with running_pillion(tmp_path, extra=extra) as (_, _, port, admin):
            for path in ("/a", "/status/503", "/b?q=1"):
                await http_request(HOST, port, "GET", path, headers=[("x-request-id", f"id{path}")])
            return (await http_request(HOST, admin, "GET", "/metrics")).text

    metrics = uvloop.run(main())
    assert (
        'pillion_http_requests_total{listener="inbound",route="route0",cluster="app",code="503"} 1' in metrics
    )
    check = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(x["path"], x["status"], x["request_id"]) for x in lines] == [
        ("/a", 200, "id/a"),
        ("/status/503", 503, "id/status/503"),
        ("/b?q=1", 200, "id/b?q=1"),
    ]
    for field in ("method", "bytes_sent", "duration_ms", "upstream", "error", "upstream_duration_ms"):
        assert field in lines[0]
    assert 0 < lines[0]["upstream_duration_ms"] <= lines[0]["duration_ms"]


def test_unreadable_identity_files_exit_1_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tls.yaml"
    missing = tmp_path / "nope" / "cert.pem"
    cfg.write_text(
        f"service: x\nidentity: {{cert: {missing}, key: {tmp_path}/k.pem, trust_bundle: {tmp_path}/b.pem}}\n"
        "listeners: [{name: in, address: 127.0.0.1:0, tls: {mode: strict}, routes: [{cluster: app}]}]\n"
        "clusters: [{name: app, endpoints: [127.0.0.1:1]}]\n"
    )
    done = subprocess.run(
        [*PILLION, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done
    assert f"identity.cert: cannot read {missing}" in done.stderr and "Traceback" not in done.stderr


def test_invalid_config_exits_1_naming_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "service: x\nlisteners:\n  - name: in\n    address: 127.0.0.1:0\n    routes:\n"
        "      - {match: {prefix: /}, cluster: app}\n      - {match: {prefix: /p}, cluster: paymnts}\n"
        "clusters:\n  - {name: app, endpoints: [127.0.0.1:1]}\n"
    )
    done = subprocess.run(
        [*PILLION, "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert "listeners[0].routes[1].cluster: unknown cluster 'paymnts'" in done.stderr


def test_demo_serves_the_app_through_the_sidecar() -> None:
    app, inbound, admin = free_port(), free_port(), free_port()
    argv = [*PILLION, "demo", "--duration", "2", "--app-port", str(app)]
    argv += ["--inbound-port", str(inbound), "--admin-port", str(admin)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "GET /orders      -> 200" in done.stdout
    assert '"x-forwarded-for": "127.0.0.1"' in done.stdout
    assert f"curl http://127.0.0.1:{admin}/metrics" in done.stdout
    assert "pillion_http_requests_total" in done.stdout


# -- OpenSSL is loaded only when the config uses TLS (pillion.tls.loading) ------------------------------


def maps_openssl(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libcrypto" in maps or "libssl" in maps


def maps_cryptography(pid: int) -> bool:
    return "/cryptography/" in Path(f"/proc/{pid}/maps").read_text()


async def reload_failures(admin: int) -> str:
    metrics = (await http_request(HOST, admin, "GET", "/metrics")).text
    return next(
        line for line in metrics.splitlines() if line.startswith("pillion_config_reload_failures_total ")
    )


def test_a_plaintext_sidecar_runs_without_openssl_and_refuses_a_reload_that_needs_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg, port, admin = write_config(tmp_path, up.address)
            runner = ProcessRunner([*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready")
            async with runner as proc:
                assert proc.popen is not None
                pid = proc.popen.pid
                assert not maps_openssl(pid)
                assert (await http_request(HOST, port, "GET", "/before")).status == 200
                # The same config with TLS origination to the app needs OpenSSL: a restart, not a reload.
                cfg.write_text(cfg.read_text() + "    tls: {mode: simple}\n")
                assert await reload_failures(admin) == "pillion_config_reload_failures_total 0"
                proc.popen.send_signal(signal.SIGHUP)
                for _ in range(100):  # bounded wait for the refusal to be counted
                    if (await reload_failures(admin)).endswith(" 1"):
                        break
                    await asyncio.sleep(0.05)
                assert await reload_failures(admin) == "pillion_config_reload_failures_total 1"
                assert (await http_request(HOST, port, "GET", "/after")).status == 200
                assert up.requests[-1].path == "/after"  # still plaintext to the app, still serving
                assert proc.popen.poll() is None and not maps_openssl(pid)
            assert proc.popen.returncode == 0
            output = proc.stderr_text() + proc.stdout_text()
            assert "clusters[0].tls: TLS is not loaded in this process" in output

    uvloop.run(main())


def test_a_sidecar_whose_config_uses_tls_loads_openssl(tmp_path: Path) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg, _, admin = write_config(tmp_path, up.address)
            cfg.write_text(cfg.read_text() + "    tls: {mode: simple}\n")
            runner = ProcessRunner([*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready")
            async with runner as proc:
                assert proc.popen is not None and maps_openssl(proc.popen.pid)

    uvloop.run(main())


def test_an_mtls_sidecar_checks_its_peers_without_the_cryptography_package(tmp_path: Path) -> None:
    """The SVID checks read the DER themselves (pillion.tls.der): `cryptography`, 11.7 MiB resident, is
    for `pillion ca` only. The peer check runs: a caller's certificate reaches the app as its identity."""
    from pillion.tls.ca import init_ca, issue_svid

    init_ca(tmp_path / "ca")
    issue_svid(tmp_path / "ca", "spiffe://example.org/ns/e2e/sa/server", tmp_path / "server")
    issue_svid(tmp_path / "ca", "spiffe://example.org/ns/e2e/sa/caller", tmp_path / "caller")
    server = tmp_path / "server"
    identity = f"{{cert: {server}/cert.pem, key: {server}/key.pem, trust_bundle: {server}/bundle.pem}}"

    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg, port, admin = write_config(tmp_path, up.address, extra=f"identity: {identity}\n")
            cfg.write_text(cfg.read_text().replace("    routes:", "    tls: {mode: strict}\n    routes:", 1))
            runner = ProcessRunner([*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready")
            async with runner as proc:
                assert proc.popen is not None
                caller = tmp_path / "caller"
                curl = await asyncio.create_subprocess_exec(
                    require_tool("curl"), "-sS", "-k", "--cacert", str(caller / "bundle.pem"),
                    "--cert", str(caller / "cert.pem"), "--key", str(caller / "key.pem"),
                    "-o", "/dev/null", "-w", "%{http_code}", f"https://{HOST}:{port}/who",
                    stdout=subprocess.PIPE,
                )  # fmt: skip
                out, _ = await asyncio.wait_for(curl.communicate(), 20)
                assert out == b"200"
                xfcc = up.requests[-1].header("x-forwarded-client-cert") or ""
                assert xfcc.endswith(";URI=spiffe://example.org/ns/e2e/sa/caller"), xfcc
                assert maps_openssl(proc.popen.pid) and not maps_cryptography(proc.popen.pid)

    uvloop.run(main())


def test_the_stand_in_lets_asyncio_and_uvloop_run_and_names_the_cause_of_any_tls_use() -> None:
    code = r"""
import sys
from pillion.tls.loading import defer_ssl, is_deferred
assert defer_ssl() and is_deferred()
import asyncio, uvloop, ssl
async def echo(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.write(b"plaintext\n")
    line = await reader.readline()
    writer.close()
    server.close()
    return line
assert uvloop.run(main()) == b"plaintext\n"
for use in (lambda: ssl.SSLContext(2), lambda: ssl.create_default_context(), lambda: ssl.PROTOCOL_TLS_CLIENT):
    try:
        use()
    except (RuntimeError, AttributeError) as exc:
        assert "TLS is not loaded in this process" in str(exc), exc
    else:
        raise AssertionError("no error")
assert "_ssl" not in sys.modules and "_hashlib" not in sys.modules
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


@pytest.mark.parametrize(
    ("extra", "uses"),
    [
        ("", []),
        ("identity: {cert: c.pem, key: k.pem, trust_bundle: b.pem}", ["identity"]),
        ("tracing: {otlp_endpoint: 'https://collector:4318/v1/traces'}", ["tracing.otlp_endpoint"]),
        ("tracing: {otlp_endpoint: 'http://collector:4318/v1/traces'}", []),
    ],
)
def test_tls_uses_names_each_config_path_that_needs_tls(extra: str, uses: list[str]) -> None:
    text = f"""
service: s
listeners:
  - name: a
    address: 127.0.0.1:1
    routes: [{{match: {{prefix: /}}, cluster: c}}]
  - name: b
    address: 127.0.0.1:2
    tls: {{mode: simple, cert: c.pem, key: k.pem}}
    routes: [{{match: {{prefix: /}}, cluster: c}}]
clusters:
  - {{name: c, endpoints: ["127.0.0.1:3"]}}
  - {{name: d, endpoints: ["127.0.0.1:4"], tls: {{mode: simple}}}}
{extra}
"""
    plain = text.replace("tls: {mode: simple, cert: c.pem, key: k.pem}", "").replace(
        ", tls: {mode: simple}", ""
    )
    assert tls_uses(load_config_text(plain)) == uses
    identity, tracing = (
        uses[:1] if extra.startswith("identity") else [],
        uses if extra.startswith("tracing") else [],
    )
    assert tls_uses(load_config_text(text)) == [*identity, "listeners[1].tls", "clusters[1].tls", *tracing]
