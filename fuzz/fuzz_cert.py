"""Fuzz the sidecar's own X.509 reader (pillion.tls.der) against `cryptography`'s reading.

    python fuzz/fuzz_cert.py -max_total_time=60 -timeout=1 -rss_limit_mb=2048 .fuzz/cert fuzz/corpus/cert

An input is a DER certificate, or anything else. Checks:
  - `read_certificate` returns a Certificate or raises ValueError; any other exception is a crash;
  - where cryptography also reads the certificate and its three extensions, both readings are equal
    (dates, cA, keyUsage bits, URI SANs): the two may differ on what they accept, never on what a
    certificate they both accept says;
  - `check_svid` returns an ID or raises SvidError, and agrees with the reading (an accepted SVID is not
    a CA, signs, has exactly that one URI SAN).
The seeds (fuzz/corpus/cert) are certificates from `pillion ca`: a CA, an SVID, leaves with two URIs,
CA:TRUE, no keyUsage, DNS names.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["pillion"]):
    from pillion.tls.der import DIGITAL_SIGNATURE, Certificate, read_certificate
    from pillion.tls.spiffe import SvidError, check_svid

from fuzzing import fuzz

from pillion.testing.x509_reference import cryptography_reading


class Finding(AssertionError):
    """The reader broke a promise; the message says which."""


def test_one_input(data: bytes) -> None:
    try:
        ours: Certificate | None = read_certificate(data)
    except ValueError:
        ours = None
    try:
        reference: Certificate | None = cryptography_reading(data)
    except Exception:  # cryptography refuses with ValueError and several exceptions of its own
        reference = None
    if ours is not None and reference is not None and ours != reference:
        raise Finding(f"cryptography reads {reference}, pillion.tls.der {ours}")
    try:
        spiffe_id = check_svid(data)
    except SvidError:
        return
    signs = ours is not None and (ours.key_usage or 0) & DIGITAL_SIGNATURE
    if ours is None or ours.is_ca or ours.uris != (spiffe_id,) or not signs:
        raise Finding(f"check_svid accepted {spiffe_id} from {ours}")


if __name__ == "__main__":
    fuzz(test_one_input)
