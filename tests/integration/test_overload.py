"""Process-wide overload protection: a connection limit across listeners and a memory limit, each
shedding with a count and recovering by itself. The memory test raises this very process's resident
memory for real (the sidecar runs in-process) and then frees it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pillion.runtime.runtime import Runtime
from pillion.telemetry.process import resident_bytes
from pillion.testing.http import ClientConnection
from pillion.testing.loops import Run
from pillion.testing.metrics import metric
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
MiB = 1 << 20


async def _closed_unanswered(port: int) -> bool:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 2.0) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def _until(predicate: Callable[[], bool], seconds: float) -> bool:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def test_max_connections_counts_every_listener(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg = sidecar_config([up.address], overload={"max_connections": 3})
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                clients = [await ClientConnection.open(HOST, port) for _ in range(3)]
                for c in clients:
                    assert (await c.request("GET", "/a")).status == 200
                assert await _closed_unanswered(port)
                assert metric(rt, "pillion_overload_shed_total", action="connection") == 1
                await clients.pop().close()
                assert await _until(lambda: rt.overload.connections < 3, 2.0)
                async with await ClientConnection.open(HOST, port) as again:
                    assert (await again.request("GET", "/b")).status == 200
                for c in clients:
                    assert (await c.request("GET", "/c")).status == 200  # the admitted ones carry on
                    await c.close()
                assert await _until(lambda: rt.overload.connections == 0, 2.0)

    run(main())


def _active(rt: Runtime) -> float:
    return metric(rt, "pillion_overload_active", resource="memory")


def test_memory_over_the_limit_sheds_then_recovers(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            limit = resident_bytes() + 64 * MiB
            cfg = sidecar_config([up.address], overload={"max_memory": limit, "check_interval": "50ms"})
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                client = await ClientConnection.open(HOST, port)
                assert (await client.request("GET", "/before")).status == 200
                ballast = b"\x01" * (128 * MiB)  # written, so every page is resident
                assert await _until(lambda: _active(rt) == 1, 3.0), (resident_bytes(), limit)
                shed = await client.request("GET", "/during")
                assert shed.status == 503 and shed.header("x-pillion-error") == "overloaded"
                assert shed.header("connection") == "close"
                assert await _closed_unanswered(port)  # new connections are refused too
                assert metric(rt, "pillion_overload_shed_total", action="request") == 1
                assert metric(rt, "pillion_overload_shed_total", action="connection") == 1
                del ballast
                assert await _until(lambda: _active(rt) == 0, 3.0), (resident_bytes(), limit)
                async with await ClientConnection.open(HOST, port) as after:
                    assert (await after.request("GET", "/after")).status == 200
                await client.close()
                assert [r.target for r in up.requests] == ["/before", "/after"]

    run(main())
