"""Pillion's configuration: a YAML file, loaded into frozen, typed, validated objects.

Theory of operation: `model.py` declares the configuration as dataclasses whose fields carry their docs;
everything else is derived from those type hints: the loader (`load_config`), the dump
(`config_to_dict`, feeding the admin `/config_dump`), the JSON Schema (`json_schema`) and
docs/configuration.md. Importing this package loads only PyYAML; the schema and docs generators are
imported on demand.
"""

from __future__ import annotations

from typing import Any

from pillion.config.dump import config_to_dict
from pillion.config.errors import ConfigError
from pillion.config.loader import load_config, load_config_text
from pillion.config.model import (
    AccessLog,
    Address,
    Admin,
    Cluster,
    Config,
    Duration,
    Endpoint,
    Limits,
    Listener,
    ReadyCheck,
    Route,
    RouteMatch,
    Size,
)
from pillion.config.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "AccessLog",
    "Address",
    "Admin",
    "Cluster",
    "Config",
    "ConfigError",
    "Duration",
    "Endpoint",
    "Limits",
    "Listener",
    "ReadyCheck",
    "Route",
    "RouteMatch",
    "Size",
    "config_to_dict",
    "format_duration",
    "format_size",
    "json_schema",
    "load_config",
    "load_config_text",
    "parse_duration",
    "parse_size",
]


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), generated from the model."""
    from pillion.config.schema import json_schema as generate

    return generate()
