"""Every per-request module imports on its own, in a fresh interpreter.

This matters for the compiled build (setup.py): a mypyc-compiled class can need another compiled
module's classes when it is created, and an import order that never happens in `pillion run` (a test,
a benchmark or a tool importing one module first) once crashed the interpreter. `make test` runs this
against the pure and the compiled build.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).parents[2] / "setup.py"


def hot_modules() -> list[str]:
    """setup.py's HOT_MODULES, read without running setup.py."""
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "HOT_MODULES" for t in node.targets):
            modules: list[str] = ast.literal_eval(node.value)
            return modules
    raise AssertionError("no HOT_MODULES in setup.py")


HOT_MODULES = hot_modules()


@pytest.mark.parametrize("module", HOT_MODULES)
def test_module_imports_alone(module: str) -> None:
    name = "pillion." + module.replace("/", ".")
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"import {name} exited {done.returncode}: {done.stderr[-2000:]}"
