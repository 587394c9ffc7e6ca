"""The few X.509 facts a running sidecar needs, read from DER without the `cryptography` package.

Theory of operation. A sidecar checks each peer's leaf against the X509-SVID rules (tls/spiffe.py) and
reads its own certificate's validity when the identity files rotate: basicConstraints, keyUsage, the
URI SANs and two dates. Importing `cryptography.x509` for that costs 11.7 MiB of resident memory, 40% of
a plaintext sidecar, so the sidecar reads those facts itself and only the CA tooling (`pillion ca`)
imports `cryptography`. OpenSSL has already verified the chain of a peer's leaf (signatures, dates, the
issuers' CA flags) before this runs; what is left is walking the DER structure of RFC 5280, section
4.1. The reader is strict where a lax one could be fooled into reading another identity: lengths in
their shortest form, every element within its parent, nothing after the certificate, each extension at
most once, DER booleans and bit strings, and only the GeneralName tags RFC 5280 defines (OpenSSL also
takes a constructed URI, 0xA6, which would hide a second identity). Anything else is a ValueError, which
`check_svid` reports as `bad_certificate`. What it does not read (the signature, the names, the key,
other extensions) OpenSSL has checked. Every loop advances through a bounded input and keyUsage is at
most its nine bits, so a hostile certificate costs one pass over its bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Key usage bits (RFC 5280, 4.2.1.3), as `1 << bit number` in `Certificate.key_usage`.
DIGITAL_SIGNATURE = 1 << 0
KEY_CERT_SIGN = 1 << 5
CRL_SIGN = 1 << 6

_SEQUENCE = 0x30
_INTEGER = 0x02
_BOOLEAN = 0x01
_OCTET_STRING = 0x04
_BIT_STRING = 0x03
_OID = 0x06
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_VERSION = 0xA0  # [0] EXPLICIT
_ISSUER_UID = 0x81  # [1] IMPLICIT
_SUBJECT_UID = 0x82  # [2] IMPLICIT
_EXTENSIONS = 0xA3  # [3] EXPLICIT
_OPTIONAL = (_ISSUER_UID, _SUBJECT_UID, _EXTENSIONS)
_URI = 0x86  # GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String

# Extension OIDs, as the contents of their DER OBJECT IDENTIFIER.
_BASIC_CONSTRAINTS = bytes([0x55, 0x1D, 0x13])  # 2.5.29.19
_KEY_USAGE = bytes([0x55, 0x1D, 0x0F])  # 2.5.29.15
_SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17

# The PEM labels OpenSSL reads a certificate from; the trusted form carries trust settings after the DER.
_PEM_BEGIN = re.compile(rb"-----BEGIN ((?:X509 |TRUSTED )?CERTIFICATE)-----")
# GeneralName tags (RFC 5280, 4.2.1.6): otherName, rfc822Name, dNSName, x400Address, directoryName,
# ediPartyName, uniformResourceIdentifier, iPAddress, registeredID, each in its DER form.
_GENERAL_NAMES = frozenset((0xA0, 0x81, 0x82, 0xA3, 0xA4, 0xA5, 0x86, 0x87, 0x88))


@dataclass(frozen=True, slots=True)
class Certificate:
    not_before: float  # Unix time
    not_after: float
    is_ca: bool  # basicConstraints cA; False when the extension is absent (RFC 5280)
    key_usage: int | None  # DIGITAL_SIGNATURE | ...; None when the extension is absent
    uris: tuple[str, ...] | None  # the URI SANs, in order; None when there is no subjectAltName


def first_pem_certificate(pem: bytes) -> bytes:
    """The DER of the first certificate in `pem` (a leaf, then its chain), the one OpenSSL serves:
    blocks of other kinds before it are skipped, as OpenSSL skips them. ValueError if there is none."""
    found = _PEM_BEGIN.search(pem)
    if found is None:
        raise ValueError("no PEM certificate")
    label = found.group(1)
    if label.startswith(b"TRUSTED"):
        raise ValueError("a TRUSTED CERTIFICATE (with trust settings) is not a workload certificate")
    end = pem.find(b"-----END " + label + b"-----", found.end())
    if end < 0:
        raise ValueError("a PEM certificate without its END line")
    try:
        return base64.b64decode(b"".join(pem[found.end() : end].split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in a PEM certificate: {exc}") from None


def read_certificate(der: bytes) -> Certificate:
    """The facts above, from one DER certificate; ValueError says what is malformed."""
    tag, start, end = _element(der, 0, len(der))
    if tag != _SEQUENCE or end != len(der):
        raise ValueError("not one DER SEQUENCE")
    outer = [t[0] for t in _children(der, start, end)]
    if outer != [_SEQUENCE, _SEQUENCE, _BIT_STRING]:  # tbsCertificate, signatureAlgorithm, signature
        raise ValueError("not a certificate's three parts")
    tbs_start, tbs_end = _element(der, start, end)[1:]
    tbs = list(_children(der, tbs_start, tbs_end))
    if tbs and tbs[0][0] == _VERSION:
        tbs = tbs[1:]
    required = (_INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE)
    if len(tbs) < len(required) or any(t[0] != want for t, want in zip(tbs, required, strict=False)):
        raise ValueError("tbsCertificate fields out of shape")
    not_before, not_after = _validity(der, tbs[3])
    optional = [t[0] for t in tbs[6:]]  # each at most once, in this order
    if [t for t in _OPTIONAL if t in optional] != optional:
        raise ValueError("tbsCertificate fields out of shape")
    is_ca, key_usage, uris = False, None, None
    if _EXTENSIONS in optional:  # then the last field, by the order just checked
        is_ca, key_usage, uris = _extensions(der, tbs[-1])
    return Certificate(not_before, not_after, is_ca, key_usage, uris)


def _element(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(tag, start, end of contents) of the element at `pos`, which must end by `limit`."""
    if pos + 2 > limit:
        raise ValueError("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("a multi-byte tag")  # none in a certificate
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > limit:  # 0 is BER's indefinite length
            raise ValueError("a bad length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        if length < 0x80 or buf[pos] == 0:
            raise ValueError("a length not in its shortest form")
        pos += count
    if pos + length > limit:
        raise ValueError("an element longer than its parent")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos < end:
        element = _element(buf, pos, end)
        yield element
        pos = element[2]


def _validity(buf: bytes, validity: tuple[int, int, int]) -> tuple[float, float]:
    times = list(_children(buf, validity[1], validity[2]))
    if len(times) != 2:
        raise ValueError("validity is not two times")
    before, after = (_time(tag, buf[start:end]) for tag, start, end in times)
    return before, after


def _time(tag: int, text: bytes) -> float:
    """UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`, the only forms RFC 5280 allows."""
    if tag == _UTC_TIME and len(text) == 13:
        digits = 2
    elif tag == _GENERALIZED_TIME and len(text) == 15:
        digits = 4
    else:
        raise ValueError("a time not in RFC 5280's form")
    if not text.endswith(b"Z") or not text[:-1].isdigit():
        raise ValueError("a time not in RFC 5280's form")
    year, rest = int(text[:digits]), text[digits:]
    if digits == 2:
        year += 1900 if year >= 50 else 2000
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise ValueError("a time out of range") from None


def _extensions(buf: bytes, wrapper: tuple[int, int, int]) -> tuple[bool, int | None, tuple[str, ...] | None]:
    """(cA, keyUsage, URI SANs) from the [3] extensions field."""
    inner = list(_children(buf, wrapper[1], wrapper[2]))
    if len(inner) != 1 or inner[0][0] != _SEQUENCE:
        raise ValueError("extensions out of shape")
    seen: set[bytes] = set()
    is_ca, key_usage, uris = False, None, None
    for tag, start, end in _children(buf, inner[0][1], inner[0][2]):
        parts = list(_children(buf, start, end)) if tag == _SEQUENCE else []
        if len(parts) == 3 and parts[1][0] == _BOOLEAN:
            _boolean(buf, parts.pop(1))  # critical: OpenSSL refuses a critical one it does not know
        if len(parts) != 2 or parts[0][0] != _OID or parts[1][0] != _OCTET_STRING:
            raise ValueError("an extension out of shape")
        oid = buf[parts[0][1] : parts[0][2]]
        if oid in seen:
            raise ValueError("an extension that appears twice")
        seen.add(oid)
        value = (parts[1][1], parts[1][2])
        if oid == _BASIC_CONSTRAINTS:
            is_ca = _basic_constraints_ca(buf, value)
        elif oid == _KEY_USAGE:
            key_usage = _key_usage(buf, value)
        elif oid == _SUBJECT_ALT_NAME:
            uris = _uris(buf, value)
    return is_ca, key_usage, uris


def _only(buf: bytes, value: tuple[int, int], tag: int, what: str) -> tuple[int, int]:
    """The contents of the single element of `tag` that an extension's value must be."""
    element = _element(buf, value[0], value[1])
    if element[0] != tag or element[2] != value[1]:
        raise ValueError(f"{what} out of shape")
    return element[1], element[2]


def _basic_constraints_ca(buf: bytes, value: tuple[int, int]) -> bool:
    start, end = _only(buf, value, _SEQUENCE, "basicConstraints")
    parts = list(_children(buf, start, end))  # cA BOOLEAN DEFAULT FALSE, pathLenConstraint OPTIONAL
    tags = [t[0] for t in parts]
    if tags not in ([], [_BOOLEAN], [_INTEGER], [_BOOLEAN, _INTEGER]):
        raise ValueError("basicConstraints out of shape")
    return tags[:1] == [_BOOLEAN] and _boolean(buf, parts[0])


def _boolean(buf: bytes, element: tuple[int, int, int]) -> bool:
    value = buf[element[1] : element[2]]
    if value not in (b"\x00", b"\xff"):
        raise ValueError("not a DER BOOLEAN")
    return value == b"\xff"


def _key_usage(buf: bytes, value: tuple[int, int]) -> int:
    start, end = _only(buf, value, _BIT_STRING, "keyUsage")
    if start == end or buf[start] > 7 or (end - start == 1 and buf[start]):
        raise ValueError("keyUsage is not a BIT STRING")
    if end - start > 3:
        raise ValueError("keyUsage longer than its nine bits")
    unused = buf[start]
    if buf[end - 1] & ((1 << unused) - 1):
        raise ValueError("keyUsage has padding bits set: not DER")
    usage = 0
    for index, byte in enumerate(buf[start + 1 : end]):  # bit 0 is the first byte's high bit
        for bit in range(8):
            if byte & (0x80 >> bit):
                usage |= 1 << (index * 8 + bit)
    return usage


def _uris(buf: bytes, value: tuple[int, int]) -> tuple[str, ...]:
    start, end = _only(buf, value, _SEQUENCE, "subjectAltName")
    uris = []
    for tag, name_start, name_end in _children(buf, start, end):
        if tag not in _GENERAL_NAMES:
            raise ValueError(f"a subjectAltName with a GeneralName tag RFC 5280 does not define: {tag:#x}")
        if tag == _URI:
            try:
                uris.append(buf[name_start:name_end].decode("ascii"))
            except UnicodeDecodeError:
                raise ValueError("a URI SAN that is not IA5String") from None
    return tuple(uris)
