"""The development CA, SPIFFE ID parsing and the X509-SVID leaf checks (pillion.tls).

The handshake tests at the end draw the line between OpenSSL and `check_svid`: dates, issuers and
self-signed leaves are refused by chain verification during the handshake; CA-as-leaf and two URI SANs
pass the handshake and are refused by `check_svid` afterwards.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from pillion.tls.ca import (
    CA_CERT,
    CA_KEY,
    CLOCK_SKEW,
    CaError,
    IssuedSvid,
    init_ca,
    issue_svid,
    read_certificates,
)
from pillion.tls.certinfo import inspect
from pillion.tls.identity import SpiffeId, parse_spiffe_id, parse_trust_domain
from pillion.tls.spiffe import REASONS, SvidError, check_svid

WEB = "spiffe://example.org/ns/default/sa/web"
API = "spiffe://example.org/ns/default/sa/api"
HOUR = dt.timedelta(hours=1)

Issue = Callable[..., IssuedSvid]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca") / "ca"
    init_ca(directory)
    return directory


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("other") / "ca"
    init_ca(directory, common_name="Someone else's CA")
    return directory


@pytest.fixture
def issue(ca: Path, tmp_path: Path) -> Issue:
    """issue_svid from the shared CA into a fresh directory per call."""
    count = 0

    def issue(spiffe_id: str = WEB, *, ca_dir: Path = ca, **options: Any) -> IssuedSvid:
        nonlocal count
        count += 1
        return issue_svid(ca_dir, spiffe_id, tmp_path / f"svid{count}", **options)

    return issue


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def der(path: Path) -> bytes:
    return load(path).public_bytes(serialization.Encoding.DER)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the CA ---------------------------------------------------------------------------------------------


def test_the_ca_is_a_p256_root_that_signs_leaves_only(ca: Path) -> None:
    cert = load(ca / CA_CERT)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Pillion development CA"
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    exts = cert.extensions
    assert {e.oid for e in exts} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
    basic = exts.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = exts.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=3650) + CLOCK_SKEW
    assert mode(ca / CA_KEY) == 0o600 and mode(ca) == 0o700


def test_init_refuses_to_replace_a_ca(ca: Path) -> None:
    before = (ca / CA_KEY).read_bytes()
    with pytest.raises(CaError, match="already exists; refusing to replace a CA"):
        init_ca(ca)
    assert (ca / CA_KEY).read_bytes() == before


BROKEN_CAS = [
    ("no_dir", "CA directory .* does not exist"),
    ("garbage_cert", r"ca\.pem: not a valid PEM or DER certificate"),
    ("garbage_key", r"ca-key\.pem: not a usable PEM private key"),
    ("no_key", r"ca-key\.pem: no such file"),
    ("other_key", r"ca-key\.pem does not match the certificate in .*ca\.pem"),
    ("leaf_as_ca", r"ca\.pem is not a CA certificate"),
]


@pytest.mark.parametrize("case", BROKEN_CAS, ids=[c[0] for c in BROKEN_CAS])
def test_a_broken_ca_directory_is_named_in_the_error(
    ca: Path, other_ca: Path, issue: Issue, tmp_path: Path, case: tuple[str, str]
) -> None:
    damage, message = case
    broken = tmp_path / "broken"
    if damage != "no_dir":
        shutil.copytree(ca, broken)
    if damage == "garbage_cert":
        (broken / CA_CERT).write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    elif damage == "garbage_key":
        (broken / CA_KEY).write_text("hello")
    elif damage == "no_key":
        (broken / CA_KEY).unlink()
    elif damage == "other_key":
        shutil.copy(other_ca / CA_KEY, broken / CA_KEY)
    elif damage == "leaf_as_ca":
        leaf = issue()
        shutil.copy(leaf.cert, broken / CA_CERT)
        shutil.copy(leaf.key, broken / CA_KEY)
    with pytest.raises(CaError, match=message):
        issue_svid(broken, WEB, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- issuing SVIDs --------------------------------------------------------------------------------------


def test_an_svid_has_exactly_the_x509_svid_extensions(ca: Path, issue: Issue) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issued = issue(WEB)
    after = dt.datetime.now(dt.UTC)
    cert, root = load(issued.cert), load(ca / CA_CERT)
    cert.verify_directly_issued_by(root)
    assert issued.spiffe_id == WEB
    assert cert.subject.rfc4514_string() == "O=SPIFFE"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    exts = cert.extensions
    assert {e.oid for e in exts} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    basic = exts.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = exts.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    flags = ("key_encipherment", "key_agreement", "key_cert_sign", "crl_sign", "content_commitment")
    assert not any(getattr(usage.value, flag) for flag in flags)
    assert list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(WEB)]
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # A day from now, started a minute early for peers whose clock is behind.
    assert before - CLOCK_SKEW <= cert.not_valid_before_utc <= after - CLOCK_SKEW
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=24) + CLOCK_SKEW
    assert (issued.not_before, issued.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)


def test_the_svid_files_key_modes_and_bundle(ca: Path, issue: Issue) -> None:
    issued = issue(WEB, dns_names=["web.default.svc"])
    assert mode(issued.key) == 0o600
    assert mode(issued.cert) & ~0o644 == 0 and mode(issued.bundle) & ~0o644 == 0  # at most 0644 (umask)
    assert issued.bundle.read_bytes() == (ca / CA_CERT).read_bytes()
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == load(issued.cert).public_key()
    san = load(issued.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web.default.svc"]
    assert check_svid(der(issued.cert)) == WEB  # DNS SANs are allowed next to the one URI
    # Only the three files: the temporary files were renamed, not left behind.
    assert sorted(p.name for p in issued.cert.parent.iterdir()) == ["bundle.pem", "cert.pem", "key.pem"]


def test_reissuing_replaces_the_files_and_narrows_a_wide_key(ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = issue_svid(ca, WEB, out)
    first.key.chmod(0o644)  # e.g. someone copied a key in with the wrong mode
    old_key = first.key.read_bytes()
    second = issue_svid(ca, WEB, out)
    assert second.key.read_bytes() != old_key
    assert mode(second.key) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "cert.pem", "key.pem"]


def test_the_lifetime_never_outlives_the_ca(tmp_path: Path) -> None:
    short = tmp_path / "short"
    init_ca(short, ttl=HOUR)
    issued = issue_svid(short, WEB, tmp_path / "out", ttl=dt.timedelta(hours=24))
    assert load(issued.cert).not_valid_after_utc == load(short / CA_CERT).not_valid_after_utc


def test_an_expired_ca_issues_nothing(tmp_path: Path) -> None:
    old = tmp_path / "old"
    init_ca(old, ttl=HOUR, now=dt.datetime.now(dt.UTC) - 2 * HOUR)
    with pytest.raises(CaError, match="expired on"):
        issue_svid(old, WEB, tmp_path / "out")


@pytest.mark.parametrize(
    ("spiffe_id", "options", "message"),
    [
        ("spiffe://example.org", {}, "an SVID's ID needs a path"),
        ("spiffe://Example.org/web", {}, "lower-case"),
        (WEB, {"ttl": dt.timedelta(0)}, "ttl must be positive"),
        (WEB, {"key_usage": {"digital_signature", "sign_anything"}}, "unknown key usage"),
    ],
)
def test_issue_refuses_bad_input(
    ca: Path, tmp_path: Path, spiffe_id: str, options: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        issue_svid(ca, spiffe_id, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


# --- SPIFFE IDs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "trust_domain", "path"),
    [
        ("spiffe://example.org", "example.org", ""),
        (WEB, "example.org", "/ns/default/sa/web"),
        ("spiffe://a_b-c.9/X.y-Z_9/...", "a_b-c.9", "/X.y-Z_9/..."),
        ("spiffe://td/" + "a" * (2048 - len("spiffe://td/")), "td", "/" + "a" * 2036),
    ],
)
def test_valid_spiffe_ids(text: str, trust_domain: str, path: str) -> None:
    parsed = parse_spiffe_id(text)
    assert parsed == SpiffeId(trust_domain, path)
    assert str(parsed) == text
    assert parsed.is_workload == bool(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with 'spiffe://'"),
        ("https://example.org/web", "must start with 'spiffe://'"),
        ("SPIFFE://example.org/web", "scheme must be 'spiffe://', in lower case"),
        ("spiffe:example.org/web", "must start with 'spiffe://'"),
        ("spiffe://", "trust domain is empty"),
        ("spiffe:///web", "trust domain is empty"),
        ("spiffe://Example.org/web", "may contain only lower-case letters"),
        ("spiffe://exa mple.org/web", "may contain only lower-case letters"),
        ("spiffe://user@example.org/web", "userinfo"),
        ("spiffe://example.org:8443/web", "port"),
        ("spiffe://example.org/web?x=1", "query"),
        ("spiffe://example.org/web#frag", "fragment"),
        ("spiffe://example.org/", "empty path segment"),
        ("spiffe://example.org/ns//web", "empty path segment"),
        ("spiffe://example.org/ns/web/", "empty path segment"),
        ("spiffe://example.org/./web", "must not be '.' or '..'"),
        ("spiffe://example.org/ns/..", "must not be '.' or '..'"),
        ("spiffe://example.org/we%20b", "no percent-encoding"),
        ("spiffe://example.org/wéb", "may contain only letters"),
        ("spiffe://" + "a" * 256 + "/web", "trust domain longer than 255"),
        ("spiffe://td/" + "a" * 2037, "longer than 2048 bytes"),
    ],
)
def test_invalid_spiffe_ids_say_which_rule(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace(".", r"\.")):
        parse_spiffe_id(text)


def test_trust_domain_names() -> None:
    assert parse_trust_domain("example.org") == "example.org"
    assert parse_trust_domain("spiffe://example.org") == "example.org"
    for bad, message in [("spiffe://example.org/web", "has no path"), ("Example.org", "lower-case")]:
        with pytest.raises(ValueError, match=message):
            parse_trust_domain(bad)


# --- check_svid -----------------------------------------------------------------------------------------


def test_check_svid_accepts_a_good_svid_and_authorizes_it(issue: Issue) -> None:
    svid = der(issue(WEB).cert)
    assert check_svid(svid) == WEB
    assert check_svid(svid, trust_domain="example.org", expected=WEB) == WEB


# (issue options, check_svid options, reason)
BAD_SVIDS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("no SAN at all", {"uris": []}, {}, "not_spiffe"),
    ("a DNS SAN only", {"uris": [], "dns_names": ["web"]}, {}, "not_spiffe"),
    ("a non-SPIFFE URI", {"uris": ["https://example.org/web"]}, {}, "not_spiffe"),
    ("an invalid SPIFFE ID", {"uris": ["spiffe://Example.org/web"]}, {}, "not_spiffe"),
    ("a trust domain's own ID", {"uris": ["spiffe://example.org"]}, {}, "not_spiffe"),
    ("two URI SANs", {"uris": [WEB, API]}, {}, "two_uri_sans"),
    ("two URI SANs, one not SPIFFE", {"uris": [WEB, "https://x.example"]}, {}, "two_uri_sans"),
    ("CA:TRUE", {"is_ca": True}, {}, "ca_as_leaf"),
    ("no keyUsage", {"key_usage": ()}, {}, "no_key_usage"),
    ("keyEncipherment only", {"key_usage": {"key_encipherment"}}, {}, "no_digital_signature"),
    ("keyCertSign", {"key_usage": {"digital_signature", "key_cert_sign"}}, {}, "cert_sign_key_usage"),
    ("cRLSign", {"key_usage": {"digital_signature", "crl_sign"}}, {}, "cert_sign_key_usage"),
    ("another trust domain", {}, {"trust_domain": "other.org"}, "wrong_trust_domain"),
    ("another workload", {}, {"expected": API}, "wrong_spiffe_id"),
    (
        "another workload, right domain",
        {},
        {"trust_domain": "example.org", "expected": API},
        "wrong_spiffe_id",
    ),
    # Structure first: a malformed SVID is reported as such even when its identity is also wrong.
    ("CA:TRUE, other domain", {"is_ca": True}, {"trust_domain": "other.org"}, "ca_as_leaf"),
]


@pytest.mark.parametrize(("case", "make", "check", "reason"), BAD_SVIDS, ids=[c[0] for c in BAD_SVIDS])
def test_check_svid_refuses_with_a_reason(
    issue: Issue, case: str, make: dict[str, Any], check: dict[str, Any], reason: str
) -> None:
    svid = der(issue(WEB, **make).cert)
    with pytest.raises(SvidError) as refused:
        check_svid(svid, **check)
    assert refused.value.reason == reason, str(refused.value)
    assert reason in REASONS
    assert str(refused.value).startswith("peer")  # a human sentence next to the machine reason


def test_check_svid_refuses_the_ca_itself_and_garbage(ca: Path) -> None:
    with pytest.raises(SvidError) as refused:
        check_svid(der(ca / CA_CERT))
    assert refused.value.reason == "ca_as_leaf"
    with pytest.raises(SvidError) as refused:
        check_svid(b"\x30\x03\x02\x01\x00")
    assert refused.value.reason == "bad_certificate"
    assert isinstance(refused.value, ValueError)


def test_dates_and_issuers_are_left_to_chain_verification(issue: Issue, other_ca: Path) -> None:
    """check_svid sees only the leaf: it cannot know the bundle, and OpenSSL already checked the dates."""
    now = dt.datetime.now(dt.UTC)
    for options in (
        {"not_before": now - 2 * HOUR, "not_after": now - HOUR},
        {"not_before": now + HOUR, "not_after": now + 2 * HOUR},
        {"self_signed": True},
        {"ca_dir": other_ca},
    ):
        assert check_svid(der(issue(WEB, **options).cert)) == WEB


# --- inspect --------------------------------------------------------------------------------------------


def test_inspect_round_trip(issue: Issue) -> None:
    issued = issue(WEB, dns_names=["web.local"])
    cert = load(issued.cert)
    text = inspect(issued.cert)
    assert text.startswith(f"{issued.cert}\n")
    assert "leaf, a valid X509-SVID" in text
    assert f"SPIFFE ID:   {WEB}" in text
    assert "subject:     O=SPIFFE" in text and "issuer:      CN=Pillion development CA" in text
    assert "DNS SANs:    web.local" in text
    assert f"not after:   {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in text
    assert "status:      valid, expires in 23h" in text
    assert "key:         ECDSA P-256" in text
    assert cert.fingerprint(hashes.SHA256()).hex(":").upper() in text
    # DER input gives the same description.
    der_file = issued.cert.with_suffix(".der")
    der_file.write_bytes(der(issued.cert))
    assert inspect(der_file).partition("\n")[2] == text.partition("\n")[2]


def test_inspect_explains_what_is_wrong(issue: Issue, ca: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # certificates keep whole seconds
    two = issue(WEB, uris=[WEB, API])
    text = inspect(two.cert)
    assert "NOT a valid X509-SVID (two_uri_sans:" in text
    assert f"URI SANs:    {WEB}, {API}" in text and "SPIFFE ID:   (none)" in text
    expired = issue(WEB, not_before=now - 3 * HOUR, not_after=now - 2 * HOUR)
    assert "status:      EXPIRED (2h0m ago)" in inspect(expired.cert, now=now)
    early = issue(WEB, not_before=now + 90 * dt.timedelta(minutes=1), not_after=now + 3 * HOUR)
    assert "status:      NOT YET VALID (starts in 1h30m)" in inspect(early.cert, now=now)
    both = issue().cert.parent / "both.pem"
    both.write_bytes(two.cert.read_bytes() + (ca / CA_CERT).read_bytes())
    text = inspect(both)
    assert f"{both} (certificate 2 of 2)" in text and "kind:        CA (path length 0)" in text


def test_inspect_names_the_file_it_cannot_read(issue: Issue, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    for path, message in [
        (tmp_path / "missing.pem", "missing.pem: no such file"),
        (garbage, "garbage.pem: not a valid PEM or DER certificate"),
        (issue().key, "key.pem: holds a private key, not a certificate"),
    ]:
        with pytest.raises(CaError, match=message):
            inspect(path)
    with pytest.raises(CaError, match="no such file"):
        read_certificates(tmp_path / "missing.pem")


# --- real handshakes: what OpenSSL refuses, and what check_svid must --------------------------------------


def server_context(svid: IssuedSvid) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(svid.cert, svid.key)
    ctx.load_verify_locations(svid.bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: Path, key: Path, trust: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # an SVID names a workload, not a host: check_svid checks the peer instead
    ctx.load_verify_locations(trust)
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class Handshake:
    server_peer: bytes | None = None  # the client's certificate as the server saw it
    client_peer: bytes | None = None
    server_error: ssl.SSLError | None = None
    client_error: Exception | None = None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> Handshake:
    """One TLS handshake over a socket pair, the server in a thread; then one byte server -> client.

    The byte matters under TLS 1.3: the client's handshake completes before the server has checked the
    client certificate, so a refusal reaches the client only on its first read.
    """
    result = Handshake()
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                result.server_peer = tls.getpeercert(binary_form=True)
                tls.sendall(b"!")
        except ssl.SSLError as exc:
            result.server_error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock) as tls:
            result.client_peer = tls.getpeercert(binary_form=True)
            if tls.recv(1) != b"!":
                raise ConnectionError("the server closed the connection")
    except (ssl.SSLError, OSError) as exc:
        result.client_error = exc
    finally:
        thread.join(timeout=10)
        server_sock.close()
    assert not thread.is_alive()
    return result


@pytest.fixture
def server(issue: Issue) -> IssuedSvid:
    return issue(API)


def test_a_valid_client_svid_is_accepted_and_identified(server: IssuedSvid, issue: Issue) -> None:
    client = issue(WEB)
    done = handshake(server_context(server), client_context(client.cert, client.key, client.bundle))
    assert done.server_error is None and done.client_error is None
    assert done.server_peer is not None and done.client_peer is not None
    assert check_svid(done.server_peer, trust_domain="example.org") == WEB
    assert check_svid(done.client_peer, expected=API) == API


@pytest.mark.parametrize(
    ("case", "verify_message"),
    [
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("other_ca", "unable to get local issuer certificate"),
        ("self_signed", "self-signed certificate"),
    ],
)
def test_the_handshake_refuses_bad_client_chains(
    server: IssuedSvid, issue: Issue, other_ca: Path, case: str, verify_message: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    table: dict[str, dict[str, Any]] = {
        "expired": {"not_before": now - 2 * HOUR, "not_after": now - HOUR},
        "not_yet_valid": {"not_before": now + HOUR, "not_after": now + 2 * HOUR},
        "other_ca": {"ca_dir": other_ca},
        "self_signed": {"self_signed": True},
    }
    client = issue(WEB, **table[case])
    # The client trusts the server's CA; its own certificate is what is wrong.
    done = handshake(server_context(server), client_context(client.cert, client.key, server.bundle))
    assert isinstance(done.server_error, ssl.SSLCertVerificationError), done
    assert done.server_error.verify_message == verify_message
    assert done.server_peer is None
    assert done.client_error is not None  # the alert reaches the client, at the latest on its first read


@pytest.mark.parametrize(
    ("options", "reason"), [({"is_ca": True}, "ca_as_leaf"), ({"uris": [WEB, API]}, "two_uri_sans")]
)
def test_check_svid_refuses_what_the_handshake_accepts(
    server: IssuedSvid, issue: Issue, options: dict[str, Any], reason: str
) -> None:
    bad = issue(WEB, **options)
    done = handshake(server_context(server), client_context(bad.cert, bad.key, server.bundle))
    assert done.server_error is None and done.server_peer is not None  # OpenSSL is satisfied...
    with pytest.raises(SvidError) as refused:  # ...the SVID rules are not
        check_svid(done.server_peer, trust_domain="example.org")
    assert refused.value.reason == reason


def test_the_handshake_refuses_the_root_itself_as_a_client(ca: Path, server: IssuedSvid) -> None:
    """OpenSSL's purpose check refuses a certificate whose keyUsage cannot sign the handshake."""
    done = handshake(server_context(server), client_context(ca / CA_CERT, ca / CA_KEY, server.bundle))
    assert isinstance(done.server_error, ssl.SSLCertVerificationError)
    assert done.server_error.verify_message == "unsuitable certificate purpose"
