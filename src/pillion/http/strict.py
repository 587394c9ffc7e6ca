"""The request rules Pillion enforces on top of llhttp's strict mode (RFC 9112, RFC 9110).

llhttp (inside httptools) already refuses most framing ambiguities: Content-Length with
Transfer-Encoding, bad or duplicate Content-Length, a final coding other than chunked, bad chunk sizes,
bare LF or CR line ends, obs-fold, whitespace before the colon, control characters in values, bad
tokens in names and methods. What it lets through, and a proxy must not forward, is checked here: the
Host field, the HTTP version, codings before `chunked`, Transfer-Encoding in HTTP/1.0 and the
absolute-form target. Every function here runs on a rare path only (an error, an odd message), never
for the usual request. docs/security.md lists every rule with its RFC section.
"""

from __future__ import annotations

from httptools import HttpParserError, HttpParserInvalidMethodError, HttpParserInvalidURLError

# What RFC 3986 allows in `host[:port]` (reg-name, IPv4, IP-literal, port); structure is left to the
# app, but a space, slash, `@`, quote or control character means the field is not a host at all.
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"

# llhttp's messages, by the word that tells which rule broke, mapped to Pillion's reasons.
_PARSER_REASONS: tuple[tuple[str, str], ...] = (
    ("can't be present with", "invalid_framing"),
    ("transfer-encoding", "invalid_transfer_encoding"),
    ("content-length", "invalid_content_length"),
    ("chunk", "invalid_chunk"),
    ("header", "invalid_header"),
    ("version", "invalid_request_line"),
    ("http/", "invalid_request_line"),
)


def parser_error_reason(exc: HttpParserError) -> str:
    """The local-reply reason for a message llhttp refused."""
    if isinstance(exc, HttpParserInvalidMethodError):
        return "invalid_method"
    if isinstance(exc, HttpParserInvalidURLError):
        return "invalid_uri"
    text = str(exc).lower()
    for word, reason in _PARSER_REASONS:
        if word in text:
            return reason
    return "malformed_request"


def host_is_valid(value: bytes) -> bool:
    """A non-empty `host[:port]` of allowed characters whose port, if any, is digits (an empty host
    is never valid in an `http` URI: RFC 9110 §4.2.1)."""
    if not value or value.translate(None, _HOST_CHARS):
        return False
    colon = value.rfind(b":")
    if colon < 0 or value.rfind(b"]") > colon:
        return True
    return value[colon + 1 :].isdigit() or colon == len(value) - 1


def transfer_coding_problem(value: bytes) -> str | None:
    """None when a Transfer-Encoding value is exactly `chunked` (any case, optional whitespace);
    else the reason to refuse it: a coding Pillion cannot decode before `chunked` is 501 (RFC 9112
    §6.1), and `chunked` missing from the end or applied twice is a framing error (§6.3)."""
    codings = [c.strip().lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return None
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        return "invalid_transfer_encoding"
    return "unsupported_transfer_coding"


def origin_form(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, origin-form target) for an absolute-form request target (RFC 9112 §3.2.2), which a
    proxy must route by its authority instead of the Host field; None when the target is not a valid
    `http` or `https` URI with a host and no userinfo."""
    low = target[:8].lower()
    if low.startswith(b"http://"):
        rest = target[7:]
    elif low.startswith(b"https://"):
        rest = target[8:]
    else:
        return None
    end = len(rest)
    for stop in (b"/", b"?"):
        i = rest.find(stop)
        if 0 <= i < end:
            end = i
    authority, path = rest[:end], rest[end:]
    if not authority or b"@" in authority or not host_is_valid(authority):
        return None
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path
