"""TLS on a listener: the context its socket serves with and, for mTLS, who each client is.

`strict` and `permissive` serve the workload identity (through a switching context, so rotation applies
to the next handshake) and require a client certificate from the trust bundle; `simple` terminates TLS
with a configured certificate and asks for none. After the handshake `peer` checks a mesh client's
certificate against the SVID rules and this trust domain, and gives its SPIFFE ID and the
`x-forwarded-client-cert` value (Envoy's format: `By=<us>;Hash=<sha256 of the client's certificate>;
URI=<the client's SPIFFE ID>`) that the request carries to the app.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import TYPE_CHECKING

from pillion.config.model import ListenerTls
from pillion.tls import contexts

if TYPE_CHECKING:
    from pillion.telemetry.stats import Gauge
    from pillion.tls.workload import WorkloadIdentity


class PeerRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DownstreamTls:
    __slots__ = ("config", "context", "identity", "mesh", "mux_connections")

    def __init__(
        self, config: ListenerTls, identity: WorkloadIdentity | None, *, mux_connections: Gauge | None = None
    ) -> None:
        """`mux_connections`: given for an HTTP listener, which selects `pillion-mux/1` when a mesh client
        offers it (tls/mux.py): the gauge of its multiplexed connections open now."""
        self.config = config
        self.mux_connections = mux_connections
        mux = mux_connections is not None
        self.mesh = config.mode in ("strict", "permissive")
        if self.mesh:
            assert identity is not None  # (validated: strict and permissive need an identity)
            self.identity: WorkloadIdentity | None = identity
            self.context = identity.server_context(mux)
        else:
            assert config.cert is not None and config.key is not None
            self.identity = None
            self.context = contexts.simple_server(config.cert, config.key)

    def peer(self, sslobj: ssl.SSLObject | None) -> tuple[str, bytes] | None:
        """(SPIFFE ID, x-forwarded-client-cert value) of a mesh client; None when the listener does not
        check clients (`simple`) or the connection is plaintext (`permissive`). PeerRefused otherwise."""
        identity = self.identity
        if identity is None or sslobj is None:
            return None
        from pillion.tls.spiffe import SvidError

        der = sslobj.getpeercert(binary_form=True)
        if der is None:
            raise PeerRefused("no_client_certificate", "the client presented no certificate")
        try:
            spiffe_id = identity.peer_id(der)
        except SvidError as exc:
            raise PeerRefused(exc.reason, str(exc)) from None
        xfcc = f"By={identity.current.spiffe_id};Hash={hashlib.sha256(der).hexdigest()};URI={spiffe_id}"
        return spiffe_id, xfcc.encode()
