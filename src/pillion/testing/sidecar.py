"""Run a whole sidecar (the real Runtime) inside the test's event loop, on loopback port 0.

`sidecar_config(...)` writes the YAML a user would and loads it through the real loader, so tests
exercise the same path as `pillion run`; `running_sidecar(config)` starts the Runtime and always drains
and stops it. The listener's bound port is `rt.listeners[0].port`, the admin's `rt.admin.port`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pillion.config import Config, load_config_text
from pillion.runtime.runtime import Runtime


def sidecar_config(
    endpoints: Sequence[str],
    *,
    routes: Sequence[dict[str, Any]] | None = None,
    limits: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    extra_clusters: Sequence[dict[str, Any]] = (),
    **top: Any,
) -> Config:
    """A one-listener config in front of `endpoints` (cluster `app`), with optional overrides."""
    doc: dict[str, Any] = {
        "service": "test",
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "inbound",
                "address": "127.0.0.1:0",
                "routes": list(routes)
                if routes is not None
                else [{"match": {"prefix": "/"}, "cluster": "app"}],
                **({"limits": limits} if limits else {}),
            }
        ],
        "clusters": [{"name": "app", "endpoints": list(endpoints), **(cluster or {})}, *extra_clusters],
        **top,
    }
    return load_config_text(json.dumps(doc))  # JSON is YAML


@asynccontextmanager
async def running_sidecar(config: Config) -> AsyncIterator[Runtime]:
    runtime = Runtime(config)
    await runtime.start()
    try:
        yield runtime
    finally:
        runtime.quit()
        await runtime.shutdown()
