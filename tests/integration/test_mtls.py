"""Mutual TLS between two sidecars with SPIFFE identities, on real handshakes.

client → sidecar A (plaintext listener, cluster `b` in `mesh` mode) → [recording relay] → sidecar B
(`strict` listener) → app. Certificates come from the project's own CA (pillion.tls.ca) in a temporary
directory: one trust domain, and a second CA for the "another CA" case.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from pillion.config import load_config_text
from pillion.runtime.runtime import Runtime
from pillion.testing.http import ClientConnection, http_request
from pillion.testing.loops import Run, until
from pillion.testing.metrics import metric
from pillion.testing.relay import RecordingRelay
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream, pattern_bytes
from pillion.tls import mux
from pillion.tls.ca import init_ca, issue_svid
from pillion.tls.mux import DATA, HEAD, ClientSessions, Session

HOST = "127.0.0.1"
A_ID = "spiffe://example.org/ns/prod/sa/a"
B_ID = "spiffe://example.org/ns/prod/sa/b"


@dataclass
class Pki:
    ca: Path
    a: Path
    b: Path
    other_ca: Path
    stranger: Path  # B's SPIFFE ID, signed by the other CA


def make_pki(tmp: Path) -> Pki:
    pki = Pki(tmp / "ca", tmp / "a", tmp / "b", tmp / "other-ca", tmp / "stranger")
    init_ca(pki.ca)
    init_ca(pki.other_ca)
    issue_svid(pki.ca, A_ID, pki.a)
    issue_svid(pki.ca, B_ID, pki.b)
    issue_svid(pki.other_ca, B_ID, pki.stranger)
    return pki


def identity(d: Path) -> dict[str, str]:
    return {"cert": str(d / "cert.pem"), "key": str(d / "key.pem"), "trust_bundle": str(d / "bundle.pem")}


def b_config(pki: Pki, app: str, **listener: Any) -> dict[str, Any]:
    return {
        "service": "b",
        "admin": {"address": f"{HOST}:0"},
        "identity": identity(pki.b),
        "listeners": [
            {
                "name": "inbound",
                "address": f"{HOST}:0",
                "tls": {"mode": "strict"},
                "routes": [{"cluster": "app"}],
                **listener,
            }
        ],
        "clusters": [{"name": "app", "endpoints": [app]}],
    }


def a_config(pki: Pki, b: str, peer: str = B_ID, multiplex: bool = True, **cluster: Any) -> dict[str, Any]:
    tls = {"mode": "mesh", "peer": peer, "multiplex": multiplex}
    return {
        "service": "a",
        "admin": {"address": f"{HOST}:0"},
        "identity": identity(pki.a),
        "listeners": [{"name": "outbound", "address": f"{HOST}:0", "routes": [{"cluster": "b"}]}],
        "clusters": [{"name": "b", "endpoints": [b], "tls": tls, **cluster}],
    }


@contextlib.asynccontextmanager
async def mesh(
    pki: Pki,
    *,
    peer: str = B_ID,
    multiplex: bool = True,
    b_listener: dict[str, Any] | None = None,
    **cluster: Any,
) -> AsyncIterator[tuple[ScriptableUpstream, Runtime, Runtime, RecordingRelay]]:
    async with contextlib.AsyncExitStack() as stack:
        app = await stack.enter_async_context(ScriptableUpstream())
        b = await stack.enter_async_context(
            running_sidecar(load_config_text(json.dumps(b_config(pki, app.address, **(b_listener or {})))))
        )
        relay = await stack.enter_async_context(RecordingRelay(HOST, b.listeners[0].port))
        cfg = load_config_text(json.dumps(a_config(pki, relay.address, peer, multiplex, **cluster)))
        a = await stack.enter_async_context(running_sidecar(cfg))
        yield app, a, b, relay


def client_context(cert_dir: Path | None, bundle: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(bundle))
    if cert_dir is not None:
        ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return ctx


async def tls_get(port: int, ctx: ssl.SSLContext) -> bytes:
    """A GET over TLS; what came back before the connection ended (b"" when refused)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(b"GET /direct HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n")
        async with asyncio.timeout(3):
            return await reader.read()
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


def test_a_to_b_over_mtls_and_what_b_refuses(tmp_path: Path, run: Run) -> None:
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with mesh(pki) as (app, a, b, relay):
            r = await http_request(HOST, a.listeners[0].port, "GET", "/hello")
            assert r.status == 200 and r.text == "GET /hello\n"
            (seen,) = app.requests
            xfcc = seen.header("x-forwarded-client-cert")
            assert xfcc is not None and f"URI={A_ID}" in xfcc and xfcc.startswith(f"By={B_ID};Hash=")
            assert seen.header("x-forwarded-proto") == "https"
            # What crossed between the sidecars is TLS: a handshake record first, no HTTP in clear.
            assert bytes(relay.sent[:3]) in (b"\x16\x03\x01", b"\x16\x03\x03") and b"/hello" not in relay.sent

            port = b.listeners[0].port
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /plain HTTP/1.1\r\nhost: b\r\n\r\n")
            async with asyncio.timeout(3):
                got = await reader.read()
            writer.close()
            assert not got.startswith(b"HTTP/")  # plaintext: no HTTP answer, the handshake fails
            assert await tls_get(port, client_context(None, pki.ca / "ca.pem")) == b""  # no client cert
            assert await tls_get(port, client_context(pki.stranger, pki.ca / "ca.pem")) == b""  # other CA
            good = await tls_get(port, client_context(pki.a, pki.ca / "ca.pem"))
            assert good.startswith(b"HTTP/1.1 200")  # the same client, with A's certificate, is let in
            assert metric(b, "pillion_tls_handshake_failures_total", listener="inbound") >= 1
            assert [r.target for r in app.requests] == ["/hello", "/direct"]

    run(main())


def test_a_refuses_b_when_its_spiffe_id_is_not_the_configured_one(tmp_path: Path, run: Run) -> None:
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with mesh(pki, peer="spiffe://example.org/ns/prod/sa/payments") as (app, a, _b, _relay):
            r = await http_request(HOST, a.listeners[0].port, "GET", "/x")
            assert r.status == 502 and r.header("x-pillion-error") == "upstream_tls_failure"
            assert metric(a, "pillion_tls_handshake_failures_total", cluster="b") >= 1
            assert app.requests == []

    run(main())


def test_authorization_by_caller_identity_and_request(tmp_path: Path, run: Run) -> None:
    pki = make_pki(tmp_path)
    policy = {
        "default": "deny",
        "rules": [
            {"action": "deny", "source": {"spiffe_ids": [A_ID]}, "match": {"prefix": "/api/admin"}},
            {"action": "allow", "source": {"trust_domains": ["example.org"]}, "match": {"prefix": "/api/"}},
        ],
    }
    listener = {
        "authorization": policy,
        "routes": [
            # A route's own policy replaces the listener's: only sa/c may use /c (A may not).
            {
                "match": {"prefix": "/c"},
                "cluster": "app",
                "authorization": {
                    "rules": [{"source": {"spiffe_ids": ["spiffe://example.org/ns/prod/sa/c"]}}]
                },
            },
            {"cluster": "app"},
        ],
    }

    async def main() -> None:
        async with mesh(pki, b_listener=listener) as (app, a, b, _relay):
            port = a.listeners[0].port

            async def get(method: str, path: str) -> tuple[int, str | None]:
                r = await http_request(HOST, port, method, path)
                return r.status, r.header("x-pillion-error")

            assert await get("GET", "/api/orders") == (200, None)
            assert await get("POST", "/api/orders") == (200, None)
            assert await get("GET", "/api/admin/users") == (403, "forbidden")
            assert await get("GET", "/other") == (403, "forbidden_by_default")
            assert await get("GET", "/c/x") == (403, "forbidden_by_default")
            assert [r.target for r in app.requests] == ["/api/orders", "/api/orders"]
            assert metric(b, "pillion_authz_denied_total", listener="inbound", route="route1") == 2
            assert metric(b, "pillion_authz_denied_total", listener="inbound", route="route0") == 1

    run(main())


@pytest.mark.parametrize("multiplex", [False, True], ids=["connections", "streams"])
def test_rotating_b_every_3s_fails_no_request(tmp_path: Path, multiplex: bool) -> None:
    """The issue's bar: B's certificate re-issued every 3 s, cert and key files replaced one after the
    other, during 6000 requests through A: none fails, and B then serves the newest certificate. A keeps
    few idle connections, so new connections keep being made throughout: TLS handshakes without
    multiplexing, new streams of the session with it."""
    pki = make_pki(tmp_path)
    total, clients, rotations = 6000, 4, 2

    async def rotate() -> list[str]:
        issued: list[str] = []
        for i in range(rotations):
            await asyncio.sleep(3.0)
            staging = tmp_path / f"staging{i}"
            svid = issue_svid(pki.ca, B_ID, staging)
            issued.append(hashlib.sha256(_der(svid.cert)).hexdigest())
            svid.cert.replace(pki.b / "cert.pem")  # the cert first...
            await asyncio.sleep(0.1)  # ...a moment when cert and key do not match...
            svid.key.replace(pki.b / "key.pem")  # ...then the key
        await asyncio.sleep(0.5)  # requests go on through the last change too
        return issued

    async def main() -> None:
        async with mesh(pki, multiplex=multiplex, max_idle_connections=1) as (_app, a, b, relay):
            port = a.listeners[0].port
            rotator = asyncio.ensure_future(rotate())
            statuses: list[int] = []

            async def client() -> None:
                async with await ClientConnection.open(HOST, port) as conn:
                    # At least `total` requests in all, and on until the rotations are over (bounded).
                    for _ in range(10 * total):
                        if rotator.done() and len(statuses) >= total:
                            return
                        statuses.append((await conn.request("GET", "/r")).status)

            await asyncio.gather(*(client() for _ in range(clients)))
            issued = await rotator
            assert len(statuses) >= total and statuses.count(200) == len(statuses), {
                s: statuses.count(s) for s in set(statuses)
            }
            assert metric(b, "pillion_tls_identity_reloads_total", result="ok") == rotations
            assert metric(b, "pillion_tls_identity_reloads_total", result="failed") == 0
            opened = metric(a, "pillion_upstream_connections_total", cluster="b")
            print(f"{len(statuses)} requests, {opened:.0f} connections from A to B, {relay.connections} TLS")
            assert opened >= 100  # new connections all through the run, not one pool set up at start
            if multiplex:
                assert relay.connections == 1  # all of them streams of one session
            else:
                assert relay.connections == opened  # each one a handshake
            for _ in range(20):  # B picks the last rotation up within a second
                served = await _served_fingerprint(b.listeners[0].port, pki)
                if served == issued[-1]:
                    break
                await asyncio.sleep(0.1)
            assert served == issued[-1]

    uvloop.run(main())  # (one loop: this is a long run)


def _der(pem_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


async def _served_fingerprint(port: int, pki: Pki) -> str:
    _, writer = await asyncio.open_connection(HOST, port, ssl=client_context(pki.a, pki.ca / "ca.pem"))
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return hashlib.sha256(der).hexdigest()


def test_streams_share_one_mtls_connection_and_carry_large_bodies(tmp_path: Path, run: Run) -> None:
    """With `multiplex` (the default) A's connections to B are streams of one mTLS connection
    (`pillion-mux/1`): concurrent requests, megabytes each way past the streams' flow-control window, and
    a stream reset by the app all behave as over separate connections."""
    pki = make_pki(tmp_path)
    size = 3 * 1024 * 1024

    async def main() -> None:
        async with mesh(pki) as (app, a, b, relay):
            port = a.listeners[0].port
            delayed = [http_request(HOST, port, "GET", "/delay/0.2") for _ in range(20)]
            got = await asyncio.gather(*delayed)
            assert [r.status for r in got] == [200] * 20
            assert metric(a, "pillion_upstream_connections_total", cluster="b") >= 20  # all at once
            assert relay.connections == 1
            assert bytes(relay.sent[:3]) in (b"\x16\x03\x01", b"\x16\x03\x03") and b"/delay" not in relay.sent
            # Both ends show it: the gauges, and A's /clusters (its pooled connections are its streams).
            mux_gauge = "pillion_tls_multiplexed_connections"
            assert metric(a, mux_gauge, listener="", cluster="b") == 1
            assert metric(b, mux_gauge, listener="inbound", cluster="") == 1
            clusters = await http_request(HOST, a.admin.port, "GET", "/clusters")
            (endpoint,) = next(c for c in clusters.json()["clusters"] if c["name"] == "b")["endpoints"]
            assert endpoint["multiplexed_connections"] == 1 and endpoint["streams"] >= 1

            down = await http_request(HOST, port, "GET", f"/bytes/{size}")
            assert down.status == 200 and down.body == pattern_bytes(size)
            body = pattern_bytes(size)
            up = await http_request(HOST, port, "POST", "/sha256", body=body)
            assert up.status == 200 and up.json() == {
                "length": size,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
            reset = await http_request(HOST, port, "GET", "/reset")
            assert reset.status == 502 and reset.header("x-pillion-error") == "upstream_reset"  # (from B)
            after = await http_request(HOST, port, "GET", "/after")
            assert after.status == 200 and after.text == "GET /after\n"
            assert relay.connections == 1  # the reset ended one stream, not the session
            assert [r.target for r in app.requests][-1] == "/after"

    run(main())


def test_without_multiplex_each_connection_is_its_own_handshake(tmp_path: Path, run: Run) -> None:
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with mesh(pki, multiplex=False) as (_app, a, _b, relay):
            got = await asyncio.gather(
                *(http_request(HOST, a.listeners[0].port, "GET", "/delay/0.2") for _ in range(5))
            )
            assert [r.status for r in got] == [200] * 5
            assert relay.connections == 5

    run(main())


@pytest.mark.parametrize("multiplex", [False, True], ids=["connections", "streams"])
def test_connections_on_streams_send_at_once_and_the_others_hold(
    tmp_path: Path, run: Run, multiplex: bool
) -> None:
    """A connection on a multiplexed stream writes into its session at once (the session gathers the
    pass's frames itself), so it is marked `gathered` and never waits in a WriteBatch: A's connections to
    B and B's from A. Every other connection still holds: the client's to A, B's to the app, and A's to B
    when each is a TLS connection of its own. Uploads in flight together come back whole either way."""
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with mesh(pki, multiplex=multiplex) as (_app, a, b, _relay):
            port = a.listeners[0].port
            async with await ClientConnection.open(HOST, port) as client:  # (a_clients stays non-empty)
                first = await client.request("GET", "/first")
                assert first.status == 200
                bodies = [pattern_bytes(1000 * (i + 1)) for i in range(6)]
                got = await asyncio.gather(
                    *(http_request(HOST, port, "POST", "/sha256", body=body) for body in bodies),
                    *(http_request(HOST, port, "GET", f"/get/{i}") for i in range(6)),
                )
                assert [r.json() for r in got[:6]] == [
                    {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()} for body in bodies
                ]
                assert [r.text for r in got[6:]] == [f"GET /get/{i}\n" for i in range(6)]
                a_clients = a.listeners[0].connections
                a_to_b = [conn for e in a.clusters["b"].endpoints for conn in e.idle]
                b_from_a = b.listeners[0].connections
                b_to_app = [conn for e in b.clusters["app"].endpoints for conn in e.idle]
                assert a_clients and a_to_b and b_from_a and b_to_app
                assert not any(conn.gathered for conn in [*a_clients, *b_to_app])
                assert {conn.gathered for conn in [*a_to_b, *b_from_a]} == {multiplex}

    run(main())


def test_a_peer_that_does_not_multiplex_gets_plain_connections(tmp_path: Path, run: Run) -> None:
    """B's TCP listener (strict mTLS, forwarding bytes to the app) does not select `pillion-mux/1`: A's
    multiplexing cluster then uses each TLS connection as one HTTP connection."""
    pki = make_pki(tmp_path)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            app = await stack.enter_async_context(ScriptableUpstream())
            b_cfg = b_config(pki, app.address, protocol="tcp")
            del b_cfg["listeners"][0]["routes"]
            b_cfg["listeners"][0]["cluster"] = "app"
            b = await stack.enter_async_context(running_sidecar(load_config_text(json.dumps(b_cfg))))
            relay = await stack.enter_async_context(RecordingRelay(HOST, b.listeners[0].port))
            a = await stack.enter_async_context(
                running_sidecar(load_config_text(json.dumps(a_config(pki, relay.address))))
            )
            got = await asyncio.gather(
                *(http_request(HOST, a.listeners[0].port, "GET", "/delay/0.2") for _ in range(4))
            )
            assert [r.status for r in got] == [200] * 4 and [r.text for r in got] == ["GET /delay/0.2\n"] * 4
            assert relay.connections == 4
            r = await http_request(HOST, a.listeners[0].port, "GET", "/again")
            assert r.status == 200 and r.text == "GET /again\n"

    run(main())


def _sessions(a: Runtime) -> list[Session]:
    """A's multiplexed sessions to cluster b's endpoints."""
    tls = a.clusters["b"].tls
    assert tls is not None and isinstance(tls.sessions, ClientSessions)
    return [session for found in tls.sessions.sessions.values() for session in found]


def test_a_keepalive_connection_works_on_after_the_session_was_write_blocked(
    tmp_path: Path, run: Run
) -> None:
    """A's session to B write-blocked (the relay stops reading while uploads fill A's TLS buffer) while a
    client's request on a keep-alive connection to A is under way, its response then coming through,
    then the session unblocked: a second request on that connection is answered (it must not stay paused
    because the session's transport was full), and the uploads all complete."""
    pki = make_pki(tmp_path)
    uploads, size = 32, 512 * 1024  # at most a stream window each in flight: 8 MiB, past any socket buffer

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            app = await stack.enter_async_context(ScriptableUpstream())
            b = await stack.enter_async_context(
                running_sidecar(load_config_text(json.dumps(b_config(pki, app.address))))
            )
            relay = await stack.enter_async_context(RecordingRelay(HOST, b.listeners[0].port, chunk=4096))
            a = await stack.enter_async_context(
                running_sidecar(load_config_text(json.dumps(a_config(pki, relay.address))))
            )
            port = a.listeners[0].port
            warm = await http_request(HOST, port, "GET", "/warm")  # (the session is dialled)
            assert warm.status == 200
            (session,) = _sessions(a)

            conn = await stack.enter_async_context(await ClientConnection.open(HOST, port))
            relay.back.clear()  # B's answers wait in the relay
            first = asyncio.ensure_future(conn.request("GET", "/one"))
            await until(lambda: [r.target for r in app.requests] == ["/warm", "/one"])
            relay.forth.clear()  # and A's bytes to B stop too
            body = pattern_bytes(size)
            pushing = [
                asyncio.ensure_future(http_request(HOST, port, "POST", "/sha256", body=body, time_limit=30))
                for _ in range(uploads)
            ]
            try:
                await until(lambda: session.write_paused, limit=10.0)
                relay.back.set()  # /one's response comes through while the session is still blocked
                one = await asyncio.wait_for(first, 5.0)
                assert one.status == 200 and one.text == "GET /one\n"
                assert session.write_paused

                relay.forth.set()
                await until(lambda: not session.write_paused, limit=10.0)
                try:
                    two = await conn.request("GET", "/two", time_limit=5.0)
                except TimeoutError:
                    raise AssertionError("no answer to the second request on the same connection") from None
                assert two.status == 200 and two.text == "GET /two\n"

                done = await asyncio.wait_for(asyncio.gather(*pushing), 30.0)
                expected = {"length": size, "sha256": hashlib.sha256(body).hexdigest()}
                assert [(r.status, r.json()) for r in done] == [(200, expected)] * uploads
                assert _sessions(a) == [session]
            finally:
                relay.forth.set()
                relay.back.set()
                for task in (first, *pushing):
                    task.cancel()
                await asyncio.gather(first, *pushing, return_exceptions=True)

    run(main())


async def mux_connect(
    port: int, cert_dir: Path, ca: Path
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection offering only `pillion-mux/1`, with the certificate in `cert_dir`."""
    ctx = client_context(cert_dir, ca)
    ctx.set_alpn_protocols([mux.ALPN])
    reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx)
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == mux.ALPN
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, limit: float) -> bool:
    """Whether the peer ends the connection (close or reset) within `limit` seconds; what it sends is
    read and dropped."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


def frame(sid: int, kind: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(sid, kind, len(payload)) + payload


def test_a_multiplexed_client_that_opens_no_stream_is_dropped(tmp_path: Path, run: Run) -> None:
    """A client that negotiates `pillion-mux/1` with B and then sends nothing is disconnected after the
    listener's request_headers_timeout, as a silent plain connection is; a session that opened a stream in
    time is served, and is not dropped by that timeout once its stream has ended."""
    pki = make_pki(tmp_path)
    limits = {"limits": {"request_headers_timeout": "1s"}}

    async def main() -> None:
        async with mesh(pki, b_listener=limits) as (app, _a, b, _relay):
            port = b.listeners[0].port
            silent_reader, silent = await mux_connect(port, pki.a, pki.ca / "ca.pem")
            busy_reader, busy = await mux_connect(port, pki.a, pki.ca / "ca.pem")
            try:
                busy.write(frame(1, DATA, b"GET /in-time HTTP/1.1\r\nhost: b\r\n\r\n"))
                answer = b""
                async with asyncio.timeout(5.0):
                    while not answer.endswith(b"GET /in-time\n"):  # (the response's DATA frames)
                        sid, kind, length = HEAD.unpack(await busy_reader.readexactly(mux.HEAD_SIZE))
                        assert (sid, kind) == (1, DATA)
                        answer += await busy_reader.readexactly(length)
                assert answer.startswith(b"HTTP/1.1 200")
                busy.write(frame(1, mux.CLOSE))
                sessions = "pillion_tls_multiplexed_connections"
                assert metric(b, sessions, listener="inbound") == 2

                assert await closed_within(silent_reader, 5.0), "the silent session is still open"
                assert not await closed_within(busy_reader, 1.5)  # (past the timeout: still open)
                assert [r.target for r in app.requests] == ["/in-time"]
                assert metric(b, sessions, listener="inbound") == 1
                busy.close()
                await until(lambda: metric(b, sessions, listener="inbound") == 0)
            finally:
                silent.close()
                busy.close()

    run(main())


def test_a_refused_multiplexed_client_loses_the_whole_connection_once(tmp_path: Path, run: Run) -> None:
    """A client whose certificate chains to the trust bundle but that B's peer rules refuse (another trust
    domain, same CA) and that negotiates `pillion-mux/1`: the whole TLS connection is closed at once and
    counted as one handshake failure, however many streams it then tries to open; nothing reaches the
    app."""
    pki = make_pki(tmp_path)
    outsider = tmp_path / "outsider"
    issue_svid(pki.ca, "spiffe://other.org/ns/prod/sa/a", outsider)

    async def main() -> None:
        async with mesh(pki) as (app, _a, b, _relay):
            port = b.listeners[0].port
            before = metric(b, "pillion_tls_handshake_failures_total", listener="inbound")
            reader, writer = await mux_connect(port, outsider, pki.ca / "ca.pem")
            try:
                request = b"GET /refused HTTP/1.1\r\nhost: b\r\n\r\n"
                writer.write(b"".join(frame(sid, DATA, request) for sid in range(1, 1001)))
                closed = await closed_within(reader, 5.0)
                failures = metric(b, "pillion_tls_handshake_failures_total", listener="inbound") - before
                assert closed, f"the refused client's connection is still open ({failures:.0f} failures)"
                assert failures == 1
                assert metric(b, "pillion_tls_multiplexed_connections", listener="inbound") == 0
            finally:
                writer.close()
            assert app.requests == []
            good = await tls_get(port, client_context(pki.a, pki.ca / "ca.pem"))
            assert good.startswith(b"HTTP/1.1 200")  # (B serves the next client)
            assert metric(b, "pillion_tls_handshake_failures_total", listener="inbound") - before == 1

    run(main())
