"""Configuration errors and the paths that locate them.

Theory of operation: every stage of loading (YAML, `${VAR}` substitution, conversion, cross-reference
checks) appends `<path>: <problem>` strings to one list instead of raising, so a user sees every mistake
in one run. Paths read like the Python expression that would reach the value
(`listeners[0].routes[1].cluster`); the helpers here are the only place that spelling is decided.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

ROOT = "(top level)"


class ConfigError(Exception):
    """An invalid configuration; `errors` holds one `<path>: <problem>` line per problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(self.errors)


def child(path: str, key: str) -> str:
    """The path of mapping key `key` under `path`."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """The path of list element `index` under `path`."""
    return f"{path}[{index}]"


def at(path: str, problem: str) -> str:
    """One error line."""
    return f"{path or ROOT}: {problem}"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or an empty string when nothing is close."""
    options = list(choices)
    # Case-insensitive so `INFO` finds `info`; the reported spelling is the real one.
    by_lower = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def describe(value: object) -> str:
    """The YAML kind of a parsed value plus a short excerpt, for `expected X, got Y` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
