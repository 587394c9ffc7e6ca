"""SPIFFE IDs: `spiffe://TRUST_DOMAIN/PATH`, parsed strictly.

Theory of operation: a SPIFFE ID is compared as a string in authorization rules, so two spellings of the
same identity must not exist. The SPIFFE ID rules therefore forbid everything that would let them differ:
upper case in the trust domain, percent-encoding, `.`/`..` and empty path segments, a trailing `/`, and
the URI parts an identity has no use for (userinfo, port, query, fragment). `parse_spiffe_id` accepts
only that canonical form and says which rule a refused ID broke. No `cryptography` import here: the
config model can validate IDs without loading X.509 support.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_BYTES = 2048  # what every SPIFFE implementation must accept; longer IDs are refused
MAX_TRUST_DOMAIN_BYTES = 255  # the URI host limit
SCHEME = "spiffe://"

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID. `path` is `""` (the trust domain itself) or `/seg/seg...`."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def is_workload(self) -> bool:
        """True when the ID names a workload: a leaf SVID needs a path, a bare trust domain names a CA."""
        return bool(self.path)


def parse_spiffe_id(text: str) -> SpiffeId:
    """The ID in `text`; ValueError naming the broken rule otherwise."""
    if len(text.encode()) > MAX_ID_BYTES:
        raise ValueError(f"invalid SPIFFE ID: longer than {MAX_ID_BYTES} bytes")
    if not text.startswith(SCHEME):
        if text[: len(SCHEME)].lower() == SCHEME:
            raise ValueError(f"invalid SPIFFE ID {text!r}: the scheme must be 'spiffe://', in lower case")
        raise ValueError(f"invalid SPIFFE ID {text!r}: must start with 'spiffe://'")
    rest = text[len(SCHEME) :]
    for char, part in (("?", "a query"), ("#", "a fragment")):
        if char in rest:
            raise ValueError(f"invalid SPIFFE ID {text!r}: must not contain {part} ({char!r})")
    authority, slash, path = rest.partition("/")
    trust_domain = _check_trust_domain(authority, f"SPIFFE ID {text!r}")
    if not slash:
        return SpiffeId(trust_domain, "")
    for segment in path.split("/"):
        if not segment:
            raise ValueError(f"invalid SPIFFE ID {text!r}: empty path segment (no '//' and no trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"invalid SPIFFE ID {text!r}: path segments must not be '.' or '..'")
        if _SEGMENT.fullmatch(segment) is None:
            raise ValueError(
                f"invalid SPIFFE ID {text!r}: path segment {segment!r} may contain only letters, "
                "digits, '.', '-' and '_' (no percent-encoding)"
            )
    return SpiffeId(trust_domain, "/" + path)


def parse_trust_domain(text: str) -> str:
    """A trust domain name (`example.org`, or `spiffe://example.org`); ValueError otherwise."""
    if text.startswith(SCHEME):
        spiffe_id = parse_spiffe_id(text)
        if spiffe_id.path:
            raise ValueError(f"invalid trust domain {text!r}: a trust domain has no path")
        return spiffe_id.trust_domain
    return _check_trust_domain(text, f"trust domain {text!r}")


def _check_trust_domain(authority: str, what: str) -> str:
    """`authority` if it is a valid trust domain name; `what` names the input in the error."""
    if not authority:
        raise ValueError(f"invalid {what}: the trust domain is empty")
    if "@" in authority:
        raise ValueError(f"invalid {what}: must not contain userinfo ('@')")
    if ":" in authority:
        raise ValueError(f"invalid {what}: must not contain a port (':')")
    if len(authority) > MAX_TRUST_DOMAIN_BYTES:
        raise ValueError(f"invalid {what}: trust domain longer than {MAX_TRUST_DOMAIN_BYTES}")
    if _TRUST_DOMAIN.fullmatch(authority) is None:
        raise ValueError(
            f"invalid {what}: trust domain {authority!r} may contain only lower-case "
            "letters, digits, '.', '-' and '_'"
        )
    return authority
