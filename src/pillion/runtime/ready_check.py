"""The app's own health check, run when `/ready` is asked (Istio's probe-rewrite idea: the kubelet asks
the sidecar, the sidecar asks the app, so one probe covers both). Not on the data path, so plain streams.
"""

from __future__ import annotations

import asyncio


async def probe(host: str, port: int, path: str, limit: float) -> tuple[bool, str]:
    """GET `path` from the app; 2xx or 3xx means ready."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
    except TimeoutError:
        return False, f"no answer from {host}:{port} within {limit:g}s"
    except OSError as exc:
        return False, f"cannot reach {host}:{port}: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, "malformed answer from app"
    status = int(parts[1])
    return (200 <= status < 400), f"app answered {status}"
