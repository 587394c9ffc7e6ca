"""Model objects back to plain, JSON-ready data (the admin `/config_dump`, schema and docs defaults).

Theory of operation: the same type-hint walk as the converter, in reverse. Durations and sizes are
written in the config file's own notation (`"250ms"`, `"60KiB"`) and addresses as `host:port`, so a dump
is itself a valid configuration that loads back to an equal `Config`, and reads the way the user wrote
it. Every field is present, defaults and nulls included: a dump shows the effective configuration.
"""

from __future__ import annotations

from typing import Any

from pillion.config.introspect import is_record, optional_of, record_fields, tuple_of
from pillion.config.model import Address, Config, Duration, Size
from pillion.config.units import format_duration, format_size


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """`cfg` as JSON-ready data: durations like `"250ms"`, sizes like `"60KiB"`, addresses `"host:port"`."""
    data: dict[str, Any] = to_data(Config, cfg)
    return data


def to_data(tp: Any, value: Any) -> Any:
    """`value`, declared in the model as type `tp`, as JSON-ready data."""
    if value is None:
        return None
    inner = optional_of(tp)
    if inner is not None:
        return to_data(inner, value)
    element = tuple_of(tp)
    if element is not None:
        return [to_data(element, v) for v in value]
    if is_record(tp):
        return {f.name: to_data(hint, getattr(value, f.name)) for f, hint in record_fields(tp)}
    if tp is Address:
        return str(value)
    if tp is Duration:
        return format_duration(value)
    if tp is Size:
        return format_size(value)
    return value
