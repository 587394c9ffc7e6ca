"""Ports for test and benchmark servers to listen on, chosen outside the kernel's ephemeral range.

Theory of operation: a port that was free a moment ago can be taken before the server binds it. The
kernel's own pick (`bind(port 0)`) comes from the ephemeral range, the range it also takes the local
ports of outgoing connections from; with load generators, pools and health checks connecting all the
while, one of them sometimes got the port first and the server failed with EADDRINUSE (seen in `make
bench`). Outgoing connections never use a port below the range, so `free_port` picks one there, at
random, checks that nothing is bound to it, and does not hand out the same port twice in a row of
`_RECENT` picks (a caller may pick several before binding any).
"""

from __future__ import annotations

import random
import socket
from collections import deque
from typing import Final

EPHEMERAL_RANGE: Final = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST: Final = 10_000  # below this, ports that well-known services use
_ATTEMPTS: Final = 200
_RECENT: Final = 256
_recent: deque[int] = deque(maxlen=_RECENT)


def ephemeral_range(path: str = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's range for local ports of outgoing connections (Linux's default if unreadable)."""
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def listen_ports(low: int, high: int) -> range:
    """Where to pick: below the ephemeral range if that leaves 1000 ports, else above it."""
    if low - LOWEST >= 1000:
        return range(LOWEST, low)
    return range(high + 1, 65536)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing is bound to now, outside the ephemeral range (bind it soon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = listen_ports(*ephemeral_range())
    for _ in range(_ATTEMPTS):
        port = random.choice(ports)
        if port in _recent:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use (or in TIME_WAIT: a server could bind it, but pick another)
        _recent.append(port)
        return port
    raise OSError(f"no free port on {host} in {ports.start}..{ports.stop - 1} after {_ATTEMPTS} tries")
