"""The loops the `run` fixture covers: both by default, fewer when PILLION_TEST_LOOPS says so."""

from __future__ import annotations

import pytest

from pillion.testing.loops import ALL_LOOPS, _loops


def test_the_default_names_both_loops() -> None:
    assert _loops(" ".join(ALL_LOOPS)) == ("asyncio", "uvloop")


def test_one_loop_may_be_chosen() -> None:
    assert _loops("uvloop") == ("uvloop",)
    assert _loops(" asyncio ") == ("asyncio",)
    assert _loops("uvloop asyncio uvloop") == ("uvloop", "asyncio")  # each once


@pytest.mark.parametrize("names", ["", "  ", "trio", "uvloop tornado"])
def test_an_unknown_or_empty_choice_is_refused_by_name(names: str) -> None:
    with pytest.raises(ValueError, match="PILLION_TEST_LOOPS"):
        _loops(names)
