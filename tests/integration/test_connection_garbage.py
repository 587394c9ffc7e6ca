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


def _alive(name: str) -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == name)


async def _one_request(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path.encode())
    answer = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return answer


# /close: the upstream answers with `connection: close`, so each request opens (and closes) an upstream
# connection too; /: the upstream keeps its connection, which goes back to the pool.
@pytest.mark.parametrize("path", ["/close", "/"])
def test_closed_connections_leave_no_cycles(path: str) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            doc = {
                "service": "t",
                "admin": {"address": f"{HOST}:0"},
                "listeners": [{"name": "in", "address": f"{HOST}:0", "routes": [{"cluster": "app"}]}],
                "clusters": [{"name": "app", "endpoints": [up.address]}],
            }
            async with running_sidecar(load_config_text(json.dumps(doc))) as rt:
                listener = rt.listeners[0]
                assert (await _one_request(listener.port, path)).startswith(b"HTTP/1.1 200 ")  # warm
                gc.collect()
                gc.disable()
                try:
                    before = _alive("DownstreamConnection"), _alive("UpstreamConnection")
                    for _ in range(CONNECTIONS):
                        assert (await _one_request(listener.port, path)).startswith(b"HTTP/1.1 200 ")
                    for _ in range(200):  # until the loop has run the last connection_lost callbacks
                        after = _alive("DownstreamConnection"), _alive("UpstreamConnection")
                        if not listener.connections and after <= before:
                            break
                        await asyncio.sleep(0.01)
                finally:
                    gc.enable()
                assert len(up.requests) == CONNECTIONS + 1
                assert after <= before, (
                    f"{after[0] - before[0]} downstream and {after[1] - before[1]} upstream connections "
                    f"of {CONNECTIONS} closed ones were not freed (a reference cycle)"
                )

    uvloop.run(main())
