"""The TCP proxy on real loopback sockets: a real Runtime with a `protocol: tcp` listener in front of a
real redis-server and of an in-process echo server (pillion.testing.echo).

Each scenario runs under uvloop and asserts on what the client got, what the upstream saw, and what the
metrics counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import uvloop

from pillion.config import Config, load_config_text
from pillion.proxy.tcp import TcpListener
from pillion.runtime.runtime import Runtime
from pillion.testing.echo import EchoServer
from pillion.testing.metrics import metric
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.sidecar import running_sidecar

HOST = "127.0.0.1"
T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def tcp_config(
    endpoints: Sequence[str],
    *,
    max_connections: int = 0,
    idle_timeout: str = "300s",
    connect_timeout: str = "1s",
    drain_timeout: str = "5s",
    circuit_breaker: dict[str, int] | None = None,
) -> Config:
    """One tcp listener `db` forwarding to cluster `app`."""
    doc = {
        "service": "test",
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "db",
                "address": "127.0.0.1:0",
                "protocol": "tcp",
                "cluster": "app",
                "max_connections": max_connections,
                "limits": {"idle_timeout": idle_timeout},
            }
        ],
        "clusters": [
            {
                "name": "app",
                "endpoints": list(endpoints),
                "connect_timeout": connect_timeout,
                **({"circuit_breaker": circuit_breaker} if circuit_breaker else {}),
            }
        ],
        "drain_timeout": drain_timeout,
    }
    return load_config_text(json.dumps(doc))


def listener(rt: Runtime) -> TcpListener:
    li = rt.listeners[0]
    assert isinstance(li, TcpListener)
    return li


async def within(aw: Awaitable[T], seconds: float = 5.0) -> T:
    async with asyncio.timeout(seconds):
        return await aw


async def connect(port: int) -> Streams:
    return await within(asyncio.open_connection(HOST, port))


async def ping(streams: Streams, data: bytes = b"ping") -> None:
    """Send `data` and expect it echoed back."""
    reader, writer = streams
    writer.write(data)
    assert await within(reader.readexactly(len(data))) == data


async def close(streams: Streams) -> None:
    writer = streams[1]
    writer.close()
    with suppress(OSError, TimeoutError):
        await within(writer.wait_closed())


async def ending(reader: asyncio.StreamReader, seconds: float = 5.0) -> str:
    """How the connection ends, with nothing more to read first: "eof" or "reset"."""
    try:
        rest = await within(reader.read(), seconds)
    except ConnectionResetError:
        return "reset"
    assert rest == b"", f"expected the end, got {rest[:100]!r}"
    return "eof"


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Poll `condition()` every 20 ms until it is true; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@asynccontextmanager
async def echo_behind_proxy(**options: Any) -> AsyncIterator[tuple[EchoServer, Runtime, int]]:
    farewell = options.pop("farewell", b"")
    async with (
        EchoServer(farewell=farewell) as echo,
        running_sidecar(tcp_config([echo.address], **options)) as rt,
    ):
        yield echo, rt, listener(rt).port


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- a real database-style server --------------------------------------------------------------------


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_redis_set_and_get_through_the_proxy() -> None:
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    assert server and cli, "redis-server and redis-cli are needed: `make system-deps` installs them"

    async def main() -> None:
        port = free_port()
        argv = [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        async with (
            ProcessRunner([*argv, "--daemonize", "no"], wait_port=(HOST, port)),
            running_sidecar(tcp_config([f"{HOST}:{port}"])) as rt,
        ):
            proxy_port = listener(rt).port
            reader, writer = await connect(proxy_port)
            writer.write(_resp(b"SET", b"greeting", b"hello pillion"))
            assert await within(reader.readexactly(5)) == b"+OK\r\n"
            writer.write(_resp(b"GET", b"greeting"))
            assert await within(reader.readexactly(20)) == b"$13\r\nhello pillion\r\n"
            await close((reader, writer))

            # redis-cli, a real client, sees what the raw exchange stored.
            proc = await asyncio.create_subprocess_exec(
                cli, "-h", HOST, "-p", str(proxy_port), "GET", "greeting", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await within(proc.communicate())
            assert proc.returncode == 0 and out == b"hello pillion\n"

            await until(lambda: not listener(rt).connections)
            assert metric(rt, "pillion_tcp_connections_total", listener="db") == 2
            assert metric(rt, "pillion_tcp_connections_active", listener="db") == 0
            assert metric(rt, "pillion_tcp_received_bytes_total", listener="db") > 60
            assert metric(rt, "pillion_tcp_sent_bytes_total", listener="db") >= 5 + 20 + 19

    run(main())


# -- streaming and flow control -------------------------------------------------------------------------


def test_fifty_megabytes_both_ways_arrive_intact() -> None:
    total = 50 * 1024 * 1024
    block = payload(1, 1024 * 1024 + 7)  # odd size, so blocks straddle socket reads differently

    async def main() -> None:
        async with echo_behind_proxy() as (echo, rt, port):
            reader, writer = await connect(port)
            sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()

            async def send() -> None:
                sent = 0
                while sent < total:
                    chunk = block[: min(len(block), total - sent)]
                    writer.write(chunk)
                    sent_hash.update(chunk)
                    sent += len(chunk)
                    await writer.drain()
                writer.write_eof()

            async def receive() -> int:
                got = 0
                while chunk := await reader.read(256 * 1024):
                    got_hash.update(chunk)
                    got += len(chunk)
                return got

            got: int
            _, got = await within(asyncio.gather(send(), receive()), 60)
            assert got == total
            assert got_hash.hexdigest() == sent_hash.hexdigest()
            await close((reader, writer))
            await until(lambda: not listener(rt).connections)
            assert metric(rt, "pillion_tcp_received_bytes_total", listener="db") == total
            assert metric(rt, "pillion_tcp_sent_bytes_total", listener="db") == total
            assert echo.received == total

    run(main())


def test_a_client_that_does_not_read_stalls_the_stream_not_pillions_memory() -> None:
    total = 256 * 1024 * 1024
    block = payload(2, 1024 * 1024)

    async def main() -> None:
        async with echo_behind_proxy() as (_, rt, port):
            reader, writer = await connect(port)
            sent = 0

            async def send() -> None:
                nonlocal sent
                while sent < total:
                    writer.write(block)
                    sent += len(block)
                    await writer.drain()
                writer.write_eof()

            async def stalled() -> None:
                # The client reads nothing: every buffer on the way fills and the sender must stop.
                last = -1
                while sent != last:
                    last = sent
                    await asyncio.sleep(0.5)

            sending = asyncio.gather(send())
            await within(stalled(), 30)
            assert sent < total
            conn = next(iter(listener(rt).connections))
            assert conn.transport is not None and conn.upstream is not None
            assert conn.upstream.transport is not None
            # What Pillion holds is one socket read per direction, whatever the stream's length.
            assert conn.transport.get_write_buffer_size() <= 1024 * 1024
            assert conn.upstream.transport.get_write_buffer_size() <= 1024 * 1024

            digest = hashlib.sha256()
            got = 0
            while chunk := await within(reader.read(1024 * 1024), 30):
                digest.update(chunk)
                got += len(chunk)
            await within(sending)
            assert got == total
            assert digest.hexdigest() == hashlib.sha256(block * (total // len(block))).hexdigest()
            await close((reader, writer))

    run(main())


# -- half-close, resets -----------------------------------------------------------------------------


def test_client_half_close_still_receives_the_rest() -> None:
    async def main() -> None:
        async with echo_behind_proxy(farewell=b"bye") as (echo, rt, port):
            reader, writer = await connect(port)
            writer.write(b"last words")
            writer.write_eof()  # the echo reads EOF only through Pillion's write_eof
            rest = await within(reader.read())  # to EOF
            assert rest == b"last wordsbye"
            await close((reader, writer))
            await until(lambda: not listener(rt).connections and not echo.connections)
            assert echo.resets == 0

    run(main())


def test_upstream_half_close_lets_the_client_keep_sending() -> None:
    async def main() -> None:
        heard: list[bytes] = []

        async def server_first(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello")
            w.write_eof()
            heard.append(await r.read())  # everything the client sends after our EOF
            w.close()

        server = await asyncio.start_server(server_first, HOST, 0)
        try:
            up_port = server.sockets[0].getsockname()[1]
            async with running_sidecar(tcp_config([f"{HOST}:{up_port}"])) as rt:
                reader, writer = await connect(listener(rt).port)
                assert await within(reader.read()) == b"hello"  # then EOF
                writer.write(b"still here")
                writer.write_eof()
                await until(lambda: bool(heard))
                assert heard == [b"still here"]
                await close((reader, writer))
                await until(lambda: not listener(rt).connections)
        finally:
            server.close()

    run(main())


def test_upstream_reset_resets_the_client_and_back() -> None:
    async def main() -> None:
        async with echo_behind_proxy() as (echo, rt, port):
            streams = await connect(port)
            await ping(streams)
            echo.reset_all()
            assert await ending(streams[0]) == "reset"
            await close(streams)

            # A client's reset reaches the upstream as a reset.
            sock = socket.create_connection((HOST, port))
            try:
                sock.sendall(b"x")
                await until(lambda: echo.received == 5)  # "ping" + "x"
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                sock.close()
            await until(lambda: echo.resets == 1)
            await until(lambda: not listener(rt).connections)

    run(main())


# -- limits -------------------------------------------------------------------------------------------


def test_connections_over_max_connections_are_closed_and_counted() -> None:
    async def main() -> None:
        async with echo_behind_proxy(max_connections=2) as (echo, rt, port):
            first, second = await connect(port), await connect(port)
            await ping(first)
            await ping(second)
            third = await connect(port)
            third[1].write(b"anyone?")
            await ending(third[0])
            assert metric(rt, "pillion_tcp_connections_rejected_total", listener="db") == 1
            assert echo.accepted == 2
            await ping(first)  # the admitted ones are unaffected
            await close(third)
            await close(first)
            await until(lambda: len(listener(rt).connections) == 1)
            fourth = await connect(port)
            await ping(fourth)
            assert metric(rt, "pillion_tcp_connections_total", listener="db") == 3
            await close(second)
            await close(fourth)

    run(main())


def test_cluster_max_connections_is_a_circuit_breaker_for_tcp_too() -> None:
    async def main() -> None:
        async with echo_behind_proxy(circuit_breaker={"max_connections": 1}) as (echo, rt, port):
            first = await connect(port)
            await ping(first)
            second = await connect(port)
            second[1].write(b"anyone?")
            await ending(second[0])  # closed: the cluster's one connection is taken
            assert metric(rt, "pillion_upstream_overflows_total", cluster="app", limit="connections") == 1
            assert echo.accepted == 1
            await close(second)
            await close(first)
            await until(lambda: rt.clusters["app"].connections == 0)
            third = await connect(port)  # the slot came back with the first connection's end
            await ping(third)
            await close(third)

    run(main())


def test_idle_connections_are_closed_and_busy_ones_kept() -> None:
    async def main() -> None:
        async with echo_behind_proxy(idle_timeout="1s") as (echo, rt, port):
            idle, busy = await connect(port), await connect(port)
            await ping(idle)
            loop = asyncio.get_running_loop()
            start = loop.time()
            closed_at = None
            while loop.time() - start < 4:
                await ping(busy)  # bytes move on this one every 0.2 s
                await asyncio.sleep(0.2)
                if closed_at is None and (idle[0].at_eof() or idle[0].exception() is not None):
                    closed_at = loop.time() - start
            assert closed_at is not None and 1.0 <= closed_at <= 3.5
            assert metric(rt, "pillion_tcp_idle_timeouts_total", listener="db") == 1
            await ping(busy)
            assert len(echo.connections) == 1  # the idle one's upstream was closed too
            await close(idle)
            await close(busy)

    run(main())


# -- endpoints ----------------------------------------------------------------------------------------


def test_a_dead_endpoint_is_skipped_for_a_live_one() -> None:
    dead = f"{HOST}:{free_port()}"

    async def main() -> None:
        async with EchoServer() as echo, running_sidecar(tcp_config([dead, echo.address])) as rt:
            port = listener(rt).port
            for _ in range(3):
                streams = await connect(port)
                await ping(streams)
                await close(streams)
            assert echo.accepted == 3
            assert metric(rt, "pillion_upstream_connect_failures_total", endpoint=dead) >= 1
            assert metric(rt, "pillion_tcp_connect_failures_total", listener="db") == 0

    run(main())


def test_no_reachable_endpoint_closes_the_client() -> None:
    dead = f"{HOST}:{free_port()}"

    async def main() -> None:
        async with running_sidecar(tcp_config([dead])) as rt:
            reader, writer = await connect(listener(rt).port)
            writer.write(b"hello?")
            await ending(reader)
            await close((reader, writer))
            await until(lambda: not listener(rt).connections)
            assert metric(rt, "pillion_tcp_connect_failures_total", listener="db") == 1
            # A cluster of one: the same endpoint is tried three times.
            assert metric(rt, "pillion_upstream_connect_failures_total", endpoint=dead) == 3

    run(main())


# -- lifecycle ----------------------------------------------------------------------------------------


def test_draining_keeps_open_connections_until_the_drain_timeout() -> None:
    async def main() -> None:
        async with EchoServer() as echo:
            rt = Runtime(tcp_config([echo.address], drain_timeout="0.5s"))
            await rt.start()
            try:
                port = listener(rt).port
                assert await rt.readiness() == (True, "ready")
                view = rt.listeners_view()[0]
                assert view["protocol"] == "tcp" and view["bound"] is True and view["cluster"] == "app"
                streams = await connect(port)
                await ping(streams)

                rt.drain()
                assert (await rt.readiness())[0] is False
                try:
                    await connect(port)
                except OSError:
                    pass
                else:
                    raise AssertionError("a draining listener accepted a connection")
                await ping(streams, b"still served")
                assert rt.listeners_view()[0]["connections"] == 1
            finally:
                rt.quit()
                await rt.shutdown()  # the drain timeout cuts the connection still open
            await ending(streams[0])
            await close(streams)
            await until(lambda: not echo.connections)

    run(main())
