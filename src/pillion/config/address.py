"""Socket addresses written `host:port`.

Theory of operation: the port is whatever follows the last colon; an IPv6 host must be bracketed
(`[::1]:8080`) because otherwise its own colons make the split ambiguous. Hosts are checked for shape
only (an IP literal, or a name made of DNS-ish characters) and never resolved: loading a config must not
depend on DNS.
"""

from __future__ import annotations

import ipaddress
import re

from pillion.config.model import Address

ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]+$"
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_EXAMPLES = "e.g. '127.0.0.1:8080', '[::1]:8080' or 'localhost:8080'"


def parse_address(text: str) -> Address:
    """An `Address` from `host:port`; ValueError naming the problem otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address {text!r}: expected host:port, {_EXAMPLES}")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"invalid address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"invalid address {text!r}: port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"invalid address {text!r}: write IPv6 hosts in brackets, e.g. '[::1]:8080'")
    elif _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv4 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid address {text!r}: {host!r} is not a valid host name")
    return Address(host, port)
