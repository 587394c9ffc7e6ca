"""The calibration row: the smallest uvloop + httptools keep-alive reverse proxy that serves the benchmark.

`python bench/minimal_proxy.py LISTEN_PORT UPSTREAM_PORT [--tls-in CERT KEY CA] [--tls-out CERT KEY CA]`
(127.0.0.1 both). It is what the issue means by "a minimal uvloop + httptools proxy": parse the request
head, copy its fields, add X-Forwarded-For, send it on a pooled upstream connection, copy the response
head and body back. No routing, limits, timeouts, hop-by-hop handling, request ids, metrics or error
handling; requests with bodies are not supported. It exists so `make bench` can show how much of
Pillion's cost is the Python runtime and how much is ours.

With `--tls-in` it listens for mutual TLS (TLS 1.2+, a client certificate chaining to CA required), with
`--tls-out` it connects with mutual TLS (presenting CERT, B's chain checked against CA, no name check):
two of them make the mTLS row's calibration pair, A (`--tls-out`) -> B (`--tls-in`). TLS is uvloop's
own transport (`ssl=`), the stock way; Pillion runs its own (src/pillion/tls/transport.py), which costs
less per record, so this pair is the floor of a plain uvloop + httptools pair, not of any Python one.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import cast

import httptools
import uvloop

HOST = "127.0.0.1"


class Upstream(asyncio.Protocol):
    def __init__(self, down: Downstream) -> None:
        self.down = down
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.out: list[bytes] = []
        self.phrase = b""
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def on_status(self, phrase: bytes) -> None:
        self.phrase = phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        out = [b"HTTP/1.1 %d %b\r\n" % (self.parser.get_status_code(), self.phrase)]
        for name, value in self.headers:
            out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        self.headers = []
        self.out = [b"".join(out)]

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    def data_received(self, data: bytes) -> None:
        self.done = False
        self.parser.feed_data(data)
        self.down.transport.writelines(self.out)
        self.out = []
        if self.done:
            POOL.append(self)


class Downstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.request = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"x-forwarded-for: 127.0.0.1\r\n\r\n")
        self.headers = []
        self.url = b""
        self.request = b"".join(head)

    def on_message_complete(self) -> None:
        if POOL:
            up = POOL.pop()
            up.down = self
            up.transport.write(self.request)
        else:
            self.transport.pause_reading()
            task = asyncio.ensure_future(self._connect(self.request))
            TASKS.add(task)
            task.add_done_callback(TASKS.discard)

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(lambda: Upstream(self), HOST, UPSTREAM_PORT, ssl=TLS_OUT)
        up.transport.write(request)
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)


USAGE = "LISTEN_PORT UPSTREAM_PORT [--tls-in CERT KEY CA] [--tls-out CERT KEY CA]"
POOL: list[Upstream] = []
TASKS: set[asyncio.Future[None]] = set()
UPSTREAM_PORT = 0
TLS_OUT: ssl.SSLContext | None = None


def mtls_context(server_side: bool, cert: str, key: str, ca: str) -> ssl.SSLContext:
    """Mutual TLS with the bench's SVIDs: CERT presented, the peer's certificate required and checked
    against CA; no host name check (an SVID names a workload, not a host)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve(port: int, tls_in: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Downstream, HOST, port, backlog=1024, ssl=tls_in)
    await server.serve_forever()


def parse_argv(argv: list[str]) -> tuple[int, int, dict[str, list[str]]]:
    """LISTEN_PORT UPSTREAM_PORT and the optional `--tls-in`/`--tls-out CERT KEY CA`, by hand: argparse
    would add half a MiB to the calibration row's RSS, which uvloop's own `ssl` import does not."""
    rest, tls = argv[2:], {}
    while rest[:1] in (["--tls-in"], ["--tls-out"]) and len(rest) >= 4:
        tls[rest[0]], rest = rest[1:4], rest[4:]
    if len(argv) < 2 or not all(a.isdigit() for a in argv[:2]) or rest:
        raise SystemExit(f"usage: python bench/minimal_proxy.py {USAGE}")
    return int(argv[0]), int(argv[1]), tls


if __name__ == "__main__":
    port, UPSTREAM_PORT, tls = parse_argv(sys.argv[1:])
    TLS_OUT = mtls_context(False, *tls["--tls-out"]) if "--tls-out" in tls else None
    uvloop.run(serve(port, mtls_context(True, *tls["--tls-in"]) if "--tls-in" in tls else None))
