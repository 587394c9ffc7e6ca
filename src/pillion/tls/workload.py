"""The workload identity in service: its certificate, key and trust bundle, kept current while files rotate.

Theory of operation. `load` turns the three files into a `Loaded` snapshot: the SPIFFE ID and validity
read from the leaf, and the SSL contexts built from the files (tls/contexts.py). Listeners get a
switching context that hands every new handshake the current snapshot's server context; clusters ask
for the current client context at each connect. So swapping the snapshot is the whole rotation: new
handshakes use the new certificate, established connections keep theirs.

A worker compares the files' (inode, mtime, size) every `POLL_SECONDS`; stat follows symlinks, so the
Kubernetes `..data` symlink swap shows as a change like an in-place write. A changed set of files is
loaded into a fresh snapshot, and only a snapshot that loads completely (parseable PEM, a valid SVID, a
key that matches the certificate) replaces the one in service. Files replaced one at a time pass through
a mismatched state; it is retried on the next change and reported (log and metric) only if it lasts
`GRACE_SECONDS`, so an ordinary rotation is never an error while a broken one always is.

Peers: `peer_id` checks a peer certificate OpenSSL verified against the SVID rules (tls/spiffe.py) and
this trust domain, with a small cache, since the same few peers connect over and over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from dataclasses import dataclass

from pillion.config.model import Identity as IdentityConfig
from pillion.runtime.tasks import Worker
from pillion.telemetry.stats import Registry
from pillion.tls import contexts, mux
from pillion.tls.der import first_pem_certificate
from pillion.tls.spiffe import SvidError, check_svid, read_leaf, svid_id

log = logging.getLogger("pillion.tls")

POLL_SECONDS = 0.25
GRACE_SECONDS = 1.0  # a half-rotated set of files may look broken this long before it is reported
_PEER_CACHE = 256

Signature = tuple[tuple[int, int, int] | None, ...]


class IdentityError(ValueError):
    """The identity files cannot be used; the message names the config path, the file and the problem."""


@dataclass(frozen=True, slots=True)
class Loaded:
    spiffe_id: str
    trust_domain: str
    fingerprint: str  # SHA-256 of the leaf certificate, hex
    not_before: float  # Unix time
    not_after: float
    server: ssl.SSLContext
    client: ssl.SSLContext
    server_mux: ssl.SSLContext  # the same, offering or selecting `pillion-mux/1` by ALPN (tls/mux.py)
    client_mux: ssl.SSLContext
    signature: Signature
    loaded_at: float


def _signature(config: IdentityConfig) -> Signature:
    out: list[tuple[int, int, int] | None] = []
    for path in (config.cert, config.key, config.trust_bundle):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def load(config: IdentityConfig) -> Loaded:
    """Read and check the identity files; IdentityError says what is wrong with which file."""
    signature = _signature(config)
    try:
        with open(config.cert, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise IdentityError(f"identity.cert: cannot read {config.cert}: {exc.strerror}") from None
    try:
        der = first_pem_certificate(pem)
    except ValueError:
        raise IdentityError(f"identity.cert: {config.cert}: not a PEM certificate") from None
    try:
        leaf = read_leaf(der)
        spiffe_id = svid_id(leaf)
    except SvidError as exc:
        raise IdentityError(f"identity.cert: {config.cert}: not a usable SVID: {exc}") from None
    try:
        server = contexts.mesh_server(config.cert, config.key, config.trust_bundle)
        client = contexts.mesh_client(config.cert, config.key, config.trust_bundle)
        server_mux = contexts.mesh_server(config.cert, config.key, config.trust_bundle, mux.OFFER)
        client_mux = contexts.mesh_client(config.cert, config.key, config.trust_bundle, mux.OFFER)
    except FileNotFoundError as exc:
        raise IdentityError(f"identity: cannot read {exc.filename}: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise IdentityError(
            f"identity: {config.cert}, {config.key}, {config.trust_bundle}: {_ssl_problem(exc)}"
        ) from None
    return Loaded(
        spiffe_id=spiffe_id,
        trust_domain=spiffe_id.split("/")[2],
        fingerprint=hashlib.sha256(der).hexdigest(),
        not_before=leaf.not_before,
        not_after=leaf.not_after,
        server=server,
        client=client,
        server_mux=server_mux,
        client_mux=client_mux,
        signature=signature,
        loaded_at=time.time(),
    )


def _ssl_problem(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    if "KEY_VALUES_MISMATCH" in reason:
        return "the key does not match the certificate"
    if "PEM" in reason or "NO_START_LINE" in reason:
        return "a file is not valid PEM"
    return reason or str(exc)


class WorkloadIdentity:
    """The identity in service, the worker that keeps it current, and its metrics."""

    def __init__(self, config: IdentityConfig, registry: Registry) -> None:
        self.config = config
        self.current = load(config)  # at start, a broken identity is a startup error
        self._failed: tuple[Signature, float, bool] | None = None  # (files, first seen, reported)
        self.last_error = ""
        self._peers: dict[bytes, str] = {}
        self._worker = Worker(self._watch, name="identity watch")
        reloads = registry.counter(
            "pillion_tls_identity_reloads_total",
            "Identity files loaded after they changed (`ok`), or refused as broken (`failed`: the old "
            "identity stays in service).",
            ("result",),
        )
        self.reloads_ok = reloads.labels("ok")
        self.reloads_failed = reloads.labels("failed")
        expiry = registry.gauge(
            "pillion_tls_cert_expiry_seconds",
            "Seconds until the certificate in service expires.",
            ("cert",),
        ).labels("identity")
        registry.collector(lambda: expiry.set(self.current.not_after - time.time()))

    # -- contexts --------------------------------------------------------------------------------

    def server_context(self, mux: bool = False) -> ssl.SSLContext:
        """For a listener: a context that gives each handshake the identity in service at that moment;
        with `mux`, one that selects `pillion-mux/1` when a client offers it (HTTP listeners)."""
        if mux:
            return contexts.switching(self.current.server_mux, lambda: self.current.server_mux)
        return contexts.switching(self.current.server, lambda: self.current.server)

    def client_context(self, mux: bool = False) -> ssl.SSLContext:
        return self.current.client_mux if mux else self.current.client

    def peer_id(self, der: bytes, expected: str | None = None) -> str:
        """The SPIFFE ID of a peer whose chain OpenSSL verified; SvidError when it breaks the SVID rules,
        is from another trust domain, or is not `expected`."""
        spiffe_id = self._peers.get(der)
        if spiffe_id is None:
            spiffe_id = check_svid(der, trust_domain=self.current.trust_domain)
            if len(self._peers) >= _PEER_CACHE:
                self._peers.clear()
            self._peers[der] = spiffe_id
        if expected is not None and spiffe_id != expected:
            raise SvidError("wrong_spiffe_id", f"the peer is {spiffe_id}, not {expected}")
        return spiffe_id

    # -- rotation --------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        self._worker.stop()
        await self._worker.wait_closed()

    def check(self, now: float) -> None:
        """Load the files if they changed since the identity in service was loaded."""
        signature = _signature(self.config)
        if signature == self.current.signature:
            self._failed = None
            return
        failed = self._failed
        if failed is not None and failed[0] == signature:  # this exact set of files failed already
            if not failed[2] and now - failed[1] >= GRACE_SECONDS:
                self._failed = (signature, failed[1], True)
                self.reloads_failed.value += 1
                log.error(
                    "identity files are broken; the previous certificate stays in service",
                    extra={"error": self.last_error, "spiffe_id": self.current.spiffe_id},
                )
            return
        try:
            fresh = load(self.config)
        except IdentityError as exc:
            self.last_error = str(exc)
            self._failed = (signature, now, False)
            return
        self.current = fresh
        self._failed = None
        self._peers.clear()
        self.last_error = ""
        self.reloads_ok.value += 1
        log.info(
            "identity rotated",
            extra={
                "spiffe_id": fresh.spiffe_id,
                "fingerprint": fresh.fingerprint,
                "not_after": fresh.not_after,
            },
        )

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.check(loop.time())

    def view(self) -> dict[str, object]:
        c = self.current
        return {
            "spiffe_id": c.spiffe_id,
            "fingerprint_sha256": c.fingerprint,
            "not_before": c.not_before,
            "not_after": c.not_after,
            "expires_in_seconds": round(c.not_after - time.time(), 3),
            "loaded_at": c.loaded_at,
            "cert": self.config.cert,
            "key": self.config.key,
            "trust_bundle": self.config.trust_bundle,
            "last_error": self.last_error,
        }
