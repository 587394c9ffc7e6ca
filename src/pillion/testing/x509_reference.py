"""A reference reading of X.509 certificates, for differential tests and the fuzzer of pillion.tls.der.

`cryptography_reading(der)` is what the `cryptography` package reads from a DER certificate, in the terms
of `pillion.tls.der.Certificate`: the dates, basicConstraints cA, the keyUsage bits and the URI SANs. It
raises ValueError (or cryptography's own exceptions) where cryptography refuses the certificate or one of
those extensions. Where both readers accept a certificate they must agree; where they differ on
accepting it, the differences are listed in docs/mtls.md.

Imports cryptography, which a running sidecar never does: only tests and fuzzers use this module.
"""

from __future__ import annotations

from cryptography import x509

from pillion.tls.ca import KEY_USAGES
from pillion.tls.der import Certificate


def cryptography_reading(der: bytes) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    extensions = cert.extensions
    try:
        is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    else:
        # cryptography raises on reading the two *_only flags unless keyAgreement is set.
        readable = [not name.endswith("_only") or usage.key_agreement for name in KEY_USAGES]
        key_usage = sum(
            1 << bit for bit, name in enumerate(KEY_USAGES) if readable[bit] and getattr(usage, name)
        )
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris = None
    else:
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    return Certificate(
        cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(), is_ca, key_usage, uris
    )
