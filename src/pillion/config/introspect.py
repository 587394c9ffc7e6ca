"""Reading the model's type hints: the one vocabulary the loader, dumper, schema and docs share.

Theory of operation: the model's annotations are strings (`from __future__ import annotations`), so each
class's hints are resolved once with `typing.get_type_hints` and cached. Consumers then dispatch on a
small set of shapes: a record (a dataclass written as a YAML mapping), `T | None`, `tuple[T, ...]`,
`Literal[...]`, and scalars (`str`, `int`, `bool`, `Duration`, `Size`, and `Address`, which is a
dataclass but written as one `host:port` string). Anything else in the model is a programming error and
raises TypeError at once, rather than being silently accepted.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pillion.config.model import Address, Endpoint

Field = dataclasses.Field[Any]


_fields: dict[type[Any], tuple[tuple[Field, Any], ...]] = {}


def record_fields(cls: type[Any]) -> tuple[tuple[Field, Any], ...]:
    """Each field of dataclass `cls` with its resolved type hint, in declaration order."""
    cached = _fields.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = _fields[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls))
    return cached


def is_record(tp: Any) -> bool:
    """A dataclass written as a mapping (Address is a dataclass too, but written as a string)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp is not Address


# Records that may also be written as just their first field's value (`127.0.0.1:8080` for an endpoint).
_SHORT_FORMS: dict[type[Any], str] = {Endpoint: "address"}


def short_form_of(tp: Any) -> str | None:
    """The field a bare value stands for, when record `tp` has a short form."""
    return _SHORT_FORMS.get(tp)


def optional_of(tp: Any) -> Any | None:
    """`T` when `tp` is `T | None`; None when `tp` is not a union."""
    if get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = get_args(tp)
    rest = [a for a in args if a is not type(None)]
    if len(args) != 2 or len(rest) != 1:
        raise TypeError(f"unsupported union {tp!r} in the config model: only `T | None` is supported")
    return rest[0]


def tuple_of(tp: Any) -> Any | None:
    """`T` when `tp` is `tuple[T, ...]`; None when it is not a tuple."""
    if get_origin(tp) is not tuple:
        return None
    args = get_args(tp)
    if len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError(f"unsupported tuple {tp!r} in the config model: only `tuple[T, ...]` is supported")
    return args[0]


def literal_of(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values when `tp` is `Literal[...]`."""
    return get_args(tp) if get_origin(tp) is Literal else None


def doc(f: Field) -> str:
    return str(f.metadata.get("doc", ""))


def is_required(f: Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def default(f: Field) -> Any:
    """The value a missing key gets (factories called afresh); only for fields that are not required."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
