"""A listener's max_connections: connections over it are closed on accept, counted, and the ones
admitted are unaffected."""

from __future__ import annotations

import asyncio
import json

import uvloop

from pillion.config import load_config_text
from pillion.testing.http import ClientConnection
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


def test_http_listener_max_connections() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            doc = {
                "service": "t",
                "admin": {"address": f"{HOST}:0"},
                "listeners": [
                    {
                        "name": "in",
                        "address": f"{HOST}:0",
                        "max_connections": 2,
                        "routes": [{"cluster": "app"}],
                    }
                ],
                "clusters": [{"name": "app", "endpoints": [up.address]}],
            }
            async with running_sidecar(load_config_text(json.dumps(doc))) as rt:
                port = rt.listeners[0].port
                first = await ClientConnection.open(HOST, port)
                second = await ClientConnection.open(HOST, port)
                assert (await first.request("GET", "/a")).status == 200
                assert (await second.request("GET", "/b")).status == 200
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n")
                assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed, unanswered
                writer.close()
                assert 'pillion_downstream_connections_rejected_total{listener="in"} 1' in rt.metrics_text()
                assert (await first.request("GET", "/d")).status == 200  # the admitted ones carry on
                await first.close()
                for _ in range(100):  # the freed place is given to the next connection
                    if len(rt.listeners[0].connections) < 2:
                        break
                    await asyncio.sleep(0.01)
                async with await ClientConnection.open(HOST, port) as third:
                    assert (await third.request("GET", "/e")).status == 200
                await second.close()
                assert [r.target for r in up.requests] == ["/a", "/b", "/d", "/e"]
                assert 'pillion_downstream_connections_active{listener="in"} ' in rt.metrics_text()

    uvloop.run(main())
