"""TLS to and from the outside, and the migration mode, on real handshakes.

- `permissive`: plaintext and mTLS clients on one port; only an mTLS caller's request carries
  `x-forwarded-client-cert`, and a client can never set it.
- `simple` listener: TLS termination with a configured certificate, no client certificate asked for.
- `simple` cluster: origination to an outside TLS service, which must be verified against `ca` for the
  name `sni`, and must be sent that name.
- TCP listeners both ways: a plaintext localhost port in front of a TLS database (the Cloud SQL Auth Proxy
  case: the app speaks plaintext to 127.0.0.1, Pillion speaks TLS outward), first to an in-process TLS
  front that records the SNI, then to a real redis-server with TLS; and `strict` mTLS in front of a
  plaintext TCP service.

Two CAs: the mesh's (SPIFFE identities) and a "public" one for the outside world, whose certificates are
ordinary server certificates (DNS names, no SPIFFE ID). Clients are Python's ssl, curl and s_client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from pillion.config import load_config_text
from pillion.runtime.runtime import Runtime
from pillion.testing.echo import EchoServer
from pillion.testing.http import http_request
from pillion.testing.loops import Run
from pillion.testing.metrics import metric
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner, run_tool
from pillion.testing.sidecar import running_sidecar
from pillion.testing.tools import require_tool
from pillion.testing.upstream import ScriptableUpstream
from pillion.tls.ca import init_ca, issue_svid

HOST = "127.0.0.1"
SERVER_ID = "spiffe://example.org/ns/prod/sa/server"
CLIENT_ID = "spiffe://example.org/ns/prod/sa/client"
DB_NAME = "db.example.com"
FAILURES = "pillion_tls_handshake_failures_total"
FORGED_XFCC = "By=spiffe://example.org/ns/prod/sa/server;URI=spiffe://example.org/ns/prod/sa/admin"
SECONDS = 5.0


@dataclass(frozen=True)
class Pki:
    mesh_ca: Path  # the mesh's trust bundle
    server: Path  # the sidecar's SVID (+ DNS:localhost for curl)
    client: Path  # a valid mesh client
    stranger: Path  # the client's ID from another CA
    other_domain: Path  # an SVID from the mesh CA, in another trust domain
    public_ca: Path  # the outside world's CA
    web: Path  # an ordinary server certificate for localhost, from the public CA
    db: Path  # an ordinary server certificate for db.example.com, from the public CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    for ca in ("mesh-ca", "public-ca", "other-ca"):
        init_ca(tmp / ca)
    # curl checks host names: the sidecar's SVID also names localhost, and curl resolves it to 127.0.0.1.
    issue_svid(tmp / "mesh-ca", SERVER_ID, tmp / "server", dns_names=("localhost",))
    issue_svid(tmp / "mesh-ca", CLIENT_ID, tmp / "client")
    issue_svid(tmp / "other-ca", CLIENT_ID, tmp / "stranger")
    issue_svid(tmp / "mesh-ca", "spiffe://other.org/ns/prod/sa/client", tmp / "other-domain")
    # Ordinary web certificates: `uris=()` leaves the SPIFFE ID out, so only the DNS name identifies them.
    issue_svid(tmp / "public-ca", "spiffe://public/web", tmp / "web", uris=(), dns_names=("localhost",))
    issue_svid(tmp / "public-ca", "spiffe://public/db", tmp / "db", uris=(), dns_names=(DB_NAME,))
    return Pki(
        tmp / "mesh-ca" / "ca.pem",
        tmp / "server",
        tmp / "client",
        tmp / "stranger",
        tmp / "other-domain",
        tmp / "public-ca" / "ca.pem",
        tmp / "web",
        tmp / "db",
    )


def identity(d: Path) -> dict[str, str]:
    return {"cert": str(d / "cert.pem"), "key": str(d / "key.pem"), "trust_bundle": str(d / "bundle.pem")}


def config(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], **top: Any) -> Any:
    doc: dict[str, Any] = {
        "service": "test",
        "admin": {"address": f"{HOST}:0"},
        "listeners": listeners,
        "clusters": clusters,
    }
    if any(listener.get("protocol") == "tcp" for listener in listeners):
        # A client's end of a TCP connection over TLS is held until the server's (TLS cannot half-close),
        # so a test's last connection may still be open at shutdown: a short drain, not the default 5 s.
        doc["drain_timeout"] = "500ms"
    return load_config_text(json.dumps({**doc, **top}))


def client_context(ca: Path, cert_dir: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the sidecar's SVID names a workload; the tests check it by its CA
    ctx.load_verify_locations(cafile=str(ca))
    if cert_dir is not None:
        ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return ctx


async def tls_get(port: int, ctx: ssl.SSLContext, path: str = "/tls") -> bytes:
    """A GET over TLS carrying a forged XFCC; what came back before the connection ended (b"" if refused)."""
    try:
        async with asyncio.timeout(SECONDS):
            reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nhost: x\r\nx-forwarded-client-cert: {FORGED_XFCC}\r\n"
            "connection: close\r\n\r\n".encode()
        )
        async with asyncio.timeout(SECONDS):
            return await reader.read()
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


async def curl(url: str, port: int, *options: str) -> tuple[int, bytes]:
    """curl -i on `url` (http or https://localhost:PORT/...), localhost pinned to 127.0.0.1, no proxy."""
    argv = [
        require_tool("curl"),
        "-q",
        "-sS",
        "-i",
        "--http1.1",
        "--noproxy",
        "*",
        "--max-time",
        "4",
        "--resolve",
        f"localhost:{port}:{HOST}",
        "-H",
        f"x-forwarded-client-cert: {FORGED_XFCC}",
        *options,
        url,
    ]
    rc, out, _ = await run_tool(argv)
    return rc, out


async def s_client(port: int, ca: Path, *options: str, stdin: bytes, until: bytes | None = None) -> bytes:
    """openssl s_client's stdout: the handshake messages (-msg), the session, then what the server sent.

    Without `until`: stdin's end does not end the connection (-ign_eof), the server's close does (an
    HTTP request with `connection: close`, or a refusal). With `until`: stdin stays open until that has
    come back (or the server closed), for a protocol where the server never closes first (an echo)."""
    argv = [require_tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca)]
    argv += ["-verify_return_error", "-nocommands", "-msg", *options]
    if until is None:
        _, out, _ = await run_tool([*argv, "-ign_eof"], stdin)
        return out
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = b""
    try:
        proc.stdin.write(stdin)
        async with asyncio.timeout(SECONDS):
            while until not in out and (chunk := await proc.stdout.read(65536)):
                out += chunk
    finally:
        proc.stdin.close()  # s_client ends the session (close_notify) and exits
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SECONDS):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out


async def count_reaches(rt: Runtime, expected: float, **labels: str) -> float:
    """A metric counted just after the client saw the outcome: poll briefly, then read it once more."""
    for _ in range(100):
        if metric(rt, FAILURES, **labels) >= expected:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.02)
    return metric(rt, FAILURES, **labels)


# -- an outside TLS service --------------------------------------------------------------------------------


class TlsFront:
    """A TLS server in front of a plaintext one: stands in for an outside service that speaks TLS, and
    records the server name each client asked for (an SNI callback runs on every ClientHello)."""

    def __init__(self, backend_port: int, cert_dir: Path) -> None:
        self.backend_port = backend_port
        self.server_names: list[str | None] = []
        self.sessions = 0  # handshakes that succeeded
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
        self._ctx.sni_callback = self._sni
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"{HOST}:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.sessions += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.backend_port)
            # Both directions until each ends; a TLS stream cannot half-close, so an end closes the other.
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        except OSError:
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, HOST, 0, ssl=self._ctx)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        dst.close()


# -- permissive ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def inbound(pki: Pki, tls: dict[str, Any]) -> AsyncIterator[tuple[ScriptableUpstream, Runtime, int]]:
    """A sidecar with one HTTP listener `inbound` (TLS as given) in front of a ScriptableUpstream."""
    async with ScriptableUpstream() as app:
        listener = {"name": "inbound", "address": f"{HOST}:0", "tls": tls, "routes": [{"cluster": "app"}]}
        cfg = config([listener], [{"name": "app", "endpoints": [app.address]}], identity=identity(pki.server))
        async with running_sidecar(cfg) as rt:
            yield app, rt, rt.listeners[0].port


def test_permissive_serves_plaintext_and_mtls_on_one_port(pki: Pki, run: Run) -> None:
    async def main() -> None:
        async with inbound(pki, {"mode": "permissive"}) as (app, rt, port):
            forged = {"x-forwarded-client-cert": FORGED_XFCC}
            plain = await http_request(HOST, port, "GET", "/plain", headers=forged)
            assert plain.status == 200, plain
            rc, out = await curl(f"http://localhost:{port}/plain-curl", port)
            assert rc == 0 and out.startswith(b"HTTP/1.1 200"), out
            mtls = await tls_get(port, client_context(pki.mesh_ca, pki.client), "/mtls")
            assert mtls.startswith(b"HTTP/1.1 200"), mtls
            rc, out = await curl(
                f"https://localhost:{port}/mtls-curl",
                port,
                *("--cacert", str(pki.mesh_ca), "--cert", str(pki.client / "cert.pem")),
                *("--key", str(pki.client / "key.pem")),
            )
            assert rc == 0 and out.startswith(b"HTTP/1.1 200"), out

            seen = {r.target: r for r in app.requests}
            assert sorted(seen) == ["/mtls", "/mtls-curl", "/plain", "/plain-curl"]
            for target in ("/plain", "/plain-curl"):  # plaintext: no identity, and the forged one dropped
                assert seen[target].header_values("x-forwarded-client-cert") == [], target
            for target in ("/mtls", "/mtls-curl"):
                (xfcc,) = seen[target].header_values("x-forwarded-client-cert")
                assert xfcc.startswith(f"By={SERVER_ID};Hash=") and xfcc.endswith(f";URI={CLIENT_ID}")
                assert seen[target].header("x-forwarded-proto") == "https"

            # Permissive relaxes nothing for a client that starts TLS: its certificate is checked as strictly.
            assert await count_reaches(rt, 0, listener="inbound") == 0
            refused = [None, pki.stranger, pki.other_domain]  # no certificate, another CA, another domain
            for n, cert_dir in enumerate(refused, 1):
                assert await tls_get(port, client_context(pki.mesh_ca, cert_dir)) == b""
                assert await count_reaches(rt, n, listener="inbound") == n
            assert len(app.requests) == 4

    run(main())


def test_permissive_tells_the_app_a_plaintext_request_came_over_http(pki: Pki, run: Run) -> None:
    """x-forwarded-proto says how *this* request arrived: apps redirect to https, set Secure cookies or
    HSTS on it. On a permissive listener that is per connection, not per listener."""

    async def main() -> None:
        async with inbound(pki, {"mode": "permissive"}) as (app, _rt, port):
            assert (await http_request(HOST, port, "GET", "/plain")).status == 200
            assert (await tls_get(port, client_context(pki.mesh_ca, pki.client))).startswith(b"HTTP/1.1 200")
            plain, mtls = app.requests
            assert mtls.header_values("x-forwarded-proto") == ["https"]
            assert plain.header_values("x-forwarded-proto") == ["http"]

    run(main())


# -- simple termination ------------------------------------------------------------------------------------


def test_simple_listener_terminates_tls_without_asking_for_a_client_certificate(pki: Pki, run: Run) -> None:
    tls = {"mode": "simple", "cert": str(pki.web / "cert.pem"), "key": str(pki.web / "key.pem")}

    async def main() -> None:
        async with inbound(pki, tls) as (app, rt, port):
            # curl verifies the given certificate fully (chain to the public CA, name localhost).
            rc, out = await curl(f"https://localhost:{port}/curl", port, "--cacert", str(pki.public_ca))
            assert rc == 0 and out.startswith(b"HTTP/1.1 200"), out
            # s_client -msg lists the server's handshake messages: there is no CertificateRequest.
            request = b"GET /s_client HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            out = await s_client(port, pki.public_ca, stdin=request)
            assert b"HTTP/1.1 200" in out and b"New, TLSv1.3" in out, out
            assert b"CertificateRequest" not in out and b"EncryptedExtensions" in out, out
            # It serves the configured certificate, not the SVID: against the mesh CA it does not verify.
            rc, out = await curl(f"https://localhost:{port}/x", port, "--cacert", str(pki.mesh_ca))
            assert rc == 60 and not out, out  # 60: the peer's certificate cannot be verified

            assert [r.target for r in app.requests] == ["/curl", "/s_client"]
            for seen in app.requests:
                assert seen.header("x-forwarded-proto") == "https"
                assert seen.header_values("x-forwarded-client-cert") == []  # no caller identity to give
            # Plaintext on a TLS port is not served.
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
            async with asyncio.timeout(SECONDS):
                assert not (await reader.read()).startswith(b"HTTP/")
            writer.close()
            assert len(app.requests) == 2
            # The curl that did not trust us hung up mid-handshake, the plaintext client failed it.
            assert await count_reaches(rt, 2, listener="inbound") == 2

    run(main())


def test_strict_listener_asks_for_a_client_certificate(pki: Pki, run: Run) -> None:
    """The contrast for the test above: the same s_client probe sees a CertificateRequest."""

    async def main() -> None:
        async with inbound(pki, {"mode": "strict"}) as (_app, _rt, port):
            cert = ("-cert", str(pki.client / "cert.pem"), "-key", str(pki.client / "key.pem"))
            request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            out = await s_client(port, pki.mesh_ca, *cert, stdin=request)
            assert b"CertificateRequest" in out and b"HTTP/1.1 200" in out, out

    run(main())


# -- simple origination --------------------------------------------------------------------------------------


def test_simple_cluster_sends_sni_and_verifies_ca_and_name(pki: Pki, run: Run) -> None:
    public_ca = str(pki.public_ca)

    async def main() -> None:
        async with ScriptableUpstream() as backend, TlsFront(backend.port, pki.db) as front:

            def cluster(name: str, **tls: str) -> dict[str, Any]:
                return {"name": name, "endpoints": [front.address], "tls": {"mode": "simple", **tls}}

            clusters = [
                cluster("ext", sni=DB_NAME, ca=public_ca),
                cluster("wrong-ca", sni=DB_NAME, ca=str(pki.mesh_ca)),  # the mesh CA did not sign it
                cluster("wrong-name", sni="payments.example.com", ca=public_ca),
            ]
            routes = [{"match": {"prefix": f"/{c['name']}/"}, "cluster": c["name"]} for c in clusters]
            listener = {"name": "outbound", "address": f"{HOST}:0", "routes": routes}
            async with running_sidecar(config([listener], clusters)) as rt:
                port = rt.listeners[0].port
                r = await http_request(HOST, port, "GET", "/ext/orders")
                assert r.status == 200 and r.text == "GET /ext/orders\n", r
                assert front.server_names == [DB_NAME] and front.sessions == 1

                r = await http_request(HOST, port, "GET", "/wrong-ca/orders")
                assert r.status == 502 and r.header("x-pillion-error") == "upstream_tls_failure", r
                assert await count_reaches(rt, 1, cluster="wrong-ca") == 1

                r = await http_request(HOST, port, "GET", "/wrong-name/orders")
                assert r.status == 502 and r.header("x-pillion-error") == "upstream_tls_failure", r
                assert await count_reaches(rt, 1, cluster="wrong-name") == 1
                # The name asked for is the one configured, and the server's certificate, valid but for
                # another name, was refused for it.
                assert front.server_names[-1] == "payments.example.com"

                assert [r.target for r in backend.requests] == ["/ext/orders"]
                assert front.sessions == 1
                assert metric(rt, FAILURES, cluster="ext") == 0

    run(main())


# -- TCP listeners ------------------------------------------------------------------------------------------


async def exchange(port: int, data: bytes, ctx: ssl.SSLContext | None = None) -> bytes:
    """Send `data` on a new connection, read until len(data) came back or the connection ended."""
    got = b""
    try:
        async with asyncio.timeout(SECONDS):
            reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return got
    try:
        writer.write(data)
        async with asyncio.timeout(SECONDS):
            while len(got) < len(data) and (chunk := await reader.read(65536)):
                got += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        writer.close()
    return got


def tcp_listener(name: str, cluster: str, **tls: str) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": name, "address": f"{HOST}:0", "protocol": "tcp", "cluster": cluster}
    if tls:
        listener["tls"] = tls
    return listener


def test_tcp_listener_originates_tls_to_a_database(pki: Pki, run: Run) -> None:
    """The Cloud SQL Auth Proxy case: the app speaks plaintext to a localhost port, Pillion speaks TLS."""

    async def main() -> None:
        async with EchoServer() as db, TlsFront(db.port, pki.db) as front:
            tls = {"mode": "simple", "sni": DB_NAME, "ca": str(pki.public_ca)}
            clusters = [{"name": "db", "endpoints": [front.address], "tls": tls}]
            async with running_sidecar(config([tcp_listener("db", "db")], clusters)) as rt:
                port = rt.listeners[0].port
                query = b"SELECT 1;\n" * 5000  # 50 KB: several TLS records each way
                assert await exchange(port, query) == query
                assert await exchange(port, b"SELECT 2;\n") == b"SELECT 2;\n"
                assert front.server_names == [DB_NAME, DB_NAME] and front.sessions == 2
                assert db.received == len(query) + 10
                assert metric(rt, FAILURES, cluster="db") == 0

    run(main())


def test_tcp_listener_keeps_a_half_closed_client_over_tls_until_the_database_answers(
    pki: Pki, run: Run
) -> None:
    """A client that half-closes after its query still gets the whole answer: TLS cannot pass a half-close
    on, so the client's EOF is held (not an error that drops the connection) until the database ends."""

    async def main() -> None:
        async with EchoServer() as db, TlsFront(db.port, pki.db) as front:
            tls = {"mode": "simple", "sni": DB_NAME, "ca": str(pki.public_ca)}
            clusters = [{"name": "db", "endpoints": [front.address], "tls": tls}]
            async with running_sidecar(config([tcp_listener("db", "db")], clusters)) as rt:
                query = b"SELECT 1;\n" * 5000
                reader, writer = await asyncio.open_connection(HOST, rt.listeners[0].port)
                writer.write(query)
                writer.write_eof()  # done sending, still reading
                got = b""
                async with asyncio.timeout(SECONDS):
                    while len(got) < len(query) and (chunk := await reader.read(65536)):
                        got += chunk
                writer.close()
                assert got == query
                assert db.received == len(query)

    run(main())


def test_tcp_listener_closes_the_app_when_the_database_certificate_does_not_verify(
    pki: Pki, run: Run
) -> None:
    async def main() -> None:
        async with EchoServer() as db, TlsFront(db.port, pki.db) as front:
            wrong_ca = {"mode": "simple", "sni": DB_NAME, "ca": str(pki.mesh_ca)}
            clusters = [{"name": "db", "endpoints": [front.address], "tls": wrong_ca}]
            async with running_sidecar(config([tcp_listener("db", "db")], clusters)) as rt:
                port = rt.listeners[0].port
                assert await exchange(port, b"SELECT 1;\n") == b""  # closed, nothing came back
                # Tried (a TCP listener retries a failed connect, up to CONNECT_TRIES), never let through.
                attempts = len(front.server_names)
                assert attempts >= 1 and set(front.server_names) == {DB_NAME}
                assert front.sessions == 0 and db.accepted == 0
                # Each refused handshake counted, as the HTTP path counts it (test above).
                assert await count_reaches(rt, attempts, cluster="db") == attempts

    run(main())


def test_tcp_listener_originates_tls_to_a_real_redis(pki: Pki, run: Run) -> None:
    """The same through a real TLS server: redis-server with only a TLS port, redis-cli in plaintext."""
    server, cli = require_tool("redis-server"), require_tool("redis-cli")

    async def main() -> None:
        redis_port = free_port()
        argv = [server, "--port", "0", "--tls-port", str(redis_port), "--bind", HOST, "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--tls-auth-clients", "no"]
        argv += ["--tls-cert-file", str(pki.db / "cert.pem"), "--tls-key-file", str(pki.db / "key.pem")]
        tls = {"mode": "simple", "sni": DB_NAME, "ca": str(pki.public_ca)}
        clusters = [{"name": "redis", "endpoints": [f"{HOST}:{redis_port}"], "tls": tls}]
        async with (
            ProcessRunner(argv, wait_port=(HOST, redis_port)),
            running_sidecar(config([tcp_listener("redis", "redis")], clusters)) as rt,
        ):
            port = str(rt.listeners[0].port)
            rc, out, err = await run_tool([cli, "-h", HOST, "-p", port, "SET", "greeting", "hello over tls"])
            assert rc == 0 and out == b"OK\n", (out, err)
            rc, out, err = await run_tool([cli, "-h", HOST, "-p", port, "GET", "greeting"])
            assert rc == 0 and out == b"hello over tls\n", (out, err)
            assert metric(rt, "pillion_tcp_connections_total", listener="redis") == 2

    run(main())


def test_tcp_listener_terminates_mtls_in_front_of_a_plaintext_service(pki: Pki, run: Run) -> None:
    async def main() -> None:
        async with EchoServer() as echo:
            listener = tcp_listener("inbound", "echo", mode="strict")
            clusters = [{"name": "echo", "endpoints": [echo.address]}]
            cfg = config([listener], clusters, identity=identity(pki.server))
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                good = client_context(pki.mesh_ca, pki.client)
                assert await exchange(port, b"hello\n", good) == b"hello\n"
                out = await s_client(
                    port,
                    pki.mesh_ca,
                    *("-cert", str(pki.client / "cert.pem"), "-key", str(pki.client / "key.pem")),
                    stdin=b"from s_client\n",
                    until=b"from s_client\n",
                )
                assert b"from s_client\n" in out, out[-300:]
                assert echo.accepted == 2 and metric(rt, FAILURES, listener="inbound") == 0

                # Refused: never connected to the service, and counted once each.
                refused = [None, pki.stranger, pki.other_domain]
                for n, cert_dir in enumerate(refused, 1):
                    got = await exchange(port, b"let me in\n", client_context(pki.mesh_ca, cert_dir))
                    assert got == b"", cert_dir
                    assert await count_reaches(rt, n, listener="inbound") == n
                # No client certificate: the server ends it, s_client would wait for an echo otherwise.
                out = await s_client(port, pki.mesh_ca, stdin=b"let me in\n", until=b"let me in\n")
                assert b"let me in" not in out, out[-300:]
                assert await count_reaches(rt, 4, listener="inbound") == 4
                assert echo.accepted == 2 and echo.received == len(b"hello\nfrom s_client\n")

    run(main())
