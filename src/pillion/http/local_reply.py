"""Responses Pillion writes itself instead of the upstream: errors, with the reason in a header.

Every local reply carries `x-pillion-error: <reason>` so a client (or an operator reading curl output)
can tell a sidecar decision from an app's answer, plus a one-line text body. Replies are pure bytes built
from (status, reason, close) and cached: the set of combinations is small and fixed.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from typing import Final

# The reasons Pillion gives, each with its status. One table, so docs and tests can enumerate them.
REASONS: Final[dict[str, int]] = {
    # The request breaks HTTP/1.1's rules (docs/security.md): answered, then the connection closes.
    "malformed_request": 400,
    "invalid_framing": 400,
    "invalid_content_length": 400,
    "invalid_transfer_encoding": 400,
    "invalid_chunk": 400,
    "invalid_header": 400,
    "invalid_method": 400,
    "invalid_uri": 400,
    "invalid_request_line": 400,
    "missing_host": 400,
    "duplicate_host": 400,
    "invalid_host": 400,
    "unsupported_transfer_coding": 501,
    "http_version_not_supported": 505,
    "request_timeout": 408,
    "no_route": 404,
    "forbidden": 403,
    "forbidden_by_default": 403,
    "request_body_too_large": 413,
    "uri_too_long": 414,
    "request_headers_too_large": 431,
    "upgrade_not_supported": 501,
    "upstream_connect_failure": 502,
    "upstream_reset": 502,
    "upstream_protocol_error": 502,
    "upstream_tls_failure": 502,
    "no_endpoint": 503,
    "no_healthy_endpoint": 503,
    "overflow": 503,
    "draining": 503,
    "overloaded": 503,
    "rate_limited": 429,
    "upstream_connect_timeout": 504,
    "upstream_timeout": 504,
}


# Envoy-style response flags for the access log, per reason (reasons not listed have none).
FLAGS: Final[dict[str, str]] = {
    "no_route": "NR",
    "upstream_connect_failure": "UF",
    "upstream_connect_timeout": "UF",
    "upstream_tls_failure": "UF",
    "upstream_reset": "UR",
    "upstream_protocol_error": "UPE",
    "no_endpoint": "UH",
    "no_healthy_endpoint": "UH",
    "overflow": "UO",
    "upstream_timeout": "UT",
    "rate_limited": "RL",
    "fault_injected": "FI",
    "client_disconnected": "DC",
    "overloaded": "OM",
    "forbidden": "RBAC",
    "forbidden_by_default": "RBAC",
}
# Every request refused for breaking HTTP/1.1's rules is a downstream protocol error.
_PROTOCOL_ERRORS: Final = ("unsupported_transfer_coding", "http_version_not_supported")
FLAGS.update((r, "DPE") for r, status in REASONS.items() if status == 400 or r in _PROTOCOL_ERRORS)


@lru_cache(maxsize=64)
def local_reply(reason: str, *, close: bool, head_only: bool = False) -> bytes:
    """The full response bytes for a local reply with this reason."""
    return build_reply(REASONS[reason], reason, close=close, head_only=head_only)


def build_reply(
    status: int,
    reason: str | None,
    *,
    close: bool,
    head_only: bool = False,
    extra: bytes = b"",
    body: bytes | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """A complete response: `x-pillion-error: reason` when `reason` is given (an error decided here),
    `extra` header lines (each ending in CRLF), and `body` (else a one-line text naming the reason)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    if body is None:
        body = f"{status} {phrase}: {reason}\n".encode() if reason else b""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        + (f"x-pillion-error: {reason}\r\n" if reason else "")
        + f"{'connection: close' if close else 'connection: keep-alive'}\r\n"
    ).encode()
    head += extra + b"\r\n"
    return head if head_only else head + body


def status_of(reason: str) -> int:
    return REASONS[reason]
