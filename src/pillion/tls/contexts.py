"""SSL contexts for every TLS role Pillion plays, built one way and hardened one way.

Roles: a mesh server (mTLS: a client certificate from the trust bundle required), a mesh client (presents
the workload certificate, verifies the server against the trust bundle; the name check is replaced by a
SPIFFE ID check after the handshake, since SPIFFE IDs are not host names), a plain TLS server
(termination) and a plain TLS client (origination, verified against a CA file or the system's).

All of them: TLS 1.2 at least (1.3 preferred: OpenSSL offers it first), TLS 1.2 limited to ECDHE with
AES-GCM or ChaCha20-Poly1305 (forward secrecy, AEAD only), no compression, no renegotiation.

Rotation: a listener's socket keeps the context it was created with, so listeners get a *switching*
context whose server-name callback (which OpenSSL runs for every ClientHello, with or without SNI) puts
the current context on the connection. New handshakes use a new certificate as soon as it is swapped in;
connections already established keep theirs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def mesh_server(cert: str, key: str, bundle: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    """`alpn`: the application protocols offered, first preferred (tls/mux.py)."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def mesh_client(cert: str, key: str, bundle: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    ctx.check_hostname = False  # the peer's SPIFFE ID is checked instead (tls/spiffe.py)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=bundle)
    return ctx


def simple_server(cert: str, key: str) -> ssl.SSLContext:
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cert, key)
    return ctx


def simple_client(ca: str | None) -> ssl.SSLContext:
    """Verifies the server's chain (against `ca`, else the system's CAs) and its name (the SNI sent)."""
    ctx = _harden(ssl.create_default_context(cafile=ca))
    ctx.check_hostname = True
    return ctx


def switching(initial: ssl.SSLContext, current: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """A server context that hands each new connection `current()`, so a swapped-in context (a rotated
    certificate, a new trust bundle) applies to the next handshake."""

    def pick(sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        sslobj.context = current()

    base = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    base.verify_mode = initial.verify_mode
    base.sni_callback = pick
    return base
