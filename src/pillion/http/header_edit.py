"""Route header edits: fields added to or removed from a request or a response.

Theory of operation: heads are built as lists of field lines (`name: value CRLF`, see `field_line`) after
one leading line (the request or status line). An edit is compiled once per route into a set of
lower-cased names to drop and ready-made lines to append, so applying it is one pass over the lines, and
routes without edits never call it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pillion.config.model import Header
from pillion.http.headers import field_line, line_name


class HeaderEdit:
    __slots__ = ("add", "drop")

    def __init__(self, add: Iterable[Header], remove: Iterable[str]) -> None:
        added = tuple(add)
        self.drop = frozenset(n.lower().encode() for n in remove) | frozenset(
            h.name.lower().encode() for h in added if h.replace
        )
        self.add = [field_line(h.name.encode(), h.value.encode("latin-1")) for h in added]

    def apply(self, parts: list[bytes], start: int, end: int) -> list[bytes]:
        """`parts` with the field lines in [start, end) edited; parts after `end` kept after the added
        fields."""
        drop = self.drop
        out = parts[:start]
        out += [line for line in parts[start:end] if line_name(line) not in drop]
        out += self.add
        out += parts[end:]
        return out


def compile_edit(add: Iterable[Header], remove: Iterable[str]) -> HeaderEdit | None:
    """A HeaderEdit, or None when there is nothing to do (the common route)."""
    add, remove = tuple(add), tuple(remove)
    return HeaderEdit(add, remove) if add or remove else None
