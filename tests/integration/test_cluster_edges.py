"""Edge cases of connection limits and retries that once left a request hanging (found in review):
a failed connect must free its slot for a waiting request, a request that gives up waiting must free
its place in the queue, and a retry after the upstream stopped reading must not stay paused.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Coroutine
from typing import Any

import uvloop

from pillion.testing.ports import free_port
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


async def status_of(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit)
    return head.split(b"\r\n")[0]


def test_a_failed_connect_frees_its_slot_for_the_request_waiting_at_max_connections() -> None:
    async def main() -> None:
        dead = f"{HOST}:{free_port()}"  # nothing listens there
        cfg = sidecar_config([dead], cluster={"circuit_breaker": {"max_connections": 1}})
        async with running_sidecar(cfg) as rt:
            port = rt.listeners[0].port
            clients = [await asyncio.open_connection(HOST, port) for _ in range(2)]
            for _, writer in clients:
                writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            for reader, _ in clients:  # both answered at once, neither left waiting
                assert await status_of(reader, 2.0) == b"HTTP/1.1 502 Bad Gateway"
            cluster = rt.clusters["app"]
            assert (cluster.connections, cluster.pending, len(cluster.waiters)) == (0, 0, 0)
            for _, writer in clients:
                writer.close()

    run(main())


def test_a_request_that_times_out_while_waiting_leaves_the_queue() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg = sidecar_config(
                [up.address],
                routes=[
                    {"match": {"prefix": "/delay/"}, "cluster": "app", "timeout": "5s"},
                    {"match": {"prefix": "/"}, "cluster": "app", "timeout": "300ms"},
                ],
                cluster={"circuit_breaker": {"max_connections": 1, "max_pending": 2}},
            )
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                cluster = rt.clusters["app"]
                busy_r, busy_w = await asyncio.open_connection(HOST, port)
                busy_w.write(b"GET /delay/1 HTTP/1.1\r\nhost: x\r\n\r\n")  # holds the one connection
                await asyncio.sleep(0.1)
                waiting = [await asyncio.open_connection(HOST, port) for _ in range(2)]
                for _, writer in waiting:
                    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                for reader, _ in waiting:  # the route timeout covers the wait for a connection
                    assert await status_of(reader, 2.0) == b"HTTP/1.1 504 Gateway Timeout"
                assert (cluster.pending, len(cluster.waiters)) == (0, 0)
                assert await status_of(busy_r) == b"HTTP/1.1 200 OK"
                fresh_r, fresh_w = await asyncio.open_connection(HOST, port)
                fresh_w.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                assert await status_of(fresh_r) == b"HTTP/1.1 200 OK"
                for writer in (busy_w, fresh_w, *(w for _, w in waiting)):
                    writer.close()

    run(main())


def test_a_retry_after_the_upstream_stopped_reading_an_upload_is_not_left_paused() -> None:
    accepted = 0

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        if accepted == 1:  # the first try: read nothing until Pillion's send buffer is full, then reset
            await asyncio.sleep(0.5)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((HOST, 0))
        server = await asyncio.start_server(app, sock=sock)
        address = f"{HOST}:{sock.getsockname()[1]}"
        retries = {"on": ["reset"], "buffer": "64MiB", "backoff": {"base": "1ms", "max": "2ms"}}
        cfg = sidecar_config(
            [address],
            routes=[{"match": {"prefix": "/"}, "cluster": "app", "timeout": "5s", "retries": retries}],
        )
        async with server, running_sidecar(cfg) as rt:
            reader, writer = await asyncio.open_connection(HOST, rt.listeners[0].port)
            size = 16_000_000
            writer.write(b"PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
            writer.write(b"x" * size)
            assert await status_of(reader, 8.0) == b"HTTP/1.1 200 OK"
            assert accepted == 2
            writer.close()

    run(main())


def test_a_client_that_leaves_while_waiting_for_a_connection_frees_its_place_at_once() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cfg = sidecar_config(
                [up.address], cluster={"circuit_breaker": {"max_connections": 1, "max_pending": 2}}
            )
            async with running_sidecar(cfg) as rt:
                port = rt.listeners[0].port
                cluster = rt.clusters["app"]
                busy_r, busy_w = await asyncio.open_connection(HOST, port)
                busy_w.write(b"GET /delay/1 HTTP/1.1\r\nhost: x\r\n\r\n")  # holds the one connection
                await asyncio.sleep(0.1)
                for _ in range(2):  # wait in the queue, then give up
                    _, writer = await asyncio.open_connection(HOST, port)
                    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    await asyncio.sleep(0.05)
                    writer.close()
                for _ in range(40):  # well before the busy request (1 s) or any timeout
                    if cluster.pending == 0:
                        break
                    await asyncio.sleep(0.01)
                assert (cluster.pending, len(cluster.waiters)) == (0, 0)
                assert await status_of(busy_r) == b"HTTP/1.1 200 OK"
                busy_w.close()

    run(main())


def test_an_endpoint_dns_dropped_takes_its_metric_series_with_it() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up, running_sidecar(sidecar_config([up.address])) as rt:
            cluster = rt.clusters["app"]
            host, port = up.address.rsplit(":", 1)
            gone = f"127.0.0.2:{port}"
            cluster.set_endpoints([(host, int(port), 1), ("127.0.0.2", int(port), 1)])
            assert f'endpoint="{gone}"' in rt.metrics_text()
            cluster.set_endpoints([(host, int(port), 1)])  # the next DNS answer no longer has it
            text = rt.metrics_text()
            assert f'endpoint="{gone}"' not in text and f'endpoint="{up.address}"' in text

    uvloop.run(main())
