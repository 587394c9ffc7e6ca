"""DirectSSLObject: every Pillion context makes it, and it behaves as ssl.SSLObject does, on real handshakes
and records over memory BIOs."""

from __future__ import annotations

import ssl
from typing import cast

import pytest

from pillion.tls import contexts
from pillion.tls.ca import init_ca, issue_svid
from pillion.tls.sslobject import DirectSSLObject

A = "spiffe://example.org/ns/t/sa/a"
B = "spiffe://example.org/ns/t/sa/b"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A mesh client context (A's SVID) and a mesh server context (B's), from one CA."""
    root = tmp_path_factory.mktemp("mesh")
    init_ca(root / "ca")
    a = issue_svid(root / "ca", A, root / "a")
    b = issue_svid(root / "ca", B, root / "b")
    client = contexts.mesh_client(str(a.cert), str(a.key), str(a.bundle))
    server = contexts.mesh_server(str(b.cert), str(b.key), str(b.bundle))
    return client, server


class _Pair:
    """A client and a server SSL object joined by memory BIOs, handshake done."""

    def __init__(self, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client_ctx.wrap_bio(self.c_in, self.c_out)
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        for _ in range(10):  # bounded: a TLS 1.3 handshake takes two round trips
            done = 0
            for end in (self.client, self.server):
                try:
                    end.do_handshake()
                    done += 1
                except ssl.SSLWantReadError:
                    pass
            self.carry()
            if done == 2:
                return
        raise AssertionError("handshake did not finish")

    def carry(self) -> None:
        self.s_in.write(self.c_out.read())
        self.c_in.write(self.s_out.read())


def _exchange(pair: _Pair) -> list[object]:
    """Records both ways through the per-record methods, with every outcome they can have: data, data
    into a buffer, nothing pending, nothing to read, and end of stream after close_notify."""
    seen: list[object] = []
    seen.append(pair.client.write(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"))
    with pytest.raises(ssl.SSLWantReadError):
        pair.server.read(1024)  # the record is still in the client's outgoing BIO
    pair.carry()
    seen.append(pair.server.read(5))
    seen.append(pair.server.pending())  # the rest of the record, decrypted and buffered
    seen.append(pair.server.read(1024))
    seen.append(pair.server.pending())
    seen.append(pair.server.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
    pair.carry()
    buffer = bytearray(64)
    count = cast(int, pair.client.read(64, buffer))  # (typeshed says bytes; with a buffer it is a count)
    seen.append((count, bytes(buffer[:count])))
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.read(1024)
    with pytest.raises(ssl.SSLWantReadError):
        pair.server.unwrap()  # close_notify sent; the peer's not yet seen
    pair.carry()
    seen.append(pair.client.read(1024))  # end of stream: close_notify
    return seen


@pytest.mark.parametrize("role", ["mesh_client", "mesh_server", "simple_client", "switching"])
def test_every_context_makes_direct_ssl_objects(
    role: str, mesh: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    client, server = mesh
    ctx = {
        "mesh_client": client,
        "mesh_server": server,
        "simple_client": contexts.simple_client(None),
        "switching": contexts.switching(server, lambda: server),
    }[role]
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=role in ("mesh_server", "switching"))
    assert isinstance(obj, DirectSSLObject) and isinstance(obj, ssl.SSLObject)
    inner = obj._sslobj  # type: ignore[attr-defined]
    for name in ("read", "write", "pending"):
        method = getattr(obj, name)
        assert type(method).__name__ == "builtin_function_or_method", name  # C, not a Python frame
        assert method.__self__ is inner, name


def test_records_behave_as_with_ssl_sslobject(mesh: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    client, server = mesh
    direct = _exchange(_Pair(client, server))
    client.sslobject_class = server.sslobject_class = ssl.SSLObject
    try:
        plain = _exchange(_Pair(client, server))
    finally:
        client.sslobject_class = server.sslobject_class = DirectSSLObject
    assert direct == plain
    assert direct == [
        27, b"GET /", 22, b" HTTP/1.1\r\nHost: b\r\n\r\n", 0, 40,
        (40, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"), b"",
    ]  # fmt: skip


def test_the_rest_is_ssl_sslobjects(mesh: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """The peer's certificate, the version and the context, as a listener and XFCC read them."""
    client, server = mesh
    pair = _Pair(client, server)
    der = pair.server.getpeercert(binary_form=True)
    assert der is not None and der[:1] == b"\x30"
    assert pair.server.version() == pair.client.version() == "TLSv1.3"
    assert pair.server.context is server and pair.server.server_side and not pair.client.server_side
