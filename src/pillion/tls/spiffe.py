"""X509-SVID leaf checks: what a peer certificate must satisfy beyond OpenSSL's chain verification.

Theory of operation: OpenSSL verifies the chain during the handshake (signatures up to the bundle,
validity dates, the CA flag of issuers), but it has no notion of SPIFFE: it accepts a CA certificate
presented as a leaf, a leaf that may sign certificates, a certificate with several URIs or none, and
any identity the CA issued. `check_svid` runs once per handshake, on the DER leaf that
`SSLObject.getpeercert(binary_form=True)` returns (read by tls/der.py), and applies the X509-SVID leaf
rules and the caller's authorization (trust domain, exact ID). Structure is checked before identity, so
a malformed SVID is reported as such even when its ID would also be refused, and a CA certificate is
reported as a CA rather than as a certificate without a SPIFFE ID. Each refusal carries a short `reason` from
`REASONS`, a bounded set suitable as a metric label. Nothing is cached: one parse costs tens of
microseconds, noise next to the handshake's own signature checks.
"""

from __future__ import annotations

from pillion.tls import der as x509der
from pillion.tls.identity import parse_spiffe_id

# Every `SvidError.reason`, for declaring stats up front.
REASONS = (
    "no_certificate",  # the peer sent none (raised by callers: getpeercert() returned None)
    "bad_certificate",  # not parseable as X.509 (or a malformed extension)
    "not_spiffe",  # no URI SAN, or it is not a valid workload SPIFFE ID
    "two_uri_sans",  # more than one URI SAN: the SVID's identity is ambiguous
    "ca_as_leaf",  # basicConstraints CA:TRUE on the peer's own certificate
    "no_key_usage",  # the keyUsage extension is absent
    "no_digital_signature",  # keyUsage lacks digitalSignature, so the key may not sign the handshake
    "cert_sign_key_usage",  # keyUsage allows keyCertSign or cRLSign: a leaf must not sign certificates
    "wrong_trust_domain",  # a valid SVID from a trust domain the caller does not accept
    "wrong_spiffe_id",  # a valid SVID, but not the identity the caller expected
)


class SvidError(ValueError):
    """A peer certificate refused as an X509-SVID. `reason` is one of REASONS; str() is for humans."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_svid(der: bytes, *, trust_domain: str | None = None, expected: str | None = None) -> str:
    """The SPIFFE ID of the already chain-verified leaf `der`, or SvidError.

    `trust_domain` is a bare name (`example.org`) and `expected` a full ID, both compared exactly: parse
    them once with `pillion.tls.identity` when loading configuration, not per handshake.
    """
    return svid_id(read_leaf(der), trust_domain=trust_domain, expected=expected)


def read_leaf(der: bytes) -> x509der.Certificate:
    """The facts of a certificate check_svid reads; SvidError `bad_certificate` when it is malformed."""
    try:
        return x509der.read_certificate(der)
    except ValueError as exc:
        raise SvidError("bad_certificate", f"peer certificate is not valid X.509: {exc}") from None


def svid_id(
    cert: x509der.Certificate, *, trust_domain: str | None = None, expected: str | None = None
) -> str:
    """check_svid on a certificate already read."""
    _check_leaf(cert)
    spiffe_id = _uri_san(cert)
    parsed = parse_spiffe_id(spiffe_id)  # cannot fail: _uri_san checked it
    if trust_domain is not None and parsed.trust_domain != trust_domain:
        raise SvidError("wrong_trust_domain", f"peer {spiffe_id} is not in trust domain {trust_domain!r}")
    if expected is not None and spiffe_id != expected:
        raise SvidError("wrong_spiffe_id", f"peer is {spiffe_id}, expected {expected}")
    return spiffe_id


def _uri_san(cert: x509der.Certificate) -> str:
    """The single URI SAN, checked to be a workload SPIFFE ID."""
    uris = cert.uris
    if uris is None:
        raise SvidError("not_spiffe", "peer certificate has no subjectAltName, so no SPIFFE ID")
    if not uris:
        raise SvidError("not_spiffe", "peer certificate has no URI SAN, so no SPIFFE ID")
    if len(uris) > 1:
        raise SvidError("two_uri_sans", f"peer certificate has {len(uris)} URI SANs; an SVID has exactly one")
    try:
        parsed = parse_spiffe_id(uris[0])
    except ValueError as exc:
        raise SvidError("not_spiffe", f"peer URI SAN is not a SPIFFE ID: {exc}") from None
    if not parsed.is_workload:
        raise SvidError("not_spiffe", f"peer SPIFFE ID {uris[0]} has no path: it names a trust domain")
    return uris[0]


def _check_leaf(cert: x509der.Certificate) -> None:
    """basicConstraints and keyUsage as a leaf SVID must carry them."""
    if cert.is_ca:
        raise SvidError("ca_as_leaf", "peer certificate is a CA certificate (CA:TRUE), not a leaf")
    usage = cert.key_usage
    if usage is None:
        raise SvidError("no_key_usage", "peer certificate has no keyUsage extension")
    if not usage & x509der.DIGITAL_SIGNATURE:
        raise SvidError("no_digital_signature", "peer certificate's keyUsage lacks digitalSignature")
    if usage & (x509der.KEY_CERT_SIGN | x509der.CRL_SIGN):
        raise SvidError(
            "cert_sign_key_usage", "peer certificate's keyUsage allows signing certificates or CRLs"
        )
