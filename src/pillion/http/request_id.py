"""Request ids: unique per request, cheap to make, shaped like a UUID version 4.

An id is a per-process random prefix (74 random bits, drawn from os.urandom at start) followed by a
48-bit counter. Ids correlate logs and traces, so they must be unique across the mesh, not
unpredictable: random prefixes make two processes colliding vanishingly unlikely, and the counter makes
ids from one process distinct. Drawing 128 random bits per request and formatting them costs about
five times as much (os.urandom would add a syscall).
"""

from __future__ import annotations

import os
from typing import Final


def _prefix() -> bytes:
    r = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 used
    h = b"%020x" % r
    # xxxxxxxx-xxxx-4xxx-[89ab]xxx- : the version and variant bits of a UUID v4.
    variant = b"89ab"[r & 3 : (r & 3) + 1]
    return h[:8] + b"-" + h[8:12] + b"-4" + h[12:15] + b"-" + variant + h[15:18] + b"-"


_PREFIX: Final = _prefix()
_LOW: Final = tuple(b"%02x" % i for i in range(256))  # the counter's last two hex digits


class _Counter:
    """The 48-bit counter as hex: the first ten digits are formatted once per 256 ids, the last two
    come from a table, so an id costs one concatenation (formatting all twelve costs 10x that)."""

    __slots__ = ("head", "n")

    def __init__(self) -> None:
        self.n = int.from_bytes(os.urandom(4), "big")  # a random start: restarts do not repeat ids
        self.head = self._head()

    def _head(self) -> bytes:
        return _PREFIX + b"%010x" % (self.n >> 8 & 0xFFFFFFFFFF)

    def next(self) -> bytes:
        n = self.n = self.n + 1
        low = n & 0xFF
        if not low:
            self.head = self._head()
        return self.head + _LOW[low]


_COUNTER: Final = _Counter()


def request_id() -> bytes:
    """The next id, e.g. `3f2a9c1e-7b4d-4e21-a9f3-00000001a2b3`."""
    return _COUNTER.next()
