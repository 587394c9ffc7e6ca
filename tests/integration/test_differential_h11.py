"""Differential test: Pillion's reading of request byte streams against h11's, a strict reference.

Hypothesis builds byte streams of 1-4 pipelined requests from a small grammar with deliberate mutations
(odd methods, targets and versions; header names and values with odd bytes; Content-Length duplicated,
signed, listed or wrong; Transfer-Encoding variants; chunked bodies with odd sizes, extensions,
trailers and bare LFs; obs-fold; whitespace before a colon; missing and duplicate Host; Connection
naming framing fields; bodies that carry a whole second request). Each stream is read by h11 as a server
(pillion.testing.reference.h11_requests) and sent in one write, on a fresh connection, through a real
sidecar to a ScriptableUpstream. The property: Pillion either rejects or agrees.

  - Every request the upstream received is one h11 read from the stream, in the same order, with the same
    method and target (absolute-form compared by its path) and, if it arrived whole, the same body; so a
    request Pillion forwarded has the message boundaries and body length h11 gives it.
  - What Pillion wrote upstream is canonical: h11 reads it without complaint, with one Host, at most one
    framing field and no hop-by-hop field.
  - What the client got is a sequence of well-formed responses. A local reply for a framing error
    (x-pillion-error, 400/411/413/414/431/501/505) is the last one, the connection closes after it, and
    no request after it reached the upstream.

Pillion may refuse what h11 accepts (it is stricter: Content-Length with Transfer-Encoding, bare LF, ...);
that is agreement by refusal. Each request's first field is `x-index: <index in the stream>`, never
mutated, so what the upstream got is matched to the request it came from.

One sidecar and upstream serve the whole run, on one loop driven between examples with
run_until_complete; examples are derandomized, so CI runs the same streams every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.runtime.runtime import Runtime
from pillion.runtime.tasks import live_tasks
from pillion.testing.loops import LOOPS
from pillion.testing.reference import (
    BadResponse,
    RefParse,
    RefRequest,
    h11_requests,
    origin_form_of,
    split_responses,
)
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import RecordedRequest, ScriptableUpstream

HOST = "127.0.0.1"
EXAMPLES = 300  # per event loop: ~10 s each
IDLE_READ = 0.15  # how long to read when Pillion may rightly be waiting for more input
DUE_READ = 2.0  # how long to wait for responses that are due
FRAMING_STATUSES = frozenset({400, 411, 413, 414, 431, 501, 505})
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})
CRLF = b"\r\n"
MARKER = b"x-index"  # each request's first field: its index in the stream
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\nx-index: smuggled\r\n\r\n"


def sometimes(p: int = 10) -> st.SearchStrategy[bool]:
    """True about one time in `p`."""
    return st.integers(0, p - 1).map(lambda n: n == 0)


# -- the grammar --------------------------------------------------------------------------------------

METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
ODD_METHODS = st.sampled_from([b"get", b"G ET", b"GET\x00", b"BREW", b"CONNECT", b"", b"POST\t", b"M\xe9"])
PATHS = st.sampled_from([b"/", b"/a", b"/a/b?c=d", b"/%2e%2e/x", b"/q?x=1&y=%20"])
ODD_TARGETS = st.sampled_from(
    [
        b"*",
        b"http://a/abs",
        b"http://a",
        b"a:80",
        b"/sp ace",
        b"/frag#x",
        b"/\x7f",
        b"/\x80",
        b"/tab\t",
        b"",
        b"//double",
        b"/" + b"a" * 300,
    ]
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"])
ODD_VERSIONS = st.sampled_from(
    [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.10", b"HTTP/11", b""]
)
HOSTS = st.sampled_from([b"a", b"a:80", b"example.com", b"[::1]:80"])
ODD_HOSTS = st.sampled_from([b"", b"a b", b"a\x00", b"a:x", b"a/b", b"a@b", b" a"])
NAMES = st.sampled_from([b"x-a", b"User-Agent", b"Accept", b"x-request-id", b"x-forwarded-for", b"Expect"])
ODD_NAMES = st.sampled_from(
    [b"x a", b"x\x00", b"x@", b"", b"x\x7f", b"\xe9", b"x:y", b"Host ", b"Content-Length\t", b"x\r"]
)
VALUES = st.sampled_from([b"1", b"v", b"a, b", b"100-continue", b"t=1; q=2", b"", b" padded "])
ODD_VALUES = st.sampled_from([b"a\x00b", b"a\rb", b"a\x7fb", b"\x80\xff", b"a\x0bb", b"\x01"])
CONNECTION = st.sampled_from(
    [b"keep-alive", b"close", b"content-length", b"transfer-encoding", b"host", b"x-a", b"upgrade", b"te"]
)
TE_VALUES = st.sampled_from(
    [
        b"chunked",
        b"Chunked",
        b"chunked, chunked",
        b"gzip, chunked",
        b"chunked, gzip",
        b"identity",
        b"chunked ",
        b" chunked",
        b"chunked;q=1",
        b"xchunked",
        b"",
    ]
)
BODY_BYTES = st.sampled_from([b"", b"a", b"hello", b"0\r\n\r\n", b"x" * 40, b"\r\n", SMUGGLED])


MUTATIONS = (
    "method",
    "target",
    "version",
    "request line spaces",
    "host",
    "field",
    "connection",
    "length",
    "both lengths",
    "transfer-encoding",
    "chunk",
    "space before colon",
    "obs-fold",
    "line ending",
)


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes, odd: bool) -> bytes:
    """`body` as chunks; with `odd`, spelled oddly somewhere."""
    sizes: list[int] = []
    left = len(body)
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    pieces = []
    pos = 0
    for size in sizes:
        piece = body[pos : pos + size]
        pos += size
        pieces.append([b"%x" % len(piece), CRLF, piece, CRLF])
    last = [b"0", CRLF, b"", CRLF]
    if odd:
        target = draw(st.sampled_from([*pieces, last]))
        where = draw(
            st.sampled_from(
                ["size", "size end", "data end"] if target is not last else ["size", "trailer", "end"]
            )
        )
        if where == "size":
            n = target[0]
            target[0] = draw(
                st.sampled_from(
                    [
                        n.upper(),
                        b"0" + n,
                        b"+" + n,
                        n + b" ",
                        b" " + n,
                        b"0x" + n,
                        n + b";ext",
                        n + b";e=v",
                        n + b';e="q"',
                        n + b"; e=v",
                        b"%x" % (int(n, 16) + 1),
                        b"f" * 17,
                        b"0" * 21 + n,
                    ]
                )
            )
        elif where == "size end":
            target[1] = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n"]))
        elif where == "data end":
            target[3] = draw(st.sampled_from([b"", b"\n", b"X\r\n"]))
        elif where == "trailer":
            target[2] = draw(
                st.sampled_from([b"Trailer: x\r\n", b"Content-Length: 5\r\n", b"Host: b\r\n", b"X\r\n"])
            )
        else:
            target[3] = draw(st.sampled_from([b"\n", b""]))
    return b"".join(b"".join(p) for p in [*pieces, last])


def odd_length(length: int) -> st.SearchStrategy[bytes]:
    text = b"%d" % length
    return st.sampled_from(
        [
            b"+" + text,
            b"-" + text,
            b"0x%x" % length,
            text + b", " + text,
            text + b",%d" % (length + 1),
            b"",
            b" " + text + b" ",
            b"0" * 30 + text,
            b"%d" % (length + 1),
            text + b"\x00",
            b"99999999999999999999999",
        ]
    )


@st.composite
def request(draw: st.DrawFn, marker: bytes) -> tuple[bytes, bool]:
    """One request, and whether it is well-formed: two times in three, else it has one or two MUTATIONS."""
    odd: set[str] = set()
    if draw(st.integers(0, 2)) == 0:
        odd = set(draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=2)))
    method = draw(ODD_METHODS if "method" in odd else METHODS)
    target = draw(ODD_TARGETS if "target" in odd else PATHS)
    version = draw(ODD_VERSIONS if "version" in odd else VERSIONS)
    sep = draw(st.sampled_from([b"  ", b"\t", b" \t"])) if "request line spaces" in odd else b" "
    line = method + sep + target + (b" " + version if version else b"")
    fields: list[tuple[bytes, bytes]] = []
    if "host" in odd:
        for _ in range(draw(st.sampled_from([0, 1, 2]))):
            fields.append((b"Host", draw(st.one_of(ODD_HOSTS, HOSTS))))
    else:
        fields.append((b"Host", draw(HOSTS)))
    for _ in range(draw(st.integers(0, 2))):
        fields.append((draw(NAMES), draw(VALUES)))
    if "field" in odd:
        fields.append(draw(st.one_of(st.tuples(ODD_NAMES, VALUES), st.tuples(NAMES, ODD_VALUES))))
    if "connection" in odd:
        fields.append((b"Connection", draw(CONNECTION)))
    elif draw(sometimes(5)):
        fields.append((b"Connection", draw(st.sampled_from([b"keep-alive", b"close", b"x-a"]))))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if version == b"HTTP/1.0" and framing == "chunked" and not odd:
        framing = "length"  # chunked is HTTP/1.1's (RFC 9112 §6.1)
    if "both lengths" in odd:
        framing = "both"
    elif "length" in odd:
        framing = "length"
    elif "transfer-encoding" in odd or "chunk" in odd:
        framing = "chunked"
    body = draw(BODY_BYTES) if framing != "none" else b""
    payload = b""
    if framing in ("length", "both"):
        length = draw(odd_length(len(body))) if "length" in odd and draw(st.booleans()) else b"%d" % len(body)
        fields.append((b"Content-Length", length))
        if "length" in odd and draw(st.booleans()):
            fields.append((b"Content-Length", length if draw(st.booleans()) else b"%d" % (len(body) + 2)))
        payload = body
    if framing in ("chunked", "both"):
        fields.append((b"Transfer-Encoding", draw(TE_VALUES) if "transfer-encoding" in odd else b"chunked"))
        payload = draw(chunked_body(body, "chunk" in odd))
    fields = draw(st.permutations(fields))
    lines = [MARKER + b": " + marker]
    for name, value in fields:
        lines.append(name + b": " + value)
    if "space before colon" in odd:
        at = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 0
        name, _, value = lines[at].partition(b": ")
        lines[at] = name + draw(st.sampled_from([b" :", b"\t:"])) + b" " + value
    if "obs-fold" in odd:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from([b" folded", b"\tfolded", b" "])))
    ends = [CRLF] * (len(lines) + 2)
    if "line ending" in odd:
        ends[draw(st.integers(0, len(ends) - 1))] = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n"]))
    head = line + ends[0]
    for i, field_line in enumerate(lines):
        head += field_line + ends[i + 1]
    return head + ends[-1] + payload, not odd


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A stream of 1-4 requests, and whether all are well-formed and whole."""
    requests = [draw(request(b"%d" % i)) for i in range(draw(st.sampled_from([1, 2, 2, 3, 3, 4])))]
    stream = b"".join(data for data, _ in requests)
    clean = all(ok for _, ok in requests)
    if draw(sometimes(20)):
        stream = stream[: draw(st.integers(1, len(stream)))]  # the client stops mid-stream
        clean = False
    return stream, clean


# -- the run ---------------------------------------------------------------------------------------


class Rig:
    """An upstream and a sidecar in front of it, on a loop that runs only while an example does."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stack = AsyncExitStack()
        self.up = loop.run_until_complete(self.stack.enter_async_context(ScriptableUpstream(name="up")))
        self.rt: Runtime = loop.run_until_complete(
            self.stack.enter_async_context(running_sidecar(sidecar_config([self.up.address])))
        )
        self.port = self.rt.listeners[0].port

    def close(self) -> None:
        self.loop.run_until_complete(self.stack.aclose())
        leaked = [task.get_name() for task in live_tasks() if not task.done()]
        assert not leaked, f"tasks outlived the test: {leaked}"


@contextlib.contextmanager
def rig_on(loop_kind: str) -> Iterator[Rig]:
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        rig = Rig(loop)
        try:
            yield rig
        finally:
            rig.close()
    finally:
        loop.close()


async def send(rig: Rig, stream: bytes, ref: RefParse) -> tuple[bytes, bool]:
    """Send the stream in one write; read until the connection ends or no more output is due.
    Returns the output and whether the connection ended (EOF or reset)."""
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    out = bytearray()
    ended = False
    # Output stops coming without an EOF only when every request was whole and kept the connection.
    whole = bool(ref.requests) and ref.requests[-1].complete
    due = len(ref.requests) if ref.error is None and not ref.closes and whole else None
    try:
        writer.write(stream)
        async with asyncio.timeout(IDLE_READ if due is None else DUE_READ):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    ended = True
                    break
                out += chunk
                # After a refusal read on: the connection must end.
                if (
                    due is not None
                    and b"x-pillion-error" not in out
                    and _complete_responses(bytes(out)) >= due
                ):
                    break
    except TimeoutError:
        pass
    except ConnectionError:
        ended = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    # Wait until Pillion is done with the connection, so all it forwarded has reached the upstream.
    listener = rig.rt.listeners[0]
    async with asyncio.timeout(5):
        while listener.connections:  # noqa: ASYNC110 -- nothing to wait on but the state itself
            await asyncio.sleep(0.002)
    await asyncio.sleep(0.005)
    return bytes(out), ended


def _complete_responses(out: bytes) -> int:
    try:
        split = split_responses(out, [b"GET"] * 64)
    except BadResponse:
        return 0
    return sum(1 for r in split.responses if not r.interim)


def _marker(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    values = [v for n, v in headers if n.lower() == MARKER]
    return values[0] if len(values) == 1 else None


@dataclass
class Seen:
    """What one example produced: the client's output, the upstream's records and raw bytes."""

    out: bytes
    ended: bool  # the connection ended (EOF or reset) rather than went quiet
    got: list[RecordedRequest]
    raw: list[bytes]  # per upstream connection used


def check(stream: bytes, ref: RefParse, seen: Seen) -> None:
    out, ended, got = seen.out, seen.ended, seen.got
    context = f"stream {stream!r}\nh11: {[(r.method, r.target) for r in ref.requests]}, {ref.error!r}"
    # 1. Each forwarded request is one h11 read, in order.
    refs: list[RefRequest] = ref.requests
    i = 0
    for rec in got:
        method, target = rec.method.encode("latin-1"), rec.target.encode("latin-1")
        marker = _marker([(n.lower(), v) for n, v in rec.headers])
        while i < len(refs) and not (
            refs[i].method == method
            and origin_form_of(refs[i].target) == origin_form_of(target)
            and _marker(refs[i].headers) == marker
        ):
            i += 1
        assert i < len(refs), (
            f"forwarded {method!r} {target!r} (x-index {marker!r}), which h11 did not read\n{context}"
        )
        r = refs[i]
        if rec.complete:
            assert r.complete and rec.body == bytes(r.body), (
                f"forwarded {method!r} {target!r} with body {rec.body!r}; h11 read {bytes(r.body)!r} "
                f"({'complete' if r.complete else 'incomplete'})\n{context}"
            )
        i += 1
    # 2. What went upstream is canonical.
    for data in seen.raw:
        upstream = h11_requests(data)
        assert upstream.error is None, (
            f"h11 rejects what Pillion wrote upstream: {upstream.error}: {data!r}\n{context}"
        )
        for r in upstream.requests:
            names = [n.lower() for n, _ in r.headers]
            assert names.count(b"host") == 1, f"forwarded with {names.count(b'host')} Host fields: {data!r}"
            assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1, (
                f"framing: {data!r}"
            )
            assert not HOP_BY_HOP & set(names), f"forwarded a hop-by-hop field: {data!r}"
    # 3. The client got well-formed responses; a framing refusal is the last and ends the connection.
    try:
        split = split_responses(out, [b"GET"] * 64)
    except BadResponse as exc:
        raise AssertionError(f"client output: {exc}: {out!r}\n{context}") from None
    finals = [r for r in split.responses if not r.interim]
    for n, response in enumerate(finals):
        error = next((v for k, v in response.headers if k.lower() == b"x-pillion-error"), None)
        if error is None or response.status not in FRAMING_STATUSES:
            continue
        assert n == len(finals) - 1 and not split.rest, (
            f"a response after the refusal {error!r}: {out!r}\n{context}"
        )
        assert ended, f"the connection stayed open after the refusal {error!r}\n{context}"
        assert len(got) <= n, (
            f"{len(got)} requests forwarded, {n} answered before the refusal {error!r}\n{context}"
        )


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_pillion_agrees_with_h11_or_refuses(loop_kind: str) -> None:
    outcomes: Counter[str] = Counter()
    with rig_on(loop_kind) as rig:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(streams())
        def differential(case: tuple[bytes, bool]) -> None:
            stream, clean = case
            ref = h11_requests(stream)
            rig.up.clear()
            out, ended = rig.loop.run_until_complete(send(rig, stream, ref))
            got = list(rig.up.requests)
            outcomes[f"h11 read {len(ref.requests)}" + (", then refused" if ref.error else "")] += 1
            outcomes[f"Pillion forwarded {len(got)}"] += 1
            outcomes["well-formed"] += clean
            refusal = out.rfind(b"x-pillion-error: ")
            if refusal >= 0:
                outcomes["Pillion refused: " + out[refusal + 17 :].split(b"\r")[0].decode()] += 1
            check(stream, ref, Seen(out, ended, got, [data for data in rig.up.raw if data]))
            if clean:  # and the other side of agreeing: well-formed requests all go through
                assert ref.error is None, f"h11 refused a well-formed stream: {ref.error}: {stream!r}"
                assert len(got) == len(ref.requests), (
                    f"{len(got)} of {len(ref.requests)} forwarded: {stream!r}"
                )

        differential()
    print("\n".join(f"{n:4} {what}" for what, n in sorted(outcomes.items())))


def test_reference_reads_pipelined_requests_and_stops_at_errors() -> None:
    """The reference itself, on streams whose reading is not in doubt."""
    two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
    ref = h11_requests(two)
    assert [(r.method, r.target, bytes(r.body), r.complete) for r in ref.requests] == [
        (b"GET", b"/a", b"", True),
        (b"POST", b"/b", b"ok", True),
    ]
    assert ref.error is None and not ref.closes
    broken = h11_requests(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert [r.target for r in broken.requests] == [b"/a"] and broken.error is not None
    closes = h11_requests(
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert [r.target for r in closes.requests] == [b"/a"] and closes.closes
    kept = h11_requests(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    assert [r.target for r in kept.requests] == [b"/a", b"/b"] and kept.closes
    cut = h11_requests(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    assert bytes(cut.requests[0].body) == b"ab" and not cut.requests[0].complete and cut.error is None
