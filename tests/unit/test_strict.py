"""The request rules llhttp leaves to Pillion (pillion.http.strict)."""

from __future__ import annotations

import httptools
import pytest

from pillion.http.local_reply import REASONS
from pillion.http.strict import host_is_valid, origin_form, parser_error_reason, transfer_coding_problem


@pytest.mark.parametrize(
    "value",
    [b"a", b"example.com", b"example.com:8080", b"10.0.0.1:80", b"[::1]", b"[::1]:8080", b"x:", b"a-b_c~d"],
)
def test_valid_hosts(value: bytes) -> None:
    assert host_is_valid(value)


@pytest.mark.parametrize(
    "value",
    [b"", b"a b", b"a/b", b"u@a", b"a?b", b"a#b", b"a\\b", b"a\x00", b"caf\xe9", b"x:8o", b"x:-1", b'"a"'],
)
def test_invalid_hosts(value: bytes) -> None:
    assert not host_is_valid(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"chunked", None),
        (b"Chunked ", None),
        (b"gzip, chunked", "unsupported_transfer_coding"),
        (b"chunked, gzip", "invalid_transfer_encoding"),
        (b"chunked, chunked", "invalid_transfer_encoding"),
        (b"gzip", "invalid_transfer_encoding"),
        (b"", "invalid_transfer_encoding"),
    ],
)
def test_transfer_codings(value: bytes, problem: str | None) -> None:
    assert transfer_coding_problem(value) == problem


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        (b"http://a.example/x?y", (b"a.example", b"/x?y")),
        (b"HTTPS://a.example:8443", (b"a.example:8443", b"/")),
        (b"http://a.example?q", (b"a.example", b"/?q")),
        (b"http://user@a.example/", None),
        (b"http:///x", None),
        (b"ftp://a/x", None),
        (b"a.example:443", None),
    ],
)
def test_origin_form(target: bytes, parts: tuple[bytes, bytes] | None) -> None:
    assert origin_form(target) == parts


class _Sink:
    pass


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "invalid_framing"),
        (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", "invalid_content_length"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "invalid_transfer_encoding"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid_chunk"),
        (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", "invalid_header"),
        (b"G(T / HTTP/1.1\r\n\r\n", "invalid_method"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", "invalid_uri"),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "invalid_request_line"),
    ],
)
def test_parser_errors_are_named(data: bytes, reason: str) -> None:
    parser = httptools.HttpRequestParser(_Sink())
    with pytest.raises(httptools.HttpParserError) as caught:
        parser.feed_data(data)
    assert parser_error_reason(caught.value) == reason
    assert REASONS[reason] == 400
