"""A small certificate authority that issues X509-SVIDs, for development and small meshes.

Theory of operation: a CA directory holds a self-signed ECDSA P-256 root (`ca.pem`) and its key
(`ca-key.pem`). `issue_svid` signs a fresh key pair per workload into an output directory as the three
files a sidecar loads: `cert.pem` (the SVID), `key.pem` and `bundle.pem` (the root, to verify peers).
Certificates follow the X509-SVID rules so that any SPIFFE verifier (and `spiffe.check_svid`) accepts
them: one URI SAN, CA:FALSE, digitalSignature only, serverAuth+clientAuth, a lifetime of hours.

Every file is written to a temporary name in its final directory and renamed over the target, so a
reader (a sidecar reloading its certificate) sees the old file or the new one, never half of one; keys
are created with mode 0600 from the first byte, never chmod-ed afterwards. Each file is replaced on its
own: a reader that loads `cert.pem` and `key.pem` between two renames can see a new certificate with the
old key, which `ssl.SSLContext.load_cert_chain` refuses, so a reloader retries rather than trusting one
read. Problems a user can fix (missing CA, bad PEM, unwritable directory) raise `CaError` naming the file.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pillion.tls.identity import parse_spiffe_id

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SVID_CERT = "cert.pem"
SVID_KEY = "key.pem"
SVID_BUNDLE = "bundle.pem"

DEFAULT_CA_NAME = "Pillion development CA"
DEFAULT_CA_TTL = dt.timedelta(days=3650)
DEFAULT_SVID_TTL = dt.timedelta(hours=24)
CLOCK_SKEW = dt.timedelta(minutes=1)  # not_before is backdated so a peer whose clock is behind accepts it

KEY_MODE = 0o600
CERT_MODE = 0o644
CA_DIR_MODE = 0o700  # the directory holds the signing key

# keyUsage's named bits in order (RFC 5280, 4.2.1.3), as cryptography's KeyUsage names them.
KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


class CaError(Exception):
    """A problem with the CA's or an SVID's files, worded for the person running the command."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    spiffe_id: str
    cert: Path
    key: Path
    bundle: Path
    not_before: dt.datetime
    not_after: dt.datetime


def init_ca(
    ca_dir: str | os.PathLike[str],
    *,
    common_name: str = DEFAULT_CA_NAME,
    ttl: dt.timedelta = DEFAULT_CA_TTL,
    now: dt.datetime | None = None,
) -> Path:
    """Create a root CA in `ca_dir` (made 0700 if new); the path of its certificate.

    Refuses to overwrite an existing CA: replacing the root invalidates every SVID it issued.
    """
    if ttl <= dt.timedelta(0):
        raise ValueError(f"CA ttl must be positive, got {ttl}")
    directory = Path(ca_dir)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise CaError(f"{path} already exists; refusing to replace a CA (remove the directory first)")
    _make_dir(directory, CA_DIR_MODE)
    now = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        # pathlen 0: this root signs leaves only, so a stolen leaf key can never act as a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage_extension({"key_cert_sign", "crl_sign"}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a CA certificate on disk always has its key next to it.
    _write_atomic(key_path, _key_pem(key), KEY_MODE)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return cert_path


def load_ca(ca_dir: str | os.PathLike[str]) -> CertificateAuthority:
    """The CA in `ca_dir`, checked: a CA certificate, an EC key, and the key matches the certificate."""
    directory = Path(ca_dir)
    if not directory.is_dir():
        raise CaError(f"CA directory {directory} does not exist (create one with `pillion ca init`)")
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    cert = read_certificates(cert_path)[0]
    data = _read(key_path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise CaError(f"{key_path}: not a usable PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{key_path}: expected an ECDSA key, found {type(key).__name__}")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CaError(f"{key_path} does not match the certificate in {cert_path}")
    if not is_ca_certificate(cert):
        raise CaError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE missing)")
    return CertificateAuthority(cert, key)


def issue_svid(
    ca_dir: str | os.PathLike[str],
    spiffe_id: str,
    out_dir: str | os.PathLike[str],
    *,
    ttl: dt.timedelta = DEFAULT_SVID_TTL,
    dns_names: Sequence[str] = (),
    now: dt.datetime | None = None,
    # Test-only options: each makes a certificate a verifier must refuse. Production callers never pass them.
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_ca: bool = False,
    uris: Sequence[str] | None = None,
    key_usage: Collection[str] | None = None,
    self_signed: bool = False,
) -> IssuedSvid:
    """Sign a new key pair for `spiffe_id` with the CA in `ca_dir`; write cert, key and bundle to `out_dir`.

    The lifetime is `ttl` from now (clipped to the CA's own expiry), started one minute early for clock
    skew. `dns_names` adds DNS SANs, which SVIDs may carry for clients that check host names.

    Test-only options: `not_before`/`not_after` set the validity outright (expired, not yet valid);
    `is_ca` sets CA:TRUE; `uris` replaces the URI SANs (none, two, a non-SPIFFE URI); `key_usage` names
    the KeyUsage flags to set instead of `digital_signature` (empty: no keyUsage extension);
    `self_signed` signs with the leaf's own key instead of the CA's (the bundle is still the CA's).
    """
    parsed = parse_spiffe_id(spiffe_id)
    if not parsed.is_workload:
        raise ValueError(f"invalid SPIFFE ID {spiffe_id!r}: an SVID's ID needs a path, e.g. /ns/NS/sa/SA")
    if ttl <= dt.timedelta(0):
        raise ValueError(f"SVID ttl must be positive, got {ttl}")
    ca = load_ca(ca_dir)
    now = now or _utcnow()
    ca_end = ca.cert.not_valid_after_utc
    if ca_end <= now:
        raise CaError(f"the CA certificate in {ca_dir} expired on {ca_end:%Y-%m-%d %H:%M:%S} UTC")
    start = now - CLOCK_SKEW if not_before is None else not_before
    end = min(now + ttl, ca_end) if not_after is None else not_after  # no leaf outlives its issuer

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
    uri_sans = [str(parsed)] if uris is None else uris
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
    names += [x509.DNSName(d) for d in dns_names]
    signer: ec.EllipticCurvePrivateKey = key if self_signed else ca.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if self_signed else ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_authority_key_id(signer, None if self_signed else ca.cert), critical=False)
    )
    usage = {"digital_signature"} if key_usage is None else set(key_usage)
    if usage:
        builder = builder.add_extension(key_usage_extension(usage), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer, hashes.SHA256())

    out = Path(out_dir)
    _make_dir(out, 0o755)
    issued = IssuedSvid(
        str(parsed),
        out / SVID_CERT,
        out / SVID_KEY,
        out / SVID_BUNDLE,
        cert.not_valid_before_utc,  # as signed: whole seconds
        cert.not_valid_after_utc,
    )
    _write_atomic(issued.key, _key_pem(key), KEY_MODE)
    _write_atomic(issued.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    _write_atomic(issued.bundle, ca.cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return issued


def read_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates in a PEM file (or a single DER certificate); CaError naming the file otherwise."""
    data = _read(path)
    try:
        if b"-----BEGIN" not in data:
            return [x509.load_der_x509_certificate(data)]
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        if b"PRIVATE KEY-----" in data and b"CERTIFICATE-----" not in data:
            raise CaError(f"{path}: holds a private key, not a certificate") from None
        raise CaError(f"{path}: not a valid PEM or DER certificate ({exc})") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaError(f"{path}: no such file") from None
    except OSError as exc:
        raise CaError(f"cannot read {path}: {exc.strerror or exc}") from None


def _make_dir(directory: Path, mode: int) -> None:
    try:
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise CaError(f"cannot create directory {directory}: {exc.strerror or exc}") from None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename.

    The temporary file is created with `mode` (O_EXCL, so never an existing file or symlink), so a key's
    bytes are never readable by others, even for an instant.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise CaError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CaError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: without it, a crash can bring back the old file (or none)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def key_usage_extension(names: set[str]) -> x509.KeyUsage:
    """keyUsage with the bits `names` (from KEY_USAGES) set; ValueError for an unknown name."""
    unknown = names - set(KEY_USAGES)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}; known: {', '.join(KEY_USAGES)}")
    return x509.KeyUsage(**{name: name in names for name in KEY_USAGES})


def _authority_key_id(
    signer: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None
) -> x509.AuthorityKeyIdentifier:
    """From the issuer's subject key identifier when it has one, so the two always match."""
    if issuer is not None:
        try:
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            pass
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """basicConstraints CA:TRUE; an absent extension means a leaf (RFC 5280)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
