"""The app's own health check, run when `/ready` is asked (Istio's probe-rewrite idea: the kubelet asks
the sidecar, the sidecar asks the app, so one probe covers both). Not on the data path: one plain GET
(runtime/app_client.py) whose status alone decides, so the body is never read.
"""

from __future__ import annotations

from pillion.runtime.app_client import FetchError, fetch


async def probe(host: str, port: int, path: str, limit: float) -> tuple[bool, str]:
    """GET `path` from the app; 2xx or 3xx means ready."""
    try:
        answer = await fetch(host, port, path, limit, max_body=None)
    except FetchError as exc:
        return False, str(exc)
    return (200 <= answer.status < 400), f"app answered {answer.status}"
