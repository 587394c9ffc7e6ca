"""The generic converter: parsed YAML in, frozen model objects out, every problem named by path.

Theory of operation: `build(cls, data, errors)` walks the type hints of `cls` (see `introspect.py`) and
the data side by side. Each step either returns a converted value or appends `<path>: <problem>` to
`errors` and returns `_INVALID`; a record is constructed only when all of its fields converted, but its
siblings are still visited, so one run reports every structural mistake. Nothing here knows the model's
classes except the scalar notations, which is why a new config field needs no loader code.

Strictness is deliberate: unknown keys and wrong YAML types are errors (with a did-you-mean), because a
sidecar that ignores a misspelled `conect_timeout` silently runs with the default. The one leniency is for
strings built by `${VAR}` substitution (`Expanded`), which may stand for integers and booleans since
environment variables are always text. Every integer in the model is a count or a port, so negative
integers are rejected here once, for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeVar

from pillion.config.address import parse_address
from pillion.config.env import UNRESOLVED, Expanded
from pillion.config.errors import at, child, describe, item, suggest
from pillion.config.introspect import (
    is_record,
    is_required,
    literal_of,
    optional_of,
    record_fields,
    short_form_of,
    tuple_of,
)
from pillion.config.model import Address, Duration, Size
from pillion.config.units import parse_duration, parse_size

T = TypeVar("T")
_INVALID: Final = object()


def build(cls: type[T], data: object, errors: list[str]) -> T | None:
    """An instance of dataclass `cls` from `data`, or None after appending every problem to `errors`."""
    result = _convert(cls, data, "", errors)
    return None if result is _INVALID else result


def _convert(tp: Any, value: object, path: str, errors: list[str]) -> Any:
    if value is UNRESOLVED:
        return _INVALID  # substitution already reported it
    inner = optional_of(tp)
    if inner is not None:
        return None if value is None else _convert(inner, value, path, errors)
    element = tuple_of(tp)
    if element is not None:
        return _convert_list(element, value, path, errors)
    choices = literal_of(tp)
    if choices is not None:
        return _convert_choice(choices, value, path, errors)
    if is_record(tp):
        return _convert_record(tp, value, path, errors)
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise TypeError(f"unsupported type {tp!r} in the config model")
    try:
        return scalar(value)
    except ValueError as exc:
        errors.append(at(path, str(exc)))
        return _INVALID


def _convert_record(cls: type[Any], value: object, path: str, errors: list[str]) -> Any:
    short = short_form_of(cls)
    if short is not None and not isinstance(value, dict):
        # Written as just one field's value (an endpoint as its address): problems are named here.
        hint = next(h for f, h in record_fields(cls) if f.name == short)
        converted = _convert(hint, value, path, errors)
        return _INVALID if converted is _INVALID else cls(**{short: converted})
    if not isinstance(value, dict):
        errors.append(at(path, f"expected a mapping, got {describe(value)}"))
        return _INVALID
    fields = record_fields(cls)
    names = [f.name for f, _ in fields]
    ok = True
    for key in value:
        if key not in names:
            hint = suggest(str(key), names) or f"; expected one of: {', '.join(names)}"
            errors.append(at(child(path, str(key)), f"unknown key{hint}"))
            ok = False
    kwargs: dict[str, Any] = {}
    for f, hint_type in fields:
        if f.name not in value:
            if is_required(f):
                errors.append(at(child(path, f.name), "missing required key"))
                ok = False
            continue
        converted = _convert(hint_type, value[f.name], child(path, f.name), errors)
        if converted is _INVALID:
            ok = False
        else:
            kwargs[f.name] = converted
    return cls(**kwargs) if ok else _INVALID


def _convert_list(element: Any, value: object, path: str, errors: list[str]) -> Any:
    if not isinstance(value, list):
        errors.append(at(path, f"expected a list, got {describe(value)}"))
        return _INVALID
    converted = [_convert(element, v, item(path, i), errors) for i, v in enumerate(value)]
    return _INVALID if any(c is _INVALID for c in converted) else tuple(converted)


def _convert_choice(choices: tuple[Any, ...], value: object, path: str, errors: list[str]) -> Any:
    for choice in choices:
        # `type() is` so that YAML `true` never equals a Literal 1, nor 1 a Literal True.
        same_kind = type(value) is type(choice) or (isinstance(value, Expanded) and isinstance(choice, str))
        if same_kind and value == choice:
            return choice
    allowed = ", ".join(repr(c) for c in choices)
    hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
    errors.append(at(path, f"must be one of {allowed}, got {describe(value)}{hint}"))
    return _INVALID


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return str(value)  # drops the Expanded marker


def _to_int(value: object) -> int:
    if isinstance(value, Expanded) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {describe(value)}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _to_float(value: object) -> float:
    if isinstance(value, Expanded):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {describe(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {describe(value)}")
    if value < 0 or math.isnan(value):
        raise ValueError(f"must not be negative, got {value}")
    return float(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, Expanded) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def _to_duration(value: object) -> Duration:
    return parse_duration(value)  # type: ignore[arg-type]  # parse_duration checks the type itself


def _to_size(value: object) -> Size:
    return parse_size(value)  # type: ignore[arg-type]  # parse_size checks the type itself


def _to_address(value: object) -> Address:
    if not isinstance(value, str):
        raise ValueError(f"expected an address 'host:port', got {describe(value)}")
    return parse_address(value)


_SCALARS: dict[Any, Callable[[object], Any]] = {
    str: _to_str,
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    Duration: _to_duration,
    Size: _to_size,
    Address: _to_address,
}
