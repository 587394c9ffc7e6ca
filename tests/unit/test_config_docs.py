"""docs/configuration.md is the current rendering of the model, and every field is documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pillion.config import Config, load_config_text
from pillion.config.docs import EXAMPLE, render
from pillion.config.introspect import doc, is_record, optional_of, record_fields, tuple_of

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def all_records(cls: type[Any], found: list[type[Any]]) -> list[type[Any]]:
    if cls not in found:
        found.append(cls)
        for _, hint in record_fields(cls):
            inner = optional_of(hint) or tuple_of(hint) or hint
            if is_record(inner):
                all_records(inner, found)
    return found


def test_committed_docs_are_up_to_date() -> None:
    assert DOCS.read_text() == render(), (
        "docs/configuration.md is stale; regenerate it with "
        "`.venv/bin/python -m pillion.config.docs > docs/configuration.md`"
    )


@pytest.mark.parametrize("cls", all_records(Config, []), ids=lambda c: c.__name__)
def test_every_field_is_documented(cls: type[Any]) -> None:
    assert (cls.__doc__ or "").strip()
    for f, _ in record_fields(cls):
        assert doc(f).strip(), f"{cls.__name__}.{f.name} has no doc"
        assert f"| `{f.name}` |" in render()


def test_every_record_has_a_section() -> None:
    for cls in all_records(Config, []):
        assert f"\n### {cls.__name__}\n" in render()


def test_docs_example_is_valid() -> None:
    cfg = load_config_text(EXAMPLE, env={})
    assert cfg.service == "orders"
