"""A closed connection is freed by reference counting, not left to Python's cyclic collector.

Each connection's parser holds the connection's methods as callbacks; unless the connection lets go of
the parser when it closes, the two form a cycle that only the collector frees, and connection churn
(clients without keep-alive, a slowloris wave) turns into frequent collections and long full ones.
With the collector off, such cycles stay in memory, so counting the connection objects still alive
after the connections closed shows whether any were left behind.
"""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
import uvloop

from pillion.config import load_config_text
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
CONNECTIONS = 40


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


def _left_behind(path: str, kinds: tuple[tuple[str, str], ...], *, admin: bool) -> tuple[int, ...]:
    """With the collector off, CONNECTIONS requests to `path`, each on its own connection, through a real
    sidecar (its listener, or its admin API): how many more objects of each kind exist afterwards."""

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
                assert (await _one_request(port, path)).startswith(b"HTTP/1.1 200 ")  # warm
                gc.collect()
                gc.disable()
                try:
                    before = _alive(kinds)
                    for _ in range(CONNECTIONS):
                        assert (await _one_request(port, path)).startswith(b"HTTP/1.1 200 ")
                    for _ in range(200):  # until the loop has run the last connection_lost callbacks
                        after = _alive(kinds)
                        if all(map(int.__le__, after, before)) and not rt.listeners[0].connections:
                            break
                        await asyncio.sleep(0.01)
                finally:
                    gc.enable()
                if not admin:
                    assert len(up.requests) == CONNECTIONS + 1
                return tuple(a - b for a, b in zip(after, before, strict=True))

    return uvloop.run(main())


# /close: the upstream answers with `connection: close`, so each request opens (and closes) an upstream
# connection too; /: the upstream keeps its connection, which goes back to the pool.
@pytest.mark.parametrize("path", ["/close", "/"])
def test_closed_connections_leave_no_cycles(path: str) -> None:
    kinds = (
        ("pillion.proxy.downstream", "DownstreamConnection"),
        ("pillion.proxy.upstream", "UpstreamConnection"),
    )
    down, up = _left_behind(path, kinds, admin=False)
    assert down <= 0 and up <= 0, (
        f"{down} downstream and {up} upstream connections of {CONNECTIONS} closed ones were not freed "
        "(a reference cycle)"
    )


def test_closed_admin_connections_leave_no_cycles() -> None:
    """The admin server's connections too (a scraper or `pillion top` may open one per poll)."""
    (left,) = _left_behind("/ready", (("pillion.admin.server", "_Connection"),), admin=True)
    assert left <= 0, f"{left} of {CONNECTIONS} closed admin connections were not freed"
