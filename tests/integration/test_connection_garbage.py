"""A closed connection is freed by reference counting, not left to Python's cyclic collector.

Each connection's parser holds the connection's methods as callbacks; unless the connection lets go of
the parser when it closes, the two form a cycle that only the collector frees, and connection churn
(clients without keep-alive, a slowloris wave) turns into frequent collections and long full ones. A
connection and its TLS transport hold each other the same way, until the transport lets go.
With the collector off, such cycles stay in memory, so counting the connection objects still alive
after the connections closed shows whether any were left behind.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from pillion.config import load_config_text
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream
from pillion.tls.ca import init_ca, issue_svid

HOST = "127.0.0.1"
CONNECTIONS = 40
DOWN_UP = (
    ("pillion.proxy.downstream", "DownstreamConnection"),
    ("pillion.proxy.upstream", "UpstreamConnection"),
)


def _alive(kinds: tuple[tuple[str, str], ...]) -> tuple[int, ...]:
    """How many objects of each (module, class name) exist, for the collector-off counts."""
    counts = dict.fromkeys(kinds, 0)
    for o in gc.get_objects():
        kind = (type(o).__module__, type(o).__name__)
        if kind in counts:
            counts[kind] += 1
    return tuple(counts.values())


async def _one_request(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path.encode())
    answer = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return answer


async def _churn(
    port: int, path: str, kinds: tuple[tuple[str, str], ...], settled: Callable[[], bool]
) -> tuple[int, ...]:
    """With the collector off, CONNECTIONS requests to `path` on `port`, each on its own connection: how
    many more objects of each kind exist afterwards, once `settled()` (the sidecars' connections gone)."""
    assert (await _one_request(port, path)).startswith(b"HTTP/1.1 200 ")  # warm
    gc.collect()
    gc.disable()
    try:
        before = _alive(kinds)
        for _ in range(CONNECTIONS):
            assert (await _one_request(port, path)).startswith(b"HTTP/1.1 200 ")
        for _ in range(200):  # until the loop has run the last connection_lost callbacks
            after = _alive(kinds)
            if all(map(int.__le__, after, before)) and settled():
                break
            await asyncio.sleep(0.01)
    finally:
        gc.enable()
    return tuple(a - b for a, b in zip(after, before, strict=True))


def _left_behind(path: str, kinds: tuple[tuple[str, str], ...], *, admin: bool) -> tuple[int, ...]:
    """`_churn` through a real sidecar (its listener, or its admin API)."""

    async def main() -> tuple[int, ...]:
        async with ScriptableUpstream() as up:
            doc = {
                "service": "t",
                "admin": {"address": f"{HOST}:0"},
                "listeners": [{"name": "in", "address": f"{HOST}:0", "routes": [{"cluster": "app"}]}],
                "clusters": [{"name": "app", "endpoints": [up.address]}],
            }
            async with running_sidecar(load_config_text(json.dumps(doc))) as rt:
                assert rt.admin is not None
                port = rt.admin.port if admin else rt.listeners[0].port
                left = await _churn(port, path, kinds, lambda: not rt.listeners[0].connections)
                if not admin:
                    assert len(up.requests) == CONNECTIONS + 1
                return left

    return uvloop.run(main())


# /close: the upstream answers with `connection: close`, so each request opens (and closes) an upstream
# connection too; /: the upstream keeps its connection, which goes back to the pool.
@pytest.mark.parametrize("path", ["/close", "/"])
def test_closed_connections_leave_no_cycles(path: str) -> None:
    down, up = _left_behind(path, DOWN_UP, admin=False)
    assert down <= 0 and up <= 0, (
        f"{down} downstream and {up} upstream connections of {CONNECTIONS} closed ones were not freed "
        "(a reference cycle)"
    )


def test_closed_tls_connections_leave_no_cycles(tmp_path: Path) -> None:
    """Connections on Pillion's TLS transport too: client -> A -> mTLS -> B -> app, where A keeps no idle
    connection, so every request opens and closes an mTLS connection on both sidecars."""
    init_ca(tmp_path / "ca")
    ids = {
        side: issue_svid(tmp_path / "ca", f"spiffe://example.org/ns/t/sa/{side}", tmp_path / side)
        for side in "ab"
    }

    def identity(side: str) -> dict[str, str]:
        svid = ids[side]
        return {"cert": str(svid.cert), "key": str(svid.key), "trust_bundle": str(svid.bundle)}

    async def main() -> tuple[int, ...]:
        async with ScriptableUpstream() as up:
            b_doc = {
                "service": "b",
                "admin": {"address": f"{HOST}:0"},
                "identity": identity("b"),
                "listeners": [
                    {
                        "name": "inbound",
                        "address": f"{HOST}:0",
                        "tls": {"mode": "strict"},
                        "routes": [{"cluster": "app"}],
                    }
                ],
                "clusters": [{"name": "app", "endpoints": [up.address]}],
            }
            async with running_sidecar(load_config_text(json.dumps(b_doc))) as b:
                a_doc = {
                    "service": "a",
                    "admin": {"address": f"{HOST}:0"},
                    "identity": identity("a"),
                    "listeners": [{"name": "outbound", "address": f"{HOST}:0", "routes": [{"cluster": "b"}]}],
                    "clusters": [
                        {
                            "name": "b",
                            "endpoints": [f"{HOST}:{b.listeners[0].port}"],
                            "tls": {"mode": "mesh", "peer": "spiffe://example.org/ns/t/sa/b"},
                            "max_idle_connections": 0,
                        }
                    ],
                }
                async with running_sidecar(load_config_text(json.dumps(a_doc))) as a:
                    left = await _churn(
                        a.listeners[0].port,
                        "/",
                        (("pillion.tls.transport", "TlsTransport"), *DOWN_UP),
                        lambda: not a.listeners[0].connections and not b.listeners[0].connections,
                    )
                    assert len(up.requests) == CONNECTIONS + 1
                    return left

    transports, down, up = uvloop.run(main())
    assert transports <= 0 and down <= 0 and up <= 0, (
        f"{transports} TLS transports, {down} downstream and {up} upstream connections of {CONNECTIONS} "
        "closed ones on each side were not freed (a reference cycle)"
    )


def test_closed_admin_connections_leave_no_cycles() -> None:
    """The admin server's connections too (a scraper or `pillion top` may open one per poll)."""
    (left,) = _left_behind("/ready", (("pillion.admin.server", "_Connection"),), admin=True)
    assert left <= 0, f"{left} of {CONNECTIONS} closed admin connections were not freed"
