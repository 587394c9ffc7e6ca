"""Responses Pillion writes itself instead of the upstream: errors, with the reason in a header.

Every local reply carries `x-pillion-error: <reason>` so a client (or an operator reading curl output)
can tell a sidecar decision from an app's answer, plus a one-line text body. Replies are pure bytes built
from (status, reason, close) and cached: the set of combinations is small and fixed.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus

# The reasons Pillion gives, each with its status. One table, so docs and tests can enumerate them.
REASONS: dict[str, int] = {
    "malformed_request": 400,
    "no_route": 404,
    "request_body_too_large": 413,
    "uri_too_long": 414,
    "request_headers_too_large": 431,
    "upgrade_not_supported": 501,
    "upstream_connect_failure": 502,
    "upstream_reset": 502,
    "upstream_protocol_error": 502,
    "no_endpoint": 503,
    "draining": 503,
    "upstream_connect_timeout": 504,
    "upstream_timeout": 504,
}


@lru_cache(maxsize=64)
def local_reply(reason: str, *, close: bool, head_only: bool = False) -> bytes:
    """The full response bytes for a local reply with this reason."""
    status = REASONS[reason]
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}: {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-pillion-error: {reason}\r\n"
        f"{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def status_of(reason: str) -> int:
    return REASONS[reason]
