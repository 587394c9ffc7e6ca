"""`${VAR}` substitution in the parsed configuration.

Theory of operation: substitution runs on the data YAML produced, one string scalar at a time, never on
the file text, so a variable's value is always just (part of) a string and cannot add keys, lists or
anchors. Mapping keys are left alone: they are the schema, not data. The rules follow the shell:

* `${NAME}` is the variable's value; unset is an error naming the config path.
* `${NAME:-default}` is the default when the variable is unset or empty.
* `$$` is a literal `$`; a `$` followed by anything else is kept as is.

A string that used a variable becomes an `Expanded` (a `str` subclass) so the converter may read it as a
number or boolean: `max_idle_connections: ${POOL:-128}` works, while a quoted `"128"` typed into the file
is still a type error. A string whose reference failed becomes `UNRESOLVED`, which the converter skips
without a second error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pillion.config.errors import at, child, item

_TOKEN = re.compile(r"\$\$|\$\{[^}]*\}|\$\{")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class Expanded(str):
    """A string that took (part of) its value from the environment."""

    __slots__ = ()


class Unresolved:
    """Marks a value whose substitution failed and was already reported."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNRESOLVED"


UNRESOLVED = Unresolved()


def substitute(data: object, env: Mapping[str, str], errors: list[str], path: str = "") -> object:
    """A copy of parsed YAML `data` with references in string values replaced; problems go to `errors`."""
    if isinstance(data, str):
        return _expand(data, env, errors, path)
    if isinstance(data, dict):
        return {key: substitute(value, env, errors, child(path, str(key))) for key, value in data.items()}
    if isinstance(data, list):
        return [substitute(value, env, errors, item(path, i)) for i, value in enumerate(data)]
    return data


def _expand(text: str, env: Mapping[str, str], errors: list[str], path: str) -> object:
    if "$" not in text:
        return text
    parts: list[str] = []
    used_env = False
    ok = True
    pos = 0
    for token in _TOKEN.finditer(text):
        parts.append(text[pos : token.start()])
        pos = token.end()
        found = token.group()
        if found == "$$":
            parts.append("$")
            continue
        if found == "${":
            errors.append(at(path, f"unterminated '${{' in {text!r}"))
            ok = False
            continue
        reference = _REFERENCE.fullmatch(found[2:-1])
        if reference is None or "${" in (reference.group(2) or ""):
            errors.append(at(path, f"invalid reference {found!r}: expected ${{NAME}} or ${{NAME:-default}}"))
            ok = False
            continue
        name, fallback = reference.groups()
        value = env.get(name)
        if fallback is not None and not value:
            value = fallback
        if value is None:
            errors.append(at(path, f"environment variable {name!r} is not set"))
            ok = False
            continue
        parts.append(value)
        used_env = True
    parts.append(text[pos:])
    if not ok:
        return UNRESOLVED
    result = "".join(parts)
    return Expanded(result) if used_env else result
