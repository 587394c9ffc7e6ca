"""Reference readings of HTTP/1.1 byte streams, for differential tests and fuzzers.

`h11_requests(data)` reads a client's byte stream the way a strict server does: h11 (a pure-Python
parser that follows RFC 9112 to the letter) parses it as a server, answering each complete request so
the next pipelined one can be read, and stops at the first error or where the connection must close.
What it returns is the reference the proxy is compared to: the requests up to that point, in order,
with their bodies, and h11's complaint if one stopped it.

`origin_form_of(target)` is the target a proxy forwards for an absolute-form one.

`split_responses(data, methods)` cuts a proxy's output into responses by their own framing
(content-length, chunked, or close-delimited; no body for HEAD, 1xx, 204 and 304), checking each with
httptools and the chunk syntax strictly, since these are messages the proxy wrote itself. It needs the
request methods in order, as only they tell whether a response has a body.

Imports h11, a development dependency: only tests and fuzzers use this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11
import h11._readers as h11_readers
import httptools

# A head as large as the proxy could ever accept: h11's own 16 KiB default would make it reject
# heads the proxy is right to accept.
MAX_HEAD = 1024 * 1024

# h11 caps a chunk size at 20 hex digits, leading zeros included: an implementation limit, not RFC 9112's
# `1*HEXDIG`. Zeros in front change no size, llhttp accepts them and the proxy re-chunks, so the
# reference reads them too (the 20-digit cap on the value itself stays).
h11_readers.chunk_header_re = re.compile(
    h11_readers.chunk_header_re.pattern.replace(b"(?P<chunk_size>", b"0*(?P<chunk_size>", 1)
)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SPACES = re.compile(rb"(?<=[^ ])  +(?=[^ ])")


@dataclass
class RefRequest:
    """One request as h11 read it. `complete` once its body ended; `body` so far otherwise."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    version: bytes
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


@dataclass
class RefParse:
    requests: list[RefRequest]
    error: str | None  # h11's complaint about the byte after the last request, if any
    closes: bool  # the last request ends the connection (HTTP/1.0 without keep-alive, `connection: close`)


def h11_requests(data: bytes) -> RefParse:
    """The requests a strict server reads from `data` (no EOF: the client is still connected)."""
    conn = _reader(data)
    requests: list[RefRequest] = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return RefParse(requests, str(exc) or type(exc).__name__, False)
        if isinstance(event, h11.Request):
            requests.append(
                RefRequest(event.method, event.target, list(event.headers.raw_items()), event.http_version)
            )
        elif isinstance(event, h11.Data):
            requests[-1].body += event.data
        elif isinstance(event, h11.EndOfMessage):
            requests[-1].complete = True
            # Answer it, so h11 moves on to the next request. A 2xx would accept a CONNECT tunnel.
            status = 405 if requests[-1].method == b"CONNECT" else 200
            conn.send(h11.Response(status_code=status, headers=[(b"content-length", b"0")]))
            conn.send(h11.EndOfMessage())
            # h11 closes after every HTTP/1.0 request; RFC 9112 §9.3 lets `connection: keep-alive`
            # keep it open.
            keep = conn.our_state is h11.DONE and conn.their_state is h11.DONE
            if not (keep or _http10_keep_alive(requests[-1])):
                return RefParse(requests, None, True)
            conn = _reader(conn.trailing_data[0])
        else:  # NEED_DATA: the stream ends inside a message or between two
            return RefParse(requests, None, False)


def origin_form_of(target: bytes) -> bytes:
    """The target a proxy forwards for `target`: an absolute-form `http(s)://authority/path?query` becomes
    its origin form `/path?query` (RFC 9112 §3.2.2); anything else is itself. For comparing what a proxy
    forwarded with what h11 read."""
    low = target[:8].lower()
    if not low.startswith((b"http://", b"https://")):
        return target
    rest = target[target.index(b"//") + 2 :]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[cut:]
    return path if path.startswith(b"/") else b"/" + path


def _reader(data: bytes) -> h11.Connection:
    """A fresh h11 server for the next request in `data`, read with two tolerances RFC 9112 allows and
    llhttp has, which h11 lacks. Neither can move a message boundary, and a proxy writes its own request
    line anyway:
      - CR and LF bytes before a request line are skipped (§2.2: a server ignores empty lines there);
      - runs of spaces between request-line words count as one (§3: a recipient MAY split on whitespace).
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    data = data.lstrip(b"\r\n")
    line_end = data.find(b"\n")
    if line_end > 0:
        data = _SPACES.sub(b" ", data[:line_end]) + data[line_end:]
    if data:  # (receive_data(b"") would mean EOF)
        conn.receive_data(data)
    return conn


def _http10_keep_alive(request: RefRequest) -> bool:
    if request.version != b"1.0":
        return False
    tokens: set[bytes] = set()
    for name, value in request.headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return b"keep-alive" in tokens and b"close" not in tokens


@dataclass
class SplitResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    start: int  # offsets into the output
    end: int
    body: bytes
    interim: bool = False  # a 1xx before the final response


@dataclass
class Split:
    responses: list[SplitResponse]
    rest: int  # bytes left over after the last whole response: a response cut short
    close_delimited: bool  # the last response runs to the end of the connection


class BadResponse(Exception):
    """Output that is not a well-formed response where one must start."""


class _Head:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _chunked_end(data: bytes, pos: int) -> int:
    """End offset of a chunked body starting at `pos` as the proxy frames one (no extensions, no
    trailers); -1 if it is cut short; BadResponse if malformed."""
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size_text = data[pos:eol]
        if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
            raise BadResponse(f"bad chunk size line {size_text[:40]!r}")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            if len(data) < pos + 2:
                return -1
            if data[pos : pos + 2] != b"\r\n":
                raise BadResponse("no CRLF after the last chunk (trailers?)")
            return pos + 2
        if len(data) < pos + size + 2:
            return -1
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise BadResponse("chunk data not followed by CRLF")
        pos += size + 2


def split_responses(data: bytes, methods: Sequence[bytes]) -> Split:
    """Cut `data` into responses to requests with these `methods` (in order). Stops at a response that is
    cut short (`rest`); BadResponse when bytes that must start a response do not."""
    responses: list[SplitResponse] = []
    pos = 0
    final = 0  # final responses so far: the index into `methods`
    while pos < len(data):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            if not data.startswith(b"HTTP/1.1 "[: len(data) - pos], pos):
                raise BadResponse(f"not a status line at {pos}: {data[pos : pos + 40]!r}")
            break
        head_end += 4
        seen = _Head()
        parser = httptools.HttpResponseParser(seen)
        try:
            parser.feed_data(data[pos:head_end])
        except httptools.HttpParserError as exc:
            raise BadResponse(f"head at {pos} does not parse: {exc}: {data[pos:head_end][:200]!r}") from None
        if not seen.head_done:
            raise BadResponse(f"head at {pos} not complete: {data[pos:head_end][:200]!r}")
        if not data.startswith(b"HTTP/1.1 ", pos):
            raise BadResponse(f"not HTTP/1.1 at {pos}: {data[pos : pos + 40]!r}")
        status = parser.get_status_code()
        if 100 <= status < 200:
            responses.append(SplitResponse(status, seen.headers, pos, head_end, b"", interim=True))
            pos = head_end
            continue
        if final >= len(methods):
            raise BadResponse(f"response {final + 1} at {pos} to {len(methods)} requests")
        method = methods[final]
        final += 1
        names = [name.lower() for name, _ in seen.headers]
        if names.count(b"content-length") > 1 or names.count(b"transfer-encoding") > 1:
            raise BadResponse(f"response at {pos} has two framing fields of one kind")
        if b"content-length" in names and b"transfer-encoding" in names:
            raise BadResponse(f"response at {pos} has content-length and transfer-encoding")
        close_delimited = False
        if method == b"HEAD" or status in (204, 304):
            end = head_end
        elif b"transfer-encoding" in names:
            te = seen.headers[names.index(b"transfer-encoding")][1]
            if te.lower() != b"chunked":
                raise BadResponse(f"response at {pos} has transfer-encoding {te!r}")
            end = _chunked_end(data, head_end)
            if end < 0:
                break
        elif b"content-length" in names:
            end = head_end + int(seen.headers[names.index(b"content-length")][1])
            if end > len(data):
                break
        else:
            end = len(data)
            close_delimited = True
        if end > head_end:
            try:
                parser.feed_data(data[head_end:end])
            except httptools.HttpParserError as exc:
                raise BadResponse(f"body of the response at {pos} does not parse: {exc}") from None
            if not close_delimited and not seen.complete:
                raise BadResponse(f"httptools does not see the response at {pos} end at {end}")
        responses.append(SplitResponse(status, seen.headers, pos, end, bytes(seen.body)))
        pos = end
        if close_delimited:
            return Split(responses, 0, True)
    return Split(responses, len(data) - pos, False)
