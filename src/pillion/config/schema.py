"""The configuration's JSON Schema (draft 2020-12), generated from the model's type hints.

Theory of operation: one `$defs` entry per record class (and per scalar notation), each property a
`$ref` or inline type plus the field's doc as `description` and its default as dumped by `dump.py`.
Records are closed (`additionalProperties: false`) and list their required keys, matching the loader.
Values the loader would take from `${VAR}` substitution are allowed wherever a non-string is expected,
since the schema sees the file before substitution (editors validate as you type). What the schema
cannot express -- port ranges, unique names, references between clusters and routes -- is left to
`pillion validate`.
"""

from __future__ import annotations

from typing import Any

from pillion.config.address import ADDRESS_PATTERN
from pillion.config.dump import to_data
from pillion.config.introspect import (
    default,
    doc,
    is_record,
    is_required,
    literal_of,
    optional_of,
    record_fields,
    short_form_of,
    tuple_of,
)
from pillion.config.model import Address, Config, Duration, Size
from pillion.config.units import DURATION_PATTERN, SIZE_PATTERN

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ENV = {"$ref": "#/$defs/EnvReference"}
_SCALAR_DEFS: dict[str, dict[str, Any]] = {
    "EnvReference": {
        "description": "A string containing a `${NAME}` or `${NAME:-default}` environment reference.",
        "type": "string",
        "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    },
    "Duration": {
        "description": "Seconds: a bare number, or a number with a unit: `100us`, `250ms`, `2s`, `1m`, `1h`.",
        "anyOf": [
            {"type": "string", "pattern": DURATION_PATTERN},
            {"type": "number", "minimum": 0},
            _ENV,
        ],
    },
    "Size": {
        "description": "Bytes: a bare integer, or a number with a unit: `kB`, `MB`, `GB` (powers of 1000), "
        "`KiB`, `MiB`, `GiB` (powers of 1024).",
        "anyOf": [
            {"type": "string", "pattern": SIZE_PATTERN},
            {"type": "integer", "minimum": 0},
            _ENV,
        ],
    },
    "Address": {
        "description": "A socket address `host:port`; IPv6 hosts in brackets (`[::1]:8080`).",
        "anyOf": [{"type": "string", "pattern": ADDRESS_PATTERN}, _ENV],
    },
}
_SCALAR_REFS: dict[Any, str] = {Duration: "Duration", Size: "Size", Address: "Address"}


def json_schema() -> dict[str, Any]:
    """The schema of a configuration file, with every record class under `$defs`."""
    defs: dict[str, Any] = {}
    root = _type_schema(Config, defs)
    return {
        "$schema": DIALECT,
        "title": "Pillion configuration",
        **root,
        "$defs": {**defs, **{name: _SCALAR_DEFS[name] for name in sorted(_SCALAR_DEFS)}},
    }


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    inner = optional_of(tp)
    if inner is not None:
        return {"anyOf": [_type_schema(inner, defs), {"type": "null"}]}
    element = tuple_of(tp)
    if element is not None:
        return {"type": "array", "items": _type_schema(element, defs)}
    choices = literal_of(tp)
    if choices is not None:
        return {"anyOf": [{"enum": list(choices)}, _ENV]}
    if is_record(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # reserve the name first, in case of recursion
            defs[tp.__name__] = _record_schema(tp, defs)
        ref = {"$ref": f"#/$defs/{tp.__name__}"}
        short = short_form_of(tp)
        if short is not None:
            short_type = next(h for f, h in record_fields(tp) if f.name == short)
            return {"anyOf": [_type_schema(short_type, defs), ref]}
        return ref
    if tp in _SCALAR_REFS:
        return {"$ref": f"#/$defs/{_SCALAR_REFS[tp]}"}
    if tp is str:
        return {"type": "string"}
    if tp is int:
        return {"anyOf": [{"type": "integer", "minimum": 0}, _ENV]}
    if tp is float:
        return {"anyOf": [{"type": "number", "minimum": 0}, _ENV]}
    if tp is bool:
        return {"anyOf": [{"type": "boolean"}, _ENV]}
    raise TypeError(f"unsupported type {tp!r} in the config model")


def _record_schema(cls: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f, hint in record_fields(cls):
        prop = {**_type_schema(hint, defs), "description": doc(f)}
        if is_required(f):
            required.append(f.name)
        else:
            prop["default"] = to_data(hint, default(f))
        properties[f.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or "").strip(),
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema
