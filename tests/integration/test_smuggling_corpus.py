"""Every request of the smuggling corpus (tests/corpus/smuggling.py) is refused, and nothing reaches the app.

One real Pillion in front of a ScriptableUpstream that records raw bytes. Each case is written in one
piece with a valid request pipelined behind it; the client must get exactly one answer, with a status the
case allows and an `x-pillion-error` header, and then EOF. Afterwards the upstream must have accepted no
connection at all: neither the bad request nor the one behind it may reach it. Valid requests that look
like the corpus (chunk extensions, trailers, HTTP/1.0 without Host, ...) go through the same listener and
must be forwarded, so the test fails for a proxy that refuses too much as well as too little. Failures are
collected and reported together, by case name, so one run lists everything that is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import uvloop

from corpus.smuggling import BODY_LIMIT, CASES, Case
from pillion.config import load_config_text
from pillion.testing.http import Response, parse_responses, raw_exchange_detailed
from pillion.testing.sidecar import running_sidecar
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
PIPELINED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
READ_TIMEOUT = 3.0  # a refused request's connection closes at once; this only bounds a broken proxy
BATCH = 50  # cases in flight at once: quick, and far from any connection limit


def _config(upstream: str) -> str:
    return json.dumps(
        {
            "service": "corpus",
            "admin": {"address": f"{HOST}:0"},
            "listeners": [
                {
                    "name": "in",
                    "address": f"{HOST}:0",
                    "limits": {"max_request_body_size": f"{BODY_LIMIT}B"},
                    "routes": [{"cluster": "app"}],
                }
            ],
            "clusters": [{"name": "app", "endpoints": [upstream]}],
        }
    )


async def _check_case(port: int, case: Case) -> str | None:
    """None when the case was refused as it must be, else what went wrong."""
    exchange = await raw_exchange_detailed(HOST, port, case.raw + PIPELINED, read_timeout=READ_TIMEOUT)
    try:
        responses = parse_responses(exchange.data)
    except Exception as exc:  # an unparseable answer is a failure to report, not a crash
        return f"unparseable response ({exc!r}): {exchange.data[:120]!r}"
    problems = []
    if len(responses) != 1:
        statuses = [r.status for r in responses]
        problems.append(f"{len(responses)} responses {statuses} (ended by {exchange.ending})")
    if responses:
        first = responses[0]
        if first.status not in case.statuses:
            problems.append(f"got {first.status}, expected {sorted(case.statuses)}")
        if first.header("x-pillion-error") is None:
            problems.append("no x-pillion-error header")
    if exchange.ending != "eof":
        problems.append(f"connection not closed: {exchange.ending}")
    return "; ".join(problems) or None


async def _exchange(port: int, data: bytes, count: int) -> list[Response]:
    """Send `data` and read until `count` responses are complete, the peer closes, or the timeout."""
    reader, writer = await asyncio.open_connection(HOST, port)
    received = b""
    try:
        writer.write(data)
        async with asyncio.timeout(READ_TIMEOUT):
            while len(parse_responses(received)) < count and (chunk := await reader.read(65536)):
                received += chunk
    except (TimeoutError, ConnectionError):
        pass  # judged by what arrived
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_responses(received)


@dataclass(frozen=True)
class Control:
    """A valid request that must reach the upstream as `target` with `body`, as a canonical message:
    one Host field and none of the `absent` fields. A `refusable` one may instead be refused locally
    (4xx with x-pillion-error) as long as nothing of it reaches the upstream."""

    name: str
    raw: bytes
    target: str
    body: bytes = b""
    refusable: bool = False
    absent: tuple[str, ...] = ()


# A whole request carried as a body: if the proxy loses the body's framing, the upstream sees it as a
# second request. No control may ever make /inner reach the upstream.
INNER = b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "x-hop")

CONTROLS = (
    Control("get", b"GET /c/get HTTP/1.1\r\nHost: x\r\n\r\n", "/c/get"),
    Control(
        "post-content-length",
        b"POST /c/post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "/c/post",
        b"hello",
    ),
    Control(
        "post-content-length-leading-zeros-ows",  # 1*DIGIT allows leading zeros; OWS is not the value
        b"POST /c/zeros HTTP/1.1\r\nHost: x\r\nContent-Length: \t005 \r\n\r\nhello",
        "/c/zeros",
        b"hello",
    ),
    Control(
        "chunked-extension-trailer",
        b"POST /c/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\nhello\r\n6;a="q;r"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n',
        "/c/chunked",
        b"hello world",
    ),
    Control(
        "chunked-mixed-case",
        b"POST /c/mixed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "/c/mixed",
        b"abc",
    ),
    Control("http10-no-host", b"GET /c/http10 HTTP/1.0\r\n\r\n", "/c/http10"),
    # RFC 9112 §3 lets a recipient split the request line on whitespace; llhttp does, and Pillion
    # forwards the line re-written with single spaces, so the app never sees the odd one.
    Control("request-line-two-spaces", b"GET  /c/spaces  HTTP/1.1\r\nHost: x\r\n\r\n", "/c/spaces"),
    Control("leading-empty-line", b"\r\nGET /c/lead HTTP/1.1\r\nHost: x\r\n\r\n", "/c/lead"),
    Control("obs-text-value", b"GET /c/obs-text HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n", "/c/obs-text"),
    Control(
        "100-fields",  # the default limit is 100 fields: exactly that many pass
        b"GET /c/fields HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-F%02d: v\r\n" % i for i in range(99))
        + b"\r\n",
        "/c/fields",
    ),
    Control(
        "hop-by-hop-removed",
        b"GET /c/hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n\r\n",
        "/c/hop",
        absent=HOP_BY_HOP,
    ),
    # A client naming a framing field or Host in Connection: removing the field must not remove the
    # framing (the proxy re-emits the length it used) nor the Host; refusing is also safe.
    Control(
        "connection-names-content-length",
        b"POST /c/conn-cl HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(INNER), INNER),
        "/c/conn-cl",
        INNER,
        refusable=True,
    ),
    Control(
        "connection-names-transfer-encoding",
        b"POST /c/conn-te HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(INNER), INNER),
        "/c/conn-te",
        INNER,
        refusable=True,
    ),
    Control(
        "connection-names-host",
        b"GET /c/conn-host HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
        "/c/conn-host",
        refusable=True,
    ),
)


async def _check_control(port: int, up: ScriptableUpstream, control: Control) -> str | None:
    try:
        responses = await _exchange(port, control.raw, 1)
    except Exception as exc:  # e.g. an unparseable answer: reported with the others
        return f"exchange failed: {exc!r}"
    await asyncio.sleep(0.02)  # let a leaked second request land before looking
    seen = [r for r in up.requests if r.target == control.target]
    got = [(r.status, r.header("x-pillion-error")) for r in responses]
    if control.refusable and len(responses) == 1 and 400 <= responses[0].status < 500:
        if responses[0].header("x-pillion-error") is None or seen:
            return f"refused with {got} but the upstream saw {len(seen)} requests"
        return None
    if len(responses) != 1 or responses[0].status != 200:
        return f"expected one 200, got {got}"
    if len(seen) != 1:
        return f"upstream saw {len(seen)} requests for {control.target}"
    forwarded = seen[0]
    if forwarded.body != control.body:
        return f"upstream body {forwarded.body!r}, expected {control.body!r}"
    if len(forwarded.header_values("host")) != 1:
        return f"upstream got Host {forwarded.header_values('host')}, expected exactly one"
    present = [name for name in control.absent if forwarded.header_values(name)]
    if present:
        return f"upstream got hop-by-hop fields {present}"
    return None


def test_corpus_is_large_and_named_uniquely() -> None:
    names = [case.name for case in CASES]
    assert len(names) >= 100
    assert len(set(names)) == len(names), sorted({n for n in names if names.count(n) > 1})
    assert len({case.raw for case in CASES}) == len(CASES)  # no case is a copy of another
    for case in CASES:
        assert case.statuses and 200 not in case.statuses and case.rfc.startswith("RFC ")


def test_smuggling_corpus_refused_and_never_forwarded() -> None:
    async def main() -> list[str]:
        failures: list[str] = []
        async with (
            ScriptableUpstream() as up,
            running_sidecar(load_config_text(_config(up.address))) as rt,
        ):
            port = rt.listeners[0].port
            for start in range(0, len(CASES), BATCH):
                batch = CASES[start : start + BATCH]
                results = await asyncio.gather(*(_check_case(port, case) for case in batch))
                failures += [f"{c.name} ({c.rfc}): {r}" for c, r in zip(batch, results, strict=True) if r]
            await asyncio.sleep(0.1)  # a forwarded request would have reached the upstream by now
            if up.connections_accepted or any(up.raw):
                heads = [f"{r.method} {r.target} (Host {r.header_values('host')})" for r in up.requests]
                failures.append(
                    f"upstream accepted {up.connections_accepted} connections, received "
                    f"{sum(map(len, up.raw))} bytes, parsed as {heads}"
                )
            if any(r.target == "/smuggled" for r in up.requests):
                failures.append("the pipelined /smuggled request reached the upstream")

            # The controls run after the check above, so their traffic cannot hide a leak.
            for control in CONTROLS:
                problem = await _check_control(port, up, control)
                if problem:
                    failures.append(f"control {control.name}: {problem}")
            if any(r.target == "/inner" for r in up.requests):
                failures.append("controls: a request body reached the upstream as a request (/inner)")
            canonical = b"".join(up.raw)
            # Dropped, re-framed or re-written by the proxy.
            for marker in (b"ext=1", b"X-Trailer", b"Chunked", b"  /c/spaces", b"/c/spaces  "):
                if marker in canonical:
                    failures.append(f"controls: the upstream received {marker!r}")
        return failures

    failures = uvloop.run(main())
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
