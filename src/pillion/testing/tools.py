"""External tools tests meet for real (promtool, haproxy, nginx, curl...).

A missing tool is a skip on a developer's machine but a failure in CI (`CI=true`): there, `make test`
installs every tool, so a missing one means the install step is broken, and a skip would hide it.
"""

from __future__ import annotations

import os
import shutil


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
