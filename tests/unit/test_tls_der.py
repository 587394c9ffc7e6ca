"""pillion.tls.der: the X.509 facts a sidecar reads itself, checked against `cryptography`'s reading of
the same certificates, and its refusals of malformed DER."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pillion.testing.x509_reference import cryptography_reading
from pillion.tls import der as x509der
from pillion.tls.ca import KEY_USAGES, key_usage_extension

UTC = dt.UTC
EC_KEY = ec.generate_private_key(ec.SECP256R1())
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])


def usage(*names: str) -> x509.KeyUsage:
    return key_usage_extension(set(names))


def make(
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    *,
    not_before: dt.datetime = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    not_after: dt.datetime = dt.datetime(2027, 6, 7, 8, 9, 10, tzinfo=UTC),
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = EC_KEY,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


SAN_MIX = x509.SubjectAlternativeName(
    [
        x509.DNSName("web.local"),
        x509.UniformResourceIdentifier("spiffe://example.org/ns/a/sa/web"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.RFC822Name("ops@example.org"),
        x509.DirectoryName(NAME),
        x509.UniformResourceIdentifier("https://example.org/second"),
        x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x04\x01x"),
    ]
)

CASES: list[tuple[str, Sequence[tuple[x509.ExtensionType, bool]], dict[str, object]]] = [
    ("no extensions", [], {}),
    (
        "an SVID",
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (usage("digital_signature"), True),
            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://td/w")]), True),
        ],
        {},
    ),
    ("a CA", [(x509.BasicConstraints(ca=True, path_length=0), True), (usage("key_cert_sign"), True)], {}),
    ("a CA without a path length", [(x509.BasicConstraints(ca=True, path_length=None), False)], {}),
    ("every key usage bit", [(usage(*KEY_USAGES), False)], {}),
    (
        "key usage bits 0, 4 and 8",
        [(usage("digital_signature", "key_agreement", "decipher_only"), False)],
        {},
    ),
    ("no key usage bit", [(usage(), False)], {}),
    ("every kind of SAN", [(SAN_MIX, False)], {}),
    ("DNS SANs only", [(x509.SubjectAlternativeName([x509.DNSName("a"), x509.DNSName("b")]), False)], {}),
    (
        "other extensions around",
        [
            (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (x509.SubjectKeyIdentifier.from_public_key(EC_KEY.public_key()), False),
            (usage("digital_signature", "key_encipherment"), True),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(EC_KEY.public_key()), False),
        ],
        {},
    ),
    (
        "UTCTime years 1950 and 2049",
        [],
        {
            "not_before": dt.datetime(1950, 1, 1, tzinfo=UTC),
            "not_after": dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        },
    ),
    (
        "GeneralizedTime from 2050",
        [],
        {
            "not_before": dt.datetime(2050, 1, 1, tzinfo=UTC),
            "not_after": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        },
    ),
    ("an RSA key", [(usage("digital_signature"), True)], {"key": rsa.generate_private_key(65537, 2048)}),
]


@pytest.mark.parametrize(("case", "extensions", "options"), CASES, ids=[c[0] for c in CASES])
def test_reads_what_cryptography_reads(
    case: str, extensions: Sequence[tuple[x509.ExtensionType, bool]], options: dict[str, object]
) -> None:
    der = make(extensions, **options)  # type: ignore[arg-type]
    assert x509der.read_certificate(der) == cryptography_reading(der)


def test_bit_numbers_match_rfc_5280() -> None:
    cert = x509der.read_certificate(make([(usage("digital_signature", "key_cert_sign", "crl_sign"), True)]))
    assert cert.key_usage == x509der.DIGITAL_SIGNATURE | x509der.KEY_CERT_SIGN | x509der.CRL_SIGN


# --- malformed DER, built by hand -----------------------------------------------------------------------


def tlv(tag: int, *parts: bytes) -> bytes:
    content = b"".join(parts)
    n = len(content)
    size = (n.bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size)
    return bytes([tag]) + length + content


def ext(oid: bytes, value: bytes, critical: bool | None = None) -> bytes:
    flag = b"" if critical is None else tlv(0x01, b"\xff" if critical else b"\x00")
    return tlv(0x30, tlv(0x06, oid), flag, tlv(0x04, value))


def ext_raw_critical() -> bytes:
    """keyUsage marked critical with BER's TRUE (0x01) rather than DER's 0xFF."""
    return tlv(0x30, tlv(0x06, KU), tlv(0x01, b"\x01"), tlv(0x04, tlv(0x03, b"\x07\x80")))


BC = bytes([0x55, 0x1D, 0x13])
KU = bytes([0x55, 0x1D, 0x0F])
SAN = bytes([0x55, 0x1D, 0x11])
GOOD_EXTENSIONS = [
    ext(BC, tlv(0x30), critical=True),
    ext(KU, tlv(0x03, b"\x07\x80"), critical=True),
    ext(SAN, tlv(0x30, tlv(0x86, b"spiffe://td/w"))),
]


def cert(
    extensions: Sequence[bytes] | None = GOOD_EXTENSIONS,
    *,
    times: tuple[bytes, bytes] = (tlv(0x17, b"260102030405Z"), tlv(0x18, b"20500101000000Z")),
    optional: Sequence[bytes] = (),
    trailer: bytes = b"",
) -> bytes:
    algorithm = tlv(0x30, tlv(0x06, bytes([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02])))
    tbs = tlv(
        0x30,
        tlv(0xA0, tlv(0x02, b"\x02")),
        tlv(0x02, b"\x01"),
        algorithm,
        tlv(0x30),
        tlv(0x30, *times),
        tlv(0x30),
        tlv(0x30, algorithm, tlv(0x03, b"\x00\x04")),
        *optional,
        *([] if extensions is None else [tlv(0xA3, tlv(0x30, *extensions))]),
    )
    return tlv(0x30, tbs, algorithm, tlv(0x03, b"\x00")) + trailer


def test_the_hand_built_certificate_is_read() -> None:
    assert x509der.read_certificate(cert()) == x509der.Certificate(
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp(),
        dt.datetime(2050, 1, 1, tzinfo=UTC).timestamp(),
        is_ca=False,
        key_usage=x509der.DIGITAL_SIGNATURE,
        uris=("spiffe://td/w",),
    )
    unique_ids = [tlv(0x81, b"\x00\x01"), tlv(0x82, b"\x00\x02")]
    assert x509der.read_certificate(cert(None, optional=unique_ids)).uris is None
    # DER's other forms OpenSSL takes too: an explicit FALSE, a pathLen without cA, a critical FALSE.
    lenient = [ext(BC, tlv(0x30, tlv(0x02, b"\x00")), critical=False), ext(KU, tlv(0x03, b"\x07\x80"))]
    assert x509der.read_certificate(cert(lenient)).key_usage == x509der.DIGITAL_SIGNATURE
    explicit_false = [ext(BC, tlv(0x30, tlv(0x01, b"\x00"), tlv(0x02, b"\x01")))]
    assert x509der.read_certificate(cert(explicit_false)).is_ca is False


@pytest.mark.parametrize(
    ("case", "der", "message"),
    [
        ("nothing", b"", "truncated"),
        ("a byte after the certificate", cert(trailer=b"\x00"), "not one DER SEQUENCE"),
        ("an extension twice", cert([*GOOD_EXTENSIONS, ext(BC, tlv(0x30, tlv(0x01, b"\xff")))]), "twice"),
        ("BER's TRUE in cA", cert([ext(BC, tlv(0x30, tlv(0x01, b"\x01")))]), "not a DER BOOLEAN"),
        ("keyUsage with 8 unused bits", cert([ext(KU, tlv(0x03, b"\x08\x80"))]), "not a BIT STRING"),
        ("an empty keyUsage", cert([ext(KU, tlv(0x03))]), "not a BIT STRING"),
        ("a non-ASCII URI", cert([ext(SAN, tlv(0x30, tlv(0x86, "spiffe://td/é".encode())))]), "IA5String"),
        ("bytes after a SAN", cert([ext(SAN, tlv(0x30) + b"\x00")]), "subjectAltName out of shape"),
        ("an extension without a value", cert([tlv(0x30, tlv(0x06, BC))]), "extension out of shape"),
        (
            "a GeneralizedTime before 2050 as UTCTime's length",
            cert(times=(tlv(0x17, b"20260102030405Z"), tlv(0x17, b"270102030405Z"))),
            "RFC 5280's form",
        ),
        ("a local time", cert(times=(tlv(0x17, b"260102030405+"), tlv(0x17, b"270102030405Z"))), "RFC 5280"),
        ("February 30th", cert(times=(tlv(0x17, b"260230000000Z"), tlv(0x17, b"270102030405Z"))), "range"),
        ("one time", cert(times=(tlv(0x17, b"260102030405Z"), b"")), "two times"),
        ("an unknown [4] field", cert(optional=[tlv(0xA4, b"")]), "out of shape"),
        ("IDs after the extensions", cert(None, optional=[tlv(0xA3, tlv(0x30)), tlv(0x81, b"")]), "shape"),
        ("a multi-byte tag", bytes([0x1F, 0x81, 0x01, 0x00]), "multi-byte tag"),
        ("an indefinite length", bytes([0x30, 0x80, 0x00, 0x00]), "bad length"),
        ("a long-form short length", bytes([0x30, 0x81, 0x03, 0x02, 0x01, 0x00]), "shortest form"),
        ("a length with a leading zero", bytes([0x30, 0x82, 0x00, 0x80]) + bytes(128), "shortest form"),
        ("an element past its parent", bytes([0x30, 0x03, 0x30, 0x05, 0x00]), "longer than its parent"),
        ("no signature", tlv(0x30, tlv(0x30), tlv(0x30)), "three parts"),
        # OpenSSL reads a constructed URI (0xA6): it would be a second identity we did not see.
        (
            "a constructed URI SAN",
            cert([ext(SAN, tlv(0x30, tlv(0xA6, tlv(0x04, b"spiffe://td/x")), tlv(0x86, b"spiffe://td/w")))]),
            "GeneralName tag",
        ),
        (
            "a year that is not digits",
            cert(times=(tlv(0x17, b"ab0102030405Z"), tlv(0x17, b"270102030405Z"))),
            "form",
        ),
        ("keyUsage past bit 8", cert([ext(KU, tlv(0x03, b"\x00" + bytes(3)))]), "nine bits"),
        ("a hostile keyUsage", cert([ext(KU, tlv(0x03, b"\x00" + b"\xff" * 30000))]), "nine bits"),
        ("keyUsage padding bits set", cert([ext(KU, tlv(0x03, b"\x07\x81"))]), "padding"),
        ("padding in an empty keyUsage", cert([ext(KU, tlv(0x03, b"\x01"))]), "not a BIT STRING"),
        (
            "pathLen before cA",
            cert([ext(BC, tlv(0x30, tlv(0x02, b"\x00"), tlv(0x01, b"\xff")))]),
            "out of shape",
        ),
        (
            "BER's TRUE in critical",
            cert([ext_raw_critical()]),
            "BOOLEAN",
        ),
    ],
)
def test_malformed_der_is_refused_with_a_reason(case: str, der: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        x509der.read_certificate(der)


def test_every_truncation_and_many_corruptions_raise_only_value_error() -> None:
    der = make(CASES[1][1])
    for end in range(len(der)):
        with pytest.raises(ValueError):
            x509der.read_certificate(der[:end])
    rng = random.Random(20261206)
    read = refused = 0
    for _ in range(3000):  # bounded: random single-byte changes anywhere in the certificate
        mutated = bytearray(der)
        mutated[rng.randrange(len(der))] = rng.randrange(256)
        try:
            x509der.read_certificate(bytes(mutated))
        except ValueError:
            refused += 1
        else:
            read += 1
    assert read and refused  # both outcomes happen; nothing else escapes


# --- PEM ------------------------------------------------------------------------------------------------


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_first_pem_certificate_is_the_leaf_of_a_chain() -> None:
    leaf, issuer = make(), make(CASES[2][1])
    assert x509der.first_pem_certificate(b"junk before\n" + pem(leaf) + pem(issuer)) == leaf
    assert x509der.first_pem_certificate(pem(leaf).replace(b"\n", b"\r\n")) == leaf
    # The first certificate OpenSSL would serve: other kinds of block before it are skipped, and the
    # old "X509 CERTIFICATE" label counts.
    key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    assert x509der.first_pem_certificate(key + pem(leaf) + pem(issuer)) == leaf
    old_label = pem(leaf).replace(b" CERTIFICATE-----", b" X509 CERTIFICATE-----")
    assert x509der.first_pem_certificate(old_label + pem(issuer)) == leaf


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "no PEM certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "without its END line"),
        (b"-----BEGIN CERTIFICATE-----\nMII*\n-----END CERTIFICATE-----\n", "bad base64"),
        (b"-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n-----END TRUSTED CERTIFICATE-----\n", "TRUSTED"),
        (b"-----BEGIN X509 CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "without its END"),
    ],
)
def test_first_pem_certificate_refuses_what_is_not_one(text: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        x509der.first_pem_certificate(text)
