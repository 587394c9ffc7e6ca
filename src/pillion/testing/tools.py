"""External tools tests meet for real (promtool, haproxy, nginx, curl...).

A missing tool is a skip on a developer's machine but a failure in CI (`CI=true`): there, `make test`
installs every tool, so a missing one means the install step is broken, and a skip would hide it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def require_tool(name: str) -> str:
    """The tool's path; otherwise fail in CI, skip elsewhere."""
    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{name} is required in CI; `make test` installs it (see SYSTEM_PACKAGES in the Makefile)"
            )
        pytest.skip(f"{name} not installed (run `make system-deps`)")
    return path


def assert_promtool_clean(text: str, tmp_path: Path) -> None:
    """`promtool check metrics` has nothing at all to say about `text`: no error, no lint warning."""
    promtool = require_tool("promtool")
    file = tmp_path / "metrics.txt"
    file.write_text(text, encoding="utf-8")
    with file.open("rb") as stdin:
        proc = subprocess.run(
            [promtool, "check", "metrics"], stdin=stdin, capture_output=True, timeout=30, check=False
        )
    assert proc.stdout == b"" and proc.stderr == b"", (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0
