"""Header rules for a forwarding intermediary (RFC 9110 §7.6.1).

Hop-by-hop fields describe one connection, not the message, so a proxy removes them before forwarding:
the fixed set below plus every field the `Connection` header names. Framing fields (`Content-Length`,
`Transfer-Encoding`) are removed too and re-emitted by the proxy from what it actually sends, so exactly
one length indication reaches the other side.

Names are compared lower-cased as bytes; values and original name case are forwarded untouched.
"""

from __future__ import annotations

from typing import Final

HOP_BY_HOP: Final[frozenset[bytes]] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# Fields the proxy looks at as it copies a message head; everything else is copied blindly.
CONTENT_LENGTH: Final = b"content-length"
HOST: Final = b"host"
X_FORWARDED_FOR: Final = b"x-forwarded-for"
X_FORWARDED_PROTO: Final = b"x-forwarded-proto"
X_REQUEST_ID: Final = b"x-request-id"
X_FORWARDED_CLIENT_CERT: Final = b"x-forwarded-client-cert"  # the mTLS caller; only Pillion may set it
# Trace context (W3C and B3): replaced by this hop's when tracing is on, forwarded as is when it is off.
TRACE_HEADERS: Final[frozenset[bytes]] = frozenset(
    (
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    )
)
CONNECTION: Final = b"connection"


def trace_id_of(lines: bytes) -> bytes:
    """The trace id in the trace header lines a tracer forwards (telemetry/trace_context.py `inject` and
    `root_line`): they begin with `traceparent: 00-<trace id>`. Here, not there, so that the access log
    reads it without importing tracing. Empty lines (tracing off) give b""."""
    return lines[16:48]


# Anything either classified or hop-by-hop: one set lookup tells the copy loop to look closer.
SPECIAL: Final[frozenset[bytes]] = HOP_BY_HOP | {
    CONTENT_LENGTH,
    HOST,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_REQUEST_ID,
    X_FORWARDED_CLIENT_CERT,
    *TRACE_HEADERS,
}


# The copy loops lower-case a name only when its length is one a special name has: bit n of these ints
# is set when some such name is n bytes long (a shift and a mask, where a set lookup costs a call).
SPECIAL_LENGTHS: Final = sum(1 << n for n in {len(name) for name in SPECIAL})
RESPONSE_LENGTHS: Final = sum(1 << n for n in {len(name) for name in HOP_BY_HOP | {CONTENT_LENGTH}})


def _spellings(name: bytes) -> tuple[bytes, ...]:
    # The most usual first (lower_name compares in this order): HTTP/1 clients and servers send the
    # title case, HTTP/2 and gRPC stacks the lower case.
    title = b"-".join(part.capitalize() for part in name.split(b"-"))
    return (title, name, title.replace(b"-Id", b"-ID"), name.upper())


# How senders usually spell the special names, lower-cased: a hit spares bytes.lower(), which compiled
# code reaches only through a method call.
_LOWER: Final[dict[bytes, bytes]] = {spelling: name for name in SPECIAL for spelling in _spellings(name)}


def _slots() -> tuple[tuple[tuple[bytes, bytes], ...], ...]:
    table: list[list[tuple[bytes, bytes]]] = [[] for _ in range(32 * 32)]
    for spelling, name in _LOWER.items():
        table[_slot(spelling)].append((spelling, name))
    return tuple(tuple(slot) for slot in table)


def _slot(name: bytes) -> int:
    # Length (every special name is shorter than 32) and first letter, either case (`& 31`).
    return len(name) << 5 | name[0] & 31


# `_LOWER` filed by length and first letter: a name is compared with the few spellings of its slot (a
# memcmp each) instead of being looked up in the dict. The parser's names are new objects, so a dict
# lookup hashed each one: ~350 instructions, three times a request (Host, Content-Length, Connection).
_SLOTS: Final = _slots()


def lower_name(name: bytes) -> bytes:
    """`name.lower()`, cheaper for the usual spellings of the special names."""
    if 0 < len(name) < 32:
        for spelling, low in _SLOTS[_slot(name)]:
            if name == spelling:
                return low
    return name.lower()


def field_line(name: bytes, value: bytes) -> bytes:
    """`name: value CRLF`: heads are built as lists of whole lines for one join at the end. (Compiled,
    this format is a single allocation and copy; a join costs per piece, so one line beats four pieces.)"""
    return b"%b: %b\r\n" % (name, value)


def line_name(line: bytes) -> bytes:
    """The lower-cased name of a field line built by `field_line` (a name has no colon, RFC 9110 §5.1)."""
    return line[: line.find(b":")].lower()


# Connection options that are not field names, and fields a Connection header may not remove: the
# framing and Host are end-to-end and Pillion writes or checks them itself. Honouring `Connection:
# content-length` would forward a body without its length: a smuggled request.
_NOT_REMOVABLE: Final = frozenset(
    (b"close", b"keep-alive", CONTENT_LENGTH, HOST, b"transfer-encoding", X_REQUEST_ID)
)


def named_fields(value: bytes, named: set[bytes] | None = None) -> set[bytes] | None:
    """`named` plus the fields a `Connection` header value names for removal (lower-cased), other than
    the connection options `close` and `keep-alive` and the end-to-end fields in `_NOT_REMOVABLE`; None
    while there are none (the usual case). A
    message may carry several Connection headers: pass each one's value with the result so far."""
    # A tuple display, which mypyc compiles as compares one by one: the value is a new object, and a
    # set lookup would hash it first.
    if value in (b"keep-alive", b"close", b"Keep-Alive", b"Close"):
        return named
    low = value.lower()
    if low in _NOT_REMOVABLE:
        return named
    more = {t.strip() for t in low.split(b",")} - _NOT_REMOVABLE - {b""}
    if not more:
        return named
    return more if named is None else named | more
