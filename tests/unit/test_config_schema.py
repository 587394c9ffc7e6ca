"""The generated JSON Schema is valid draft 2020-12 and agrees with the loader on real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pillion.config import config_to_dict, json_schema, load_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "pillion.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load_yaml_12(text: str) -> dict[str, Any]:
    from pillion.config.loader import _StrictLoader

    data: dict[str, Any] = yaml.load(text, Loader=_StrictLoader)
    return data


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def test_schema_declares_its_dialect() -> None:
    assert json_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_example_validates(validator: jsonschema.Draft202012Validator) -> None:
    validator.validate(example())


def test_config_dump_validates(validator: jsonschema.Draft202012Validator) -> None:
    validator.validate(config_to_dict(load_config(EXAMPLE)))


def test_outbound_example_and_its_dump_validate(validator: jsonschema.Draft202012Validator) -> None:
    outbound = EXAMPLE.with_name("outbound.yaml")
    # The schema follows YAML 1.2 like the loader: `on:` is a key, not the boolean true.
    validator.validate(load_yaml_12(outbound.read_text()))
    validator.validate(config_to_dict(load_config(outbound)))


def test_unknown_key_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    data = example()
    data["listeners"][0]["adress"] = "0.0.0.0:1"
    with pytest.raises(jsonschema.ValidationError, match="adress"):
        validator.validate(data)


def test_missing_required_key_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    data = example()
    del data["service"]
    with pytest.raises(jsonschema.ValidationError, match="'service' is a required property"):
        validator.validate(data)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("drain_timeout", "5 sec"),
        ("drain_timeout", -1),
        ("log_level", "loud"),
        ("admin", {"address": "9901"}),
    ],
)
def test_bad_values_are_rejected(validator: jsonschema.Draft202012Validator, key: str, value: object) -> None:
    data = example()
    data[key] = value
    assert not validator.is_valid(data)


def test_env_references_are_accepted_before_substitution(validator: jsonschema.Draft202012Validator) -> None:
    data = example()
    data["listeners"][0]["address"] = "0.0.0.0:${PORT}"
    data["clusters"][0]["max_idle_connections"] = "${POOL:-8}"
    data["log_level"] = "${LOG_LEVEL:-info}"
    validator.validate(data)


def test_fields_carry_description_and_default() -> None:
    cluster = json_schema()["$defs"]["Cluster"]
    assert cluster["additionalProperties"] is False
    assert cluster["required"] == ["name", "endpoints"]
    timeout = cluster["properties"]["connect_timeout"]
    assert timeout["$ref"] == "#/$defs/Duration"
    assert timeout["default"] == "1s"
    assert timeout["description"].startswith("Time allowed to open a TCP connection")
