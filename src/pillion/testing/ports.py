"""Ports for test and benchmark servers to listen on, chosen outside the kernel's ephemeral range.

Theory of operation: a port that was free a moment ago can be taken before the server binds it. The
kernel's own pick (`bind(port 0)`) comes from the ephemeral range, the range it also takes the local
ports of outgoing connections from; with load generators, pools and health checks connecting all the
while, one of them sometimes got the port first and the server failed with EADDRINUSE (seen in `make
bench`). Outgoing connections never use a port outside the range, so `free_port` picks one below it (or
above it), at random, checks that nothing is bound to it, and does not hand out a port again within
`_RECENT` picks (a caller may pick several before binding any). Where the range leaves too little room
(a tuned `1024 65535`), it falls back to the kernel's pick.
"""

from __future__ import annotations

import errno
import random
import socket
from collections import deque
from typing import Final

EPHEMERAL_RANGE: Final = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST: Final = 10_000  # below this, ports that well-known services use
ROOM: Final = 2_000  # the fewest ports worth picking from
_ATTEMPTS: Final = 200
_RECENT: Final = 256
_recent: deque[int] = deque(maxlen=_RECENT)
_random: Final = random.Random()  # its own: tests that seed the global generator do not steer it


def ephemeral_range(path: str = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's range for local ports of outgoing connections (Linux's default if unreadable)."""
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def listen_ports(low: int, high: int) -> range | None:
    """Where to pick: below the ephemeral range, else above it; None if neither has `ROOM` ports."""
    for ports in (range(LOWEST, low), range(max(high + 1, LOWEST), 65536)):
        if len(ports) >= ROOM:
            return ports
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing is bound to now, outside the ephemeral range (bind it soon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = listen_ports(*ephemeral_range())
    if ports is None:
        return _kernels_pick(family, host)
    for _ in range(_ATTEMPTS):
        port = _random.choice(ports)
        if port in _recent:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue  # in use (or in TIME_WAIT: a server could bind it, but pick another)
                raise  # a bad host, an address not here: not a matter of trying another port
        _recent.append(port)
        return port
    raise OSError(f"no free port on {host} in {ports.start}..{ports.stop - 1} after {_ATTEMPTS} tries")


def _kernels_pick(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
