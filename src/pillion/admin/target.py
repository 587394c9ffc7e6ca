"""What the admin server serves: the `AdminTarget` protocol, implemented by the Runtime.

The admin server knows nothing about listeners, clusters or configuration; it asks its target. Keeping
that surface a small structural Protocol lets tests serve a plain object and keeps the server free of
imports from the proxy. Everything is called on the event loop thread; only `readiness` and
`metrics_text_merged` may await (both may ask the app): the server bounds how long it waits for the
first, the second bounds itself (`metrics.merge_app.timeout`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["AdminTarget", "ListenersTarget"]


class AdminTarget(Protocol):
    service: str

    def is_live(self) -> bool: ...

    async def readiness(self) -> tuple[bool, str]:
        """(ready, reason), e.g. (False, "listener inbound not bound")."""
        ...

    metrics_enabled: bool  # `metrics.enabled`: when false, `/metrics` answers 404

    def metrics_text(self) -> str:
        """The Prometheus exposition text."""
        ...

    async def metrics_text_merged(self) -> str:
        """What `GET /metrics` serves: `metrics_text()`, followed by the app's own metrics when merging is
        configured. Never raises for the app's sake; it waits at most the configured merge timeout."""
        ...

    def config_dump(self) -> dict[str, Any]:
        """The effective configuration, JSON-ready."""
        ...

    def clusters_view(self) -> list[dict[str, Any]]:
        """[{"name": ..., "endpoints": [{"address": ..., "state": "healthy", "active_requests": 0, ...}]}]"""
        ...

    def drain(self) -> None:
        """Begin draining. Idempotent."""
        ...

    def quit(self) -> None:
        """Begin a graceful exit. Idempotent."""
        ...


@runtime_checkable
class ListenersTarget(Protocol):
    """Optional extra: a target that also has these gets `GET /listeners` and `GET /certs`."""

    def listeners_view(self) -> list[dict[str, Any]]: ...

    def certs_view(self) -> dict[str, Any]:
        """The workload identity in service and each listener's and cluster's TLS mode."""
        ...
