"""Certificates described for a human: what `pillion ca inspect` prints.

Theory of operation: `summarize` reduces a certificate to the facts an operator debugging mTLS asks
about (which identity, issued by whom, valid when, which key, which fingerprint) and runs the same
`check_svid` a peer would, so a leaf that a sidecar would refuse says why before it is deployed.
`format_summary` renders that as aligned text; the summary stays a value so an admin endpoint can reuse it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pillion.tls.ca import is_ca_certificate, read_certificates
from pillion.tls.spiffe import SvidError, check_svid


@dataclass(frozen=True, slots=True)
class CertSummary:
    """What `inspect` shows about one certificate; `svid_problem` is why check_svid would refuse a leaf."""

    subject: str
    issuer: str
    serial: int
    spiffe_id: str | None
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    is_ca: bool
    path_length: int | None
    not_before: dt.datetime
    not_after: dt.datetime
    key: str
    sha256: str
    svid_problem: str | None


def summarize(cert: x509.Certificate) -> CertSummary:
    """The facts `format_summary` shows; never raises for a parseable certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris, dns_names = (), ()
    try:
        path_length = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        path_length = None
    problem: str | None = None
    spiffe_id: str | None = None
    is_ca = is_ca_certificate(cert)
    if not is_ca:
        try:
            spiffe_id = check_svid(cert.public_bytes(serialization.Encoding.DER))
        except SvidError as exc:
            problem = f"{exc.reason}: {exc}"
    return CertSummary(
        subject=cert.subject.rfc4514_string() or "(empty)",
        issuer=cert.issuer.rfc4514_string() or "(empty)",
        serial=cert.serial_number,
        spiffe_id=spiffe_id,
        uris=uris,
        dns_names=dns_names,
        is_ca=is_ca,
        path_length=path_length,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=_describe_key(cert),
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        svid_problem=problem,
    )


def format_summary(summary: CertSummary, *, now: dt.datetime | None = None) -> str:
    """Aligned `label: value` lines; validity is judged against `now` (default: the current time)."""
    now = now or dt.datetime.now(dt.UTC)
    if summary.is_ca:
        limit = (
            "no path length limit" if summary.path_length is None else f"path length {summary.path_length}"
        )
        kind = f"CA ({limit})"
    elif summary.svid_problem is None:
        kind = "leaf, a valid X509-SVID"
    else:
        kind = f"leaf, NOT a valid X509-SVID ({summary.svid_problem})"
    if now < summary.not_before:
        status = f"NOT YET VALID (starts in {_span(summary.not_before - now)})"
    elif now >= summary.not_after:
        status = f"EXPIRED ({_span(now - summary.not_after)} ago)"
    else:
        status = f"valid, expires in {_span(summary.not_after - now)}"
    rows = [
        ("kind", kind),
        ("subject", summary.subject),
        ("issuer", summary.issuer),
    ]
    if summary.spiffe_id or not summary.is_ca:
        rows.append(("SPIFFE ID", summary.spiffe_id or "(none)"))
    if summary.uris and summary.uris != (summary.spiffe_id,):
        rows.append(("URI SANs", ", ".join(summary.uris)))
    if summary.dns_names:
        rows.append(("DNS SANs", ", ".join(summary.dns_names)))
    rows += [
        ("not before", _when(summary.not_before)),
        ("not after", _when(summary.not_after)),
        ("status", status),
        ("key", summary.key),
        ("serial", f"{summary.serial:x}"),
        ("SHA-256", summary.sha256),
    ]
    return "\n".join(f"  {label + ':':<12} {value}" for label, value in rows)


def inspect(path: str | os.PathLike[str], *, now: dt.datetime | None = None) -> str:
    """Every certificate in the PEM (or DER) file at `path`, described for a human."""
    certs = read_certificates(Path(path))
    parts = []
    for index, cert in enumerate(certs, 1):
        title = f"{path}" if len(certs) == 1 else f"{path} (certificate {index} of {len(certs)})"
        parts.append(f"{title}\n{format_summary(summarize(cert), now=now)}")
    return "\n\n".join(parts)


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        return f"ECDSA {curve or key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "")


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(delta: dt.timedelta) -> str:
    """`3d4h`, `5h12m`, `42s`: the two largest units, enough to read at a glance."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"
