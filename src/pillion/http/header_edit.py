"""Route header edits: fields added to or removed from a request or a response.

Theory of operation: heads are built as flat lists of (name, ": ", value, CRLF) quads after a fixed
number of leading parts (the request or status line). An edit is compiled once per route into a set of
lower-cased names to drop and ready-made quads to append, so applying it is one pass over the quads, and
routes without edits never call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pillion.config.model import Header

_CRLF: Final = b"\r\n"


class HeaderEdit:
    __slots__ = ("add", "drop")

    def __init__(self, add: Iterable[Header], remove: Iterable[str]) -> None:
        added = tuple(add)
        self.drop = frozenset(n.lower().encode() for n in remove) | frozenset(
            h.name.lower().encode() for h in added if h.replace
        )
        self.add: list[bytes] = []
        for h in added:
            self.add += (h.name.encode(), b": ", h.value.encode("latin-1"), _CRLF)

    def apply(self, parts: list[bytes], start: int, end: int) -> list[bytes]:
        """`parts` with the quads in [start, end) edited; parts after `end` kept after the added fields."""
        out = parts[:start]
        drop = self.drop
        for i in range(start, end, 4):
            if parts[i].lower() not in drop:
                out += parts[i : i + 4]
        out += self.add
        out += parts[end:]
        return out


def compile_edit(add: Iterable[Header], remove: Iterable[str]) -> HeaderEdit | None:
    """A HeaderEdit, or None when there is nothing to do (the common route)."""
    add, remove = tuple(add), tuple(remove)
    return HeaderEdit(add, remove) if add or remove else None
