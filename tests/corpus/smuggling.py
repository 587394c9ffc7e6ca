"""Ambiguous and malicious HTTP/1.1 requests, as data: the regression corpus for Pillion's strict parsing.

Each `Case` is one request (raw bytes, exactly as a client would send them), the statuses Pillion may
answer it with, and the rule it breaks (RFC 9112 / RFC 9110 section). Every case must be refused: a
proxy that forwards any of them lets two parsers disagree about where a message ends, which is how
requests are smuggled. The cases were written by hand from the rules in docs/security.md, grouped by
rule, with systematic variants of each bad field. tests/integration/test_smuggling_corpus.py sends every
one with a valid request pipelined behind it and checks that neither reaches the upstream.

Conventions: a request that needs a Host has `Host: x` first, so the case varies only what it is about;
bodies are short and complete, so the parser meets the fault without waiting for more bytes. Limit
cases assume the listener's default limits plus `max_request_body_size: 1MiB`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Case:
    name: str  # unique, short: shown when the case fails
    raw: bytes
    statuses: frozenset[int]  # any of these is a correct answer
    rfc: str  # where the rule is
    rule: str  # the group, for counting and reading


BAD = frozenset({400})
# Refusing a transfer coding may be either: 400 (framing cannot be determined, RFC 9112 §6.3) or
# 501 (coding not understood, RFC 9112 §6.1); both close the connection.
BAD_CODING = frozenset({400, 501})
UNSUPPORTED_CODING = frozenset({501})
BAD_VERSION = frozenset({400, 505})
HEADERS_TOO_LARGE = frozenset({431})
URI_TOO_LONG = frozenset({414})
BODY_TOO_LARGE = frozenset({413})

BODY_LIMIT = 1024 * 1024  # the max_request_body_size the integration test configures
CHUNKED_BODY = b"3\r\nabc\r\n0\r\n\r\n"


def request(*fields: bytes, line: bytes = b"POST / HTTP/1.1", body: bytes = b"", host: bool = True) -> bytes:
    """A request head (CRLF line ends) and body; `Host: x` first unless `host` is False."""
    lines = [line, *([b"Host: x"] if host else []), *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, *fields: bytes) -> bytes:
    """A POST declaring `Transfer-Encoding: chunked`, followed by `body` as given."""
    return request(b"Transfer-Encoding: chunked", *fields, body=body)


def _content_length() -> Iterator[Case]:
    rule, rfc = "content-length", "RFC 9110 §8.6"
    values = {  # Content-Length = 1*DIGIT: anything else is invalid (RFC 9112 §6.3 item 5)
        "plus": b"+3",
        "minus": b"-3",
        "minus-zero": b"-0",
        "hex": b"0x3",
        "list-same": b"3,3",
        "list-different": b"3, 4",
        "space-separated": b"3 3",
        "empty": b"",
        "decimal": b"3.0",
        "exponent": b"1e2",
        "word": b"three",
        "trailing-letter": b"3a",
        "underscore": b"0_3",  # Python's int() would take it
        "non-ascii-digit": "\u0663".encode(),  # ARABIC-INDIC DIGIT THREE
        "nul": b"3\x00",
        "inner-tab": b"3\t3",
        "overflow": b"99999999999999999999999",
        "overflow-u64-wrap": b"18446744073709551619",  # 2**64 + 3: wraps to 3 in 64-bit arithmetic
    }
    for name, value in values.items():
        yield Case(f"cl-{name}", request(b"Content-Length: " + value, body=b"abc"), BAD, rfc, rule)
    # More than one Content-Length line, equal or not: refused, not merged.
    twice = {
        "cl-twice-same": (b"Content-Length: 3", b"Content-Length: 3"),
        "cl-twice-different": (b"Content-Length: 3", b"Content-Length: 4"),
        "cl-twice-zero-first": (b"Content-Length: 0", b"Content-Length: 3"),
        "cl-twice-case": (b"Content-Length: 3", b"content-length: 3"),
    }
    for name, fields in twice.items():
        yield Case(name, request(*fields, body=b"abcd"), BAD, rfc, rule)

    # Content-Length together with Transfer-Encoding, in every spelling and order (RFC 9112 §6.1, §6.3).
    rule, rfc = "content-length+transfer-encoding", "RFC 9112 §6.3"
    spellings = {
        "chunked": b"Transfer-Encoding: chunked",
        "chunked-capital": b"Transfer-Encoding: Chunked",
        "chunked-upper": b"Transfer-Encoding: CHUNKED",
        "chunked-ows": b"Transfer-Encoding: \t chunked \t",
        "name-lower": b"transfer-encoding: chunked",
        "name-upper": b"TRANSFER-ENCODING: chunked",
        "gzip-chunked": b"Transfer-Encoding: gzip, chunked",
        "identity": b"Transfer-Encoding: identity",
        "gzip": b"Transfer-Encoding: gzip",
    }
    for name, te in spellings.items():
        statuses = BAD_CODING if b"gzip" in te or b"identity" in te else BAD
        yield Case(f"cl-te-{name}", request(b"Content-Length: 5", te, body=CHUNKED_BODY), statuses, rfc, rule)
    yield Case(
        "te-cl-chunked",
        request(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=CHUNKED_BODY),
        BAD,
        rfc,
        rule,
    )
    yield Case(
        "te-cl-zero",
        request(b"Transfer-Encoding: chunked", b"Content-Length: 0", body=CHUNKED_BODY),
        BAD,
        rfc,
        rule,
    )
    yield Case(
        "cl-te-http10",
        request(
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            line=b"POST / HTTP/1.0",
            host=False,
            body=CHUNKED_BODY,
        ),
        BAD,
        "RFC 9112 §6.1",
        rule,
    )


def _transfer_encoding() -> Iterator[Case]:
    rule, rfc = "transfer-encoding", "RFC 9112 §6.1"
    # In a request, chunked must be the final coding and appear once; anything else leaves the length
    # unknown (RFC 9112 §6.3 item 4) or names a coding Pillion does not decode.
    values = {
        "gzip": b"gzip",
        "identity": b"identity",
        "chunked-gzip": b"chunked, gzip",
        "xchunked": b"xchunked",
        "chunkedx": b"chunkedx",
        "chunk": b"chunk",
        "quoted": b'"chunked"',
        "chunked-param": b"chunked;q=1",
        "chunked-twice-list": b"chunked, chunked",
        "empty": b"",
        "comma": b",",
        "vt-before": b"\x0bchunked",
        "vt-after": b"chunked\x0b",
    }
    for name, value in values.items():
        yield Case(f"te-{name}", chunked_with(value), BAD_CODING, rfc, rule)
    yield Case("te-nul", chunked_with(b"chunked\x00"), BAD, "RFC 9110 §5.5", rule)
    # An unknown coding before a final chunked: the framing is known, the coding is not (501).
    yield Case("te-gzip-chunked", chunked_with(b"gzip, chunked"), UNSUPPORTED_CODING, rfc, rule)
    twice = {
        "te-twice-chunked": (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        "te-twice-gzip-chunked": (b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
        "te-twice-chunked-gzip": (b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"),
        "te-twice-chunked-identity": (b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"),
    }
    for name, fields in twice.items():
        yield Case(name, request(*fields, body=CHUNKED_BODY), BAD_CODING, rfc, rule)
    # Transfer-Encoding in HTTP/1.0: the framing is faulty whatever it says.
    yield Case(
        "te-http10",
        request(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0", host=False, body=CHUNKED_BODY),
        BAD,
        rfc,
        rule,
    )
    yield Case(
        "te-http10-with-host",
        request(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0", body=CHUNKED_BODY),
        BAD,
        rfc,
        rule,
    )


def chunked_with(value: bytes) -> bytes:
    """A POST whose only framing field is `Transfer-Encoding: <value>`, with a chunked body."""
    return request(b"Transfer-Encoding: " + value, body=CHUNKED_BODY)


def _chunks() -> Iterator[Case]:
    rule, rfc = "chunked-body", "RFC 9112 §7.1"
    bodies = {
        # chunk-size = 1*HEXDIG, nothing else, and small enough to count.
        "size-non-hex": b"g\r\nabc\r\n0\r\n\r\n",
        "size-0x": b"0x3\r\nabc\r\n0\r\n\r\n",
        "size-negative": b"-3\r\nabc\r\n0\r\n\r\n",
        "size-plus": b"+3\r\nabc\r\n0\r\n\r\n",
        "size-leading-space": b" 3\r\nabc\r\n0\r\n\r\n",
        "size-trailing-space": b"3 \r\nabc\r\n0\r\n\r\n",
        "size-inner-space": b"1 0\r\nabcdefghijklmnop\r\n0\r\n\r\n",
        "size-leading-tab": b"\t3\r\nabc\r\n0\r\n\r\n",
        "size-empty": b"\r\nabc\r\n0\r\n\r\n",
        "size-nul": b"3\x00\r\nabc\r\n0\r\n\r\n",
        "size-overflow": b"ffffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "size-u64-wrap": b"10000000000000003\r\nabc\r\n0\r\n\r\n",  # 2**64 + 3
        # Every chunk's data is followed by exactly CRLF.
        "data-longer": b"3\r\nabcd\r\n0\r\n\r\n",
        "data-shorter": b"5\r\nabc\r\n0\r\n\r\n",
        "data-no-crlf": b"3\r\nabc0\r\n\r\n",
        "data-junk-before-crlf": b"3\r\nabcXX\r\n0\r\n\r\n",
        # Line ends inside the chunked coding: CRLF only.
        "bare-lf-after-size": b"3\nabc\r\n0\r\n\r\n",
        "bare-lf-after-data": b"3\r\nabc\n0\r\n\r\n",
        "bare-lf-after-last": b"3\r\nabc\r\n0\n\r\n",
        "bare-lf-final": b"3\r\nabc\r\n0\r\n\n",
        "bare-cr-after-size": b"3\rabc\r\n0\r\n\r\n",
        "bare-cr-after-data": b"3\r\nabc\r0\r\n\r\n",
        # chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
        "ext-empty-name": b"3;\r\nabc\r\n0\r\n\r\n",
        "ext-space-in-name": b"3;a b\r\nabc\r\n0\r\n\r\n",
        "ext-ctl": b"3;a=\x01\r\nabc\r\n0\r\n\r\n",
        "ext-nul": b"3;a=b\x00\r\nabc\r\n0\r\n\r\n",
        "ext-unterminated-quote": b'3;a="b\r\nabc\r\n0\r\n\r\n',
        "ext-bare-lf": b"3;a=b\nabc\r\n0\r\n\r\n",
        # Trailer fields follow the field syntax.
        "trailer-obs-fold": b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n",
        "trailer-bare-lf": b"3\r\nabc\r\n0\r\nX-T: a\n\r\n",
        "trailer-bad-name": b"3\r\nabc\r\n0\r\nX(T: a\r\n\r\n",
        "trailer-space-before-colon": b"3\r\nabc\r\n0\r\nX-T : a\r\n\r\n",
        "trailer-nul": b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n",
        "trailer-no-colon": b"3\r\nabc\r\n0\r\nX-T\r\n\r\n",
    }
    for name, body in bodies.items():
        section = {"ext": "RFC 9112 §7.1.1", "trailer": "RFC 9112 §7.1.2"}.get(name.split("-")[0], rfc)
        yield Case(f"chunk-{name}", chunked(body), BAD, section, rule)


def _line_ends() -> Iterator[Case]:
    rule, rfc = "line-terminator", "RFC 9112 §2.2"
    # A bare LF or a bare CR is no line end: a lenient parser and a strict one would split differently.
    raws = {
        "bare-lf-request-line": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        "bare-lf-field-line": b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        "bare-lf-end-of-head": b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: x\n\n",
        "lf-cr": b"GET / HTTP/1.1\n\rHost: x\r\n\r\n",
        "bare-cr-request-line": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        "bare-cr-field-line": b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
        "bare-cr-end-of-head": b"GET / HTTP/1.1\r\nHost: x\r\n\r",
        "cr-cr-lf": b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n",
        # The classic shapes: the framing field is hidden behind a line end only one parser sees.
        "bare-lf-hides-te": request(b"X-A: b\nTransfer-Encoding: chunked", body=CHUNKED_BODY),
        "bare-cr-hides-te": request(b"X-A: b\rTransfer-Encoding: chunked", body=CHUNKED_BODY),
        "bare-lf-hides-cl": request(b"Content-Length: 0\nContent-Length: 3", body=b"abc"),
    }
    for name, raw in raws.items():
        yield Case(f"eol-{name}", raw, BAD, rfc, rule)


def _obs_fold() -> Iterator[Case]:
    rule, rfc = "obs-fold", "RFC 9112 §5.2"
    raws = {
        "space": request(b"X-A: a", b" b", line=b"GET / HTTP/1.1"),
        "tab": request(b"X-A: a", b"\tb", line=b"GET / HTTP/1.1"),
        "empty-value": request(b"X-A:", b"\tb", line=b"GET / HTTP/1.1"),
        "host": request(b"Host: x", b" y", line=b"GET / HTTP/1.1", host=False),
        "transfer-encoding": request(b"Transfer-Encoding:", b" chunked", body=CHUNKED_BODY),
        "transfer-encoding-list": request(b"Transfer-Encoding: chunked", b" , identity", body=CHUNKED_BODY),
        "content-length": request(b"Content-Length:", b" 3", body=b"abc"),
    }
    for name, raw in raws.items():
        yield Case(f"fold-{name}", raw, BAD, rfc, rule)
    # Whitespace before the first field line: reject, or ignore the line (then Host is missing).
    for name, lead in (("space", b" "), ("tab", b"\t")):
        yield Case(
            f"fold-first-line-{name}",
            b"GET / HTTP/1.1\r\n" + lead + b"Host: x\r\n\r\n",
            BAD,
            "RFC 9112 §2.2",
            rule,
        )


def _space_before_colon() -> Iterator[Case]:
    rule, rfc = "whitespace-before-colon", "RFC 9112 §5.1"
    raws = {
        "host-space": request(b"Host : x", line=b"GET / HTTP/1.1", host=False),
        "host-tab": request(b"Host\t: x", line=b"GET / HTTP/1.1", host=False),
        "content-length": request(b"Content-Length : 3", body=b"abc"),
        "transfer-encoding-space": request(b"Transfer-Encoding : chunked", body=CHUNKED_BODY),
        "transfer-encoding-tab": request(b"Transfer-Encoding\t: chunked", body=CHUNKED_BODY),
        "other": request(b"X-A : b", line=b"GET / HTTP/1.1"),
    }
    for name, raw in raws.items():
        yield Case(f"ws-colon-{name}", raw, BAD, rfc, rule)


def _field_values() -> Iterator[Case]:
    rule, rfc = "field-value", "RFC 9110 §5.5"
    # CR, LF and NUL are never allowed in a value; nor are the other controls and DEL (field-vchar).
    chars = {
        "cr": b"\r",
        "nul": b"\x00",
        "soh": b"\x01",
        "bs": b"\x08",
        "vt": b"\x0b",
        "ff": b"\x0c",
        "esc": b"\x1b",
        "us": b"\x1f",
        "del": b"\x7f",
    }
    for name, char in chars.items():
        yield Case(f"value-{name}", request(b"X-A: a" + char + b"b", line=b"GET / HTTP/1.1"), BAD, rfc, rule)
    yield Case("value-nul-first", request(b"X-A: \x00", line=b"GET / HTTP/1.1"), BAD, rfc, rule)
    yield Case(
        "value-nul-in-host", request(b"Host: x\x00", line=b"GET / HTTP/1.1", host=False), BAD, rfc, rule
    )


def _field_names() -> Iterator[Case]:
    rule, rfc = "field-name", "RFC 9110 §5.1"
    # field-name = token: tchar only, at least one.
    names = {
        "paren": b"X(A",
        "close-paren": b"X)A",
        "slash": b"X/A",
        "at": b"X@A",
        "bracket": b"X[A",
        "brace": b"X{A",
        "quote": b'X"A',
        "comma": b"X,A",
        "semicolon": b"X;A",
        "equals": b"X=A",
        "question": b"X?A",
        "backslash": b"X\\A",
        "angle": b"X<A",
        "space": b"X A",
        "empty": b"",
        "non-ascii": b"X-\xc3\xa9",
        "nul": b"X\x00A",
        "del": b"X\x7fA",
    }
    for name, field_name in names.items():
        yield Case(f"name-{name}", request(field_name + b": b", line=b"GET / HTTP/1.1"), BAD, rfc, rule)
    yield Case("name-no-colon", request(b"X-A b", line=b"GET / HTTP/1.1"), BAD, "RFC 9112 §5", rule)
    yield Case("name-only", request(b"X-A", line=b"GET / HTTP/1.1"), BAD, "RFC 9112 §5", rule)


def _methods() -> Iterator[Case]:
    rule, rfc = "method", "RFC 9110 §9.1"
    # method = token, then exactly one SP.
    lines = {
        "paren": b"G(T / HTTP/1.1",
        "slash": b"GE/T / HTTP/1.1",
        "at": b"G@T / HTTP/1.1",
        "bracket": b"G[T / HTTP/1.1",
        "colon": b"G:T / HTTP/1.1",
        "comma": b"G,T / HTTP/1.1",
        "nul": b"G\x00T / HTTP/1.1",
        "del": b"G\x7fT / HTTP/1.1",
        "ctl": b"GET\x01 / HTTP/1.1",
        "non-ascii": b"G\xc3\x89T / HTTP/1.1",
        "empty": b" / HTTP/1.1",
        "leading-space": b" GET / HTTP/1.1",
        "tab-separator": b"GET\t/ HTTP/1.1",
        # (Two spaces between the parts are not here: RFC 9112 §3 lets a recipient split the line on
        # whitespace, llhttp does, and the line is re-written with single spaces: a control.)
    }
    for name, line in lines.items():
        section = rfc if name not in {"tab-separator", "leading-space"} else "RFC 9112 §3"
        yield Case(f"method-{name}", request(line=line), BAD, section, rule)


def _host() -> Iterator[Case]:
    rule, rfc = "host", "RFC 9112 §3.2"
    get = b"GET / HTTP/1.1"
    raws = {
        "missing": request(line=get, host=False),
        "missing-post": request(b"Content-Length: 3", host=False, body=b"abc"),
        "twice-same": request(b"Host: x", b"Host: x", line=get, host=False),
        "twice-different": request(b"Host: x", b"Host: y", line=get, host=False),
        "twice-case": request(b"Host: x", b"HOST: y", line=get, host=False),
        "twice-http10": request(b"Host: x", b"Host: y", line=b"GET / HTTP/1.0", host=False),
        # Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2).
        "space": request(b"Host: a b", line=get, host=False),
        "list": request(b"Host: a, b", line=get, host=False),
        "slash": request(b"Host: a/b", line=get, host=False),
        "at": request(b"Host: u@a", line=get, host=False),
        "question": request(b"Host: a?b", line=get, host=False),
        "hash": request(b"Host: a#b", line=get, host=False),
        "backslash": request(b"Host: a\\b", line=get, host=False),
        "non-ascii": request(b"Host: \xc3\xa9x", line=get, host=False),
        "port-not-digits": request(b"Host: x:8o", line=get, host=False),
    }
    for name, raw in raws.items():
        section = "RFC 9110 §7.2" if name in {"slash", "at", "question", "hash", "backslash"} else rfc
        yield Case(f"host-{name}", raw, BAD, section, rule)


def _request_target() -> Iterator[Case]:
    rule, rfc = "request-target", "RFC 9112 §3.2"
    lines = {
        "space": b"GET /a b HTTP/1.1",
        "nul": b"GET /a\x00b HTTP/1.1",
        "ctl": b"GET /a\x01b HTTP/1.1",
        "esc": b"GET /a\x1bb HTTP/1.1",
        "del": b"GET /a\x7fb HTTP/1.1",
        "tab": b"GET /a\tb HTTP/1.1",
        "fragment": b"GET /a#b HTTP/1.1",  # origin-form = absolute-path [ "?" query ]
        "relative": b"GET a HTTP/1.1",
        "query-only": b"GET ?a HTTP/1.1",
        "asterisk-get": b"GET * HTTP/1.1",  # asterisk-form is for OPTIONS only (§3.2.4)
        "absolute-empty-authority": b"GET http:///a HTTP/1.1",
        "absolute-userinfo": b"GET http://u@x/ HTTP/1.1",  # RFC 9110 §4.2.4
    }
    for name, line in lines.items():
        yield Case(f"target-{name}", request(line=line), BAD, rfc, rule)


def _version() -> Iterator[Case]:
    rule, rfc = "request-line", "RFC 9112 §2.3"
    # HTTP/0.9's one-line request has no version and no fields: it cannot be framed.
    yield Case("version-http09-line", b"GET /\r\n", BAD_VERSION, "RFC 9112 §2.3", rule)
    # Well-formed versions Pillion does not speak: 505 is as correct as 400.
    for name, version in (
        ("http09", b"HTTP/0.9"),
        ("http12", b"HTTP/1.2"),
        ("http20", b"HTTP/2.0"),
        ("http30", b"HTTP/3.0"),
    ):
        yield Case(f"version-{name}", request(line=b"GET / " + version), BAD_VERSION, "RFC 9110 §2.5", rule)
    # HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive, then CRLF.
    malformed = {
        "trailing-space": b"HTTP/1.1 ",
        "trailing-junk": b"HTTP/1.1 x",
        "lowercase": b"http/1.1",
        "https": b"HTTPS/1.1",
        "space-in-name": b"HTTP /1.1",
        "no-minor": b"HTTP/1",
        "two-digit-minor": b"HTTP/1.10",
        "two-digit-major": b"HTTP/11.1",
        "letters": b"HTTP/a.b",
        "nul": b"HTTP/1.1\x00",
    }
    for name, version in malformed.items():
        yield Case(f"version-{name}", request(line=b"GET / " + version), BAD_VERSION, rfc, rule)
    yield Case("version-missing", request(line=b"GET /"), BAD_VERSION, "RFC 9112 §3", rule)
    yield Case("version-missing-space", request(line=b"GET / "), BAD_VERSION, "RFC 9112 §3", rule)


def _limits() -> Iterator[Case]:
    rule = "limits"
    get = b"GET / HTTP/1.1"
    yield Case(
        "limit-field-61k",
        request(b"X-Big: " + b"a" * (61 * 1024), line=get),
        HEADERS_TOO_LARGE,
        "RFC 6585 §5",
        rule,
    )
    yield Case(
        "limit-head-61k-many-fields",
        request(*(b"X-F%02d: %b" % (i, b"a" * 1000) for i in range(62)), line=get),
        HEADERS_TOO_LARGE,
        "RFC 6585 §5",
        rule,
    )
    for count in (101, 150):
        yield Case(
            f"limit-fields-{count}",
            request(*(b"X-F%03d: v" % i for i in range(count)), line=get),
            HEADERS_TOO_LARGE,
            "RFC 6585 §5",
            rule,
        )
    yield Case(
        "limit-uri-17k-path",
        request(line=b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1"),
        URI_TOO_LONG,
        "RFC 9110 §15.5.15",
        rule,
    )
    yield Case(
        "limit-uri-17k-query",
        request(line=b"GET /?q=" + b"a" * (17 * 1024) + b" HTTP/1.1"),
        URI_TOO_LONG,
        "RFC 9110 §15.5.15",
        rule,
    )
    for name, length in (("by-one", BODY_LIMIT + 1), ("2g", 2**31), ("huge", 10**15)):
        yield Case(
            f"limit-body-{name}",
            request(b"Content-Length: %d" % length, body=b"abc"),
            BODY_TOO_LARGE,
            "RFC 9110 §15.5.14",
            rule,
        )


def _all() -> tuple[Case, ...]:
    return (
        *_content_length(),
        *_transfer_encoding(),
        *_chunks(),
        *_line_ends(),
        *_obs_fold(),
        *_space_before_colon(),
        *_field_values(),
        *_field_names(),
        *_methods(),
        *_host(),
        *_request_target(),
        *_version(),
        *_limits(),
    )


CASES: tuple[Case, ...] = _all()
