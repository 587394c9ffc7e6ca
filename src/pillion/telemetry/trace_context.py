"""Trace context on the wire: W3C `traceparent` / `tracestate` and B3, parsed and emitted as bytes.

Theory of operation: a request may arrive carrying its caller's trace context. `extract` reads it from
the request's trace headers (`TRACE_HEADERS`) into a `TraceContext`, or returns None when there is none
or it is invalid -- an invalid context is treated exactly like an absent one, so the request starts a
new trace (W3C Trace Context §3.2.2.1: "restart the trace"). `start_span` then makes the context of
this hop's own span: the same trace (or a new one), a fresh span id, the parent's span id, and the
sampling decision. `inject` renders that context as the header lines to forward, so the next hop sees
this hop's span as its parent.

    incoming headers --extract--> parent --start_span(parent, sampler)--> ctx --inject--> forwarded headers
                                                                           `--> Span record (spans.py)

Ids are kept as lowercase hex `bytes` (32 characters for a trace id, 16 for a span id): that is how
they arrive and how they leave, so the per-request path never converts them. The exporter turns them
into raw bytes for OTLP, off the request path (`binascii.unhexlify`).

Formats:

- **W3C** `traceparent: 00-<trace-id>-<parent-id>-<flags>`. Version `ff` is invalid; version 00 must
  be exactly 55 characters; a higher version is parsed by the version-00 layout and may carry more
  fields after a dash (§3.2.4, forward compatibility). Hex must be lowercase; all-zero ids are invalid;
  of the flags only bit 0 (sampled) is read. Two `traceparent` fields make the context invalid.
  `tracestate` is opaque: several fields are joined with commas (RFC 9110 §5.3), forwarded as they
  came, and only ever shortened (at a list-member boundary) past `TRACESTATE_LIMIT` bytes. It is read
  only alongside a valid `traceparent` (§3.3.1).
- **B3** single (`b3: <trace-id>-<span-id>[-<sampled>[-<parent-span-id>]]`, or just `0`/`1`/`d`) and
  multi (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`). A 64-bit trace id is left-padded
  to 128 bits. Debug (`d`, `x-b3-flags: 1`) counts as sampled. A sampling decision without ids is kept:
  the new trace gets that decision. B3 sampled may be absent ("defer"): the sampler decides.

Precedence: `traceparent`, then `b3`, then `x-b3-*`. Whatever was read, the forwarded request always
carries `traceparent` (and `tracestate` if any), and also B3 in the form that arrived (single or multi),
so a B3-only app keeps its traces.

Sampling is parent-based: a parent's decision wins (a valid `traceparent` always carries one); without
one, `Sampler` decides from the trace id alone, as OpenTelemetry's TraceIdRatioBased does -- the lower 8
bytes of the trace id as an unsigned integer, compared with `ratio * 2**64`. Every sidecar a trace
passes through therefore makes the same decision without any coordination.

A request without a trace (most requests an edge or inbound sidecar sees) takes a root from its
sampler's pool (`_Roots`), made 64 at a time from one `os.urandom` draw: each root is only its
`traceparent` line (`root_line`), with the sampling decision in its flags. No context object is made
for the 99% a sampler at 1% leaves out; the sampled ones make theirs from the line (`root_context`).
One `getrandom` syscall per 64 roots costs less than converting Mersenne Twister output to bytes per
root. A forked child would share what is left of the pool, but Pillion only forks to exec the app. A
span id for a request that brought its trace comes from `random.getrandbits`: the process's Mersenne
Twister, seeded from `os.urandom` at import and re-seeded in a forked child by CPython; uniformly
distributed, which is all the sampler needs. Trace ids are correlation keys, not secrets, so
unpredictability is not required.
"""

from __future__ import annotations

import binascii
import os
import random
import re
from collections.abc import Iterable
from typing import Final

from pillion.http.headers import TRACE_HEADERS, trace_id_of

__all__ = [
    "B3_MULTI",
    "B3_NONE",
    "B3_SINGLE",
    "DEFER",
    "NOT_SAMPLED",
    "SAMPLED",
    "TRACESTATE_LIMIT",
    "TRACE_HEADERS",
    "Sampler",
    "TraceContext",
    "extract",
    "format_traceparent",
    "inject",
    "new_span_id",
    "new_trace_id",
    "parse_b3_multi",
    "parse_b3_single",
    "parse_traceparent",
    "render_roots",
    "root_context",
    "root_line",
    "root_sampled",
    "start_root",
    "start_span",
    "trace_id_of",
    "truncate_tracestate",
]

# Sampling states of a context. A parsed traceparent is always SAMPLED or NOT_SAMPLED; B3 may DEFER.
# Final: C statics when compiled, not module-dict lookups.
getrandbits: Final = random.getrandbits
b2a_hex: Final = binascii.b2a_hex
urandom: Final = os.urandom

SAMPLED: Final = 1
NOT_SAMPLED: Final = 0
DEFER: Final = -1

# Which B3 form, if any, the request arrived with (and so is forwarded with).
B3_NONE: Final = 0
B3_SINGLE: Final = 1
B3_MULTI: Final = 2

# The W3C spec asks vendors to propagate at least 512 characters of tracestate; beyond that members
# are dropped from the right (the oldest end) until it fits.
TRACESTATE_LIMIT: Final = 512

TRACEPARENT: Final = b"traceparent"
TRACESTATE: Final = b"tracestate"
B3: Final = b"b3"
X_B3_TRACEID: Final = b"x-b3-traceid"
X_B3_SPANID: Final = b"x-b3-spanid"
X_B3_PARENTSPANID: Final = b"x-b3-parentspanid"
X_B3_SAMPLED: Final = b"x-b3-sampled"
X_B3_FLAGS: Final = b"x-b3-flags"

# TRACE_HEADERS (pillion.http.headers, with the other names the proxy treats specially) is every header
# above: a proxy drops them from what it forwards and appends `inject(ctx)` instead, so the next hop's
# parent is this hop's span.

# A regex checks lengths, dashes and lowercase hex in C, and its groups() is cheaper than slicing and
# validating by hand (~0.35 µs against ~0.8 µs). Version 00, exactly 55 bytes, is nearly every value;
# the general pattern (then the version rules: ff invalid, nothing after the flags in 00) only runs
# when that fails.
_TRACEPARENT_00: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])\Z")
_TRACEPARENT: Final = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])(-.*)?", re.S
)
# The hex digits whose value is odd: the sampled flag is bit 0 of the flags' second digit.
_ODD_HEX: Final = frozenset(b"13579bdf")
_B3_SINGLE: Final = re.compile(
    rb"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?"
)
_B3_TRACE_ID: Final = re.compile(rb"[0-9a-f]{32}|[0-9a-f]{16}")
_SPAN_ID: Final = re.compile(rb"[0-9a-f]{16}")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_PAD64: Final = b"0" * 16
_OWS: Final = b" \t"


class TraceContext:  # noqa: PLW1641 (mutable, so unhashable, as the dataclass it replaced)
    """One span's place in a trace. For a parsed (remote) context, `span_id` is the caller's span and
    `parent_id` is empty; for a context made by `start_span`, `span_id` is this hop's new span and
    `parent_id` the caller's (empty for a root span).

    `trace_id` and `span_id` are empty only in a B3 context that carried a sampling decision alone.
    `sampled` is SAMPLED, NOT_SAMPLED or (B3 only, before `start_span`) DEFER.

    A plain class rather than a dataclass: one is made per request when tracing is on, and a
    dataclass's generated `__init__` stays interpreted Python in the compiled build (10x the cost).
    """

    __slots__ = ("b3", "parent_id", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        sampled: int,
        *,
        parent_id: bytes = b"",
        tracestate: bytes = b"",
        b3: int = B3_NONE,  # the B3 form the request arrived with, if any
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.parent_id = parent_id
        self.tracestate = tracestate
        self.b3 = b3

    def _fields(self) -> tuple[bytes, bytes, int, bytes, bytes, int]:
        return (self.trace_id, self.span_id, self.sampled, self.parent_id, self.tracestate, self.b3)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TraceContext) and self._fields() == other._fields()

    def __repr__(self) -> str:
        names = ("trace_id", "span_id", "sampled", "parent_id", "tracestate", "b3")
        return f"TraceContext({', '.join(f'{n}={v!r}' for n, v in zip(names, self._fields(), strict=True))})"


# ---- W3C ---------------------------------------------------------------------------------------------


def parse_traceparent(value: bytes) -> TraceContext | None:
    """The context in a `traceparent` value, or None if it is not valid (start a new trace then)."""
    m = _TRACEPARENT_00.match(value)
    if m is not None:
        trace_id, span_id, flags = m.groups()
    else:
        m = _TRACEPARENT.fullmatch(value)
        if m is None:
            # Optional whitespace around a field value is not part of it (RFC 9110 §5.5); the parser
            # usually strips it already, so only a failed match pays for the strip.
            stripped = value.strip(_OWS)
            if len(stripped) == len(value) or (m := _TRACEPARENT.fullmatch(stripped)) is None:
                return None
        version, trace_id, span_id, flags, rest = m.groups()
        if version == b"ff" or (version == b"00" and rest is not None):
            return None  # ff is invalid; version 00 is exactly 55 characters
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    # Only the sampled bit is defined for us; other bits are ignored, not propagated (§3.2.2.5).
    return TraceContext(trace_id, span_id, SAMPLED if flags[0] in _ODD_HEX else NOT_SAMPLED)


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool | int) -> bytes:
    """A version-00 `traceparent` value: `00-<trace_id>-<span_id>-01` (or `-00` when not sampled)."""
    return b"00-%b-%b-%b" % (trace_id, span_id, b"01" if sampled > 0 else b"00")


def truncate_tracestate(value: bytes) -> bytes:
    """`value` as is when it fits in TRACESTATE_LIMIT bytes, else its leading list members that fit."""
    if len(value) <= TRACESTATE_LIMIT:
        return value
    cut = value.rfind(b",", 0, TRACESTATE_LIMIT + 1)
    return value[:cut].rstrip(b" \t,") if cut > 0 else b""


# ---- B3 ----------------------------------------------------------------------------------------------


def parse_b3_single(value: bytes) -> TraceContext | None:
    """The context in a `b3` value (ids, or only a sampling decision), or None if it is not valid."""
    value = value.strip(_OWS)
    if len(value) == 1:
        if value == b"0":
            return TraceContext(b"", b"", NOT_SAMPLED, b3=B3_SINGLE)
        if value in (b"1", b"d"):
            return TraceContext(b"", b"", SAMPLED, b3=B3_SINGLE)
        return None
    m = _B3_SINGLE.fullmatch(value)
    if m is None:
        return None
    trace_id, span_id, sampled, _parent = m.groups()
    if len(trace_id) == 16:
        trace_id = _PAD64 + trace_id
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    state = DEFER if sampled is None else NOT_SAMPLED if sampled == b"0" else SAMPLED
    return TraceContext(trace_id, span_id, state, b3=B3_SINGLE)


def parse_b3_multi(
    trace_id: bytes | None, span_id: bytes | None, sampled: bytes | None, flags: bytes | None
) -> TraceContext | None:
    """The context in the `x-b3-*` values (None for a header that was absent), or None if there is no
    valid one. Ids must come together; a sampling decision may come alone."""
    state = DEFER
    if flags is not None and flags.strip(_OWS) == b"1":
        state = SAMPLED  # debug implies sampled
    elif sampled is not None:
        s = sampled.strip(_OWS)
        if s in (b"1", b"true", b"d"):
            state = SAMPLED
        elif s in (b"0", b"false"):
            state = NOT_SAMPLED
    if trace_id is None and span_id is None:
        if state == DEFER:
            return None
        return TraceContext(b"", b"", state, b3=B3_MULTI)
    if trace_id is None or span_id is None:
        return None
    trace_id = trace_id.strip(_OWS)
    span_id = span_id.strip(_OWS)
    if _B3_TRACE_ID.fullmatch(trace_id) is None or _SPAN_ID.fullmatch(span_id) is None:
        return None
    if len(trace_id) == 16:
        trace_id = _PAD64 + trace_id
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, state, b3=B3_MULTI)


# ---- both --------------------------------------------------------------------------------------------


def extract(headers: Iterable[tuple[bytes, bytes]]) -> TraceContext | None:
    """The caller's trace context from a request's header fields, or None to start a new trace.

    `headers` may be every field of the request or only those whose lowercase name is in
    TRACE_HEADERS (cheaper: a proxy that already lowercases names while forwarding can collect them).
    """
    traceparent: bytes | None = None
    traceparents = 0
    tracestate: list[bytes] | None = None
    b3: bytes | None = None
    b3_trace = b3_span = b3_sampled = b3_flags = None
    for name, value in headers:
        lname = name.lower()
        if lname == TRACEPARENT:
            traceparent = value
            traceparents += 1
        elif lname == TRACESTATE:
            if tracestate is None:
                tracestate = [value]
            else:
                tracestate.append(value)
        elif lname == B3:
            b3 = value
        elif lname == X_B3_TRACEID:
            b3_trace = value
        elif lname == X_B3_SPANID:
            b3_span = value
        elif lname == X_B3_SAMPLED:
            b3_sampled = value
        elif lname == X_B3_FLAGS:
            b3_flags = value
    multi = b3_trace is not None or b3_span is not None or b3_sampled is not None or b3_flags is not None
    b3_form = B3_SINGLE if b3 is not None else B3_MULTI if multi else B3_NONE
    if traceparent is not None and traceparents == 1:
        ctx = parse_traceparent(traceparent)
        if ctx is not None:
            if tracestate is not None:
                state = tracestate[0] if len(tracestate) == 1 else b",".join(tracestate)
                ctx.tracestate = truncate_tracestate(state.strip(_OWS))
            ctx.b3 = b3_form
            return ctx
    if b3 is not None and (ctx := parse_b3_single(b3)) is not None:
        return ctx
    if multi and (ctx := parse_b3_multi(b3_trace, b3_span, b3_sampled, b3_flags)) is not None:
        return ctx
    return None


def new_trace_id() -> bytes:
    """A random, non-zero 128-bit trace id as 32 lowercase hex characters."""
    return b"%032x" % (getrandbits(128) or 1)


def new_span_id() -> bytes:
    """A random, non-zero 64-bit span id as 16 lowercase hex characters."""
    return b"%016x" % (getrandbits(64) or 1)


class Sampler:
    """The ratio half of parent-based sampling: a trace is sampled when the lower 64 bits of its id are
    below `ratio * 2**64` (OpenTelemetry's TraceIdRatioBased), so every hop agrees on a trace."""

    __slots__ = ("bound", "bound_hex", "ratio", "roots")

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sampling ratio must be within [0, 1], got {ratio}")
        self.ratio = ratio
        self.bound = round(ratio * 2**64)
        # The bound as 16 lowercase hex characters, for comparing with a trace id's lower half as bytes
        # (`start_root`). At ratio 1 the bound is 2**64, which has 17: `g` sorts after every hex digit,
        # so every id compares below it.
        self.bound_hex = b"%016x" % self.bound if self.bound < 2**64 else b"g"
        self.roots = _Roots(self.bound_hex)  # new roots this sampler decided, ready made

    def sample(self, trace_id: bytes) -> bool:
        """The decision for a trace without a parent's decision. `trace_id` is 32 hex characters."""
        return int(trace_id[16:], 16) < self.bound


class _Roots:
    """New roots for one sampler, made `_ROOTS_PER_DRAW` at a time from one `os.urandom` draw and one
    hex conversion. A root is only its `traceparent` line, so a request without a trace takes the
    next line (making a context object per root, and freeing it, was most of what tracing cost an
    unsampled request)."""

    __slots__ = ("bound_hex", "lines", "pos")

    def __init__(self, bound_hex: bytes) -> None:
        self.bound_hex = bound_hex
        self.lines: list[bytes] = []
        self.pos = 0

    def next(self) -> bytes:
        pos = self.pos
        lines = self.lines
        if pos >= len(lines):
            lines = self.lines = render_roots(b2a_hex(urandom(_ROOTS_PER_DRAW * 24)), self.bound_hex)
            pos = 0
        self.pos = pos + 1
        return lines[pos]


def render_roots(ids: bytes, bound_hex: bytes) -> list[bytes]:
    """The lines of `len(ids) // 48` roots, each taking 48 hex digits of `ids` (trace id, span id),
    sampled when the trace id's lower half is below `bound_hex` (`Sampler.bound_hex`): for
    fixed-width lowercase hex the byte comparison is the numeric one, without parsing."""
    first = bound_hex[0]
    lines: list[bytes] = []
    for pos in range(0, len(ids) - 47, 48):
        trace_id, span_id = ids[pos : pos + 32], ids[pos + 32 : pos + 48]
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # invalid; one in 2**64: draw them singly
            trace_id, span_id = new_trace_id(), new_span_id()
        # The lower half's first digit decides most roots (at ratio 0.01 the bound starts with 0, so
        # 15 in 16 roots), without slicing and comparing the half.
        digit = trace_id[16]
        sampled = digit < first or (digit == first and trace_id[16:] < bound_hex)
        # What `inject` gives for the root: a root has no tracestate and no B3 form.
        lines.append(_traceparent_line(trace_id, span_id, sampled))
    return lines


_ROOTS_PER_DRAW: Final = 64
# A root's line is `traceparent: 00-<trace id>-<span id>-0<sampled>` and CRLF: the trace id at 16-48,
# the span id at 49-65, and the flags' last digit at 67.
_SAMPLED_AT: Final = 67


def root_line(sampler: Sampler) -> bytes:
    """The `traceparent` line (with its CRLF) of a new trace's root span, sampled by `sampler`: what
    `inject(start_span(None, sampler))` means, for the request that carries no trace, at a fraction
    of its cost. `root_sampled` says whether the sampler chose it, `root_context` makes its context."""
    return sampler.roots.next()


def root_sampled(line: bytes) -> bool:
    """Whether the root of `line` (from `root_line`) is sampled."""
    return line[_SAMPLED_AT] == 49  # b"1"


def root_context(line: bytes) -> TraceContext:
    """The context of the root whose line `root_line` gave."""
    return TraceContext(trace_id_of(line), line[49:65], SAMPLED if root_sampled(line) else NOT_SAMPLED)


def start_root(sampler: Sampler) -> TraceContext:
    """A new trace's root span, sampled by `sampler`: `start_span(None, sampler)`."""
    return root_context(root_line(sampler))


def start_span(parent: TraceContext | None, sampler: Sampler) -> TraceContext:
    """The context of this hop's span: a child of `parent` (a root when None), with a new span id and
    the sampling decision (the parent's if it made one, else the sampler's)."""
    if parent is None:
        return start_root(sampler)
    trace_id = parent.trace_id
    sampled = parent.sampled
    if not trace_id:  # B3 with a decision only: a new trace that keeps it
        trace_id = new_trace_id()
        parent_id = b""
    else:
        parent_id = parent.span_id
    if sampled == DEFER:
        sampled = SAMPLED if sampler.sample(trace_id) else NOT_SAMPLED
    return TraceContext(
        trace_id, new_span_id(), sampled, parent_id=parent_id, tracestate=parent.tracestate, b3=parent.b3
    )


def _traceparent_line(trace_id: bytes, span_id: bytes, sampled: bool) -> bytes:
    # A literal format: compiled, only that is built in place (a `Final` constant is a generic `%`).
    return b"traceparent: 00-%b-%b-%b\r\n" % (trace_id, span_id, b"01" if sampled else b"00")


def inject(ctx: TraceContext) -> bytes:
    """The header lines (each ending in CRLF) that carry `ctx` to the next hop: `traceparent`, plus
    `tracestate` when there is one, plus B3 in the form the request arrived with."""
    trace_id, span_id = ctx.trace_id, ctx.span_id
    sampled = ctx.sampled > 0
    out = _traceparent_line(trace_id, span_id, sampled)
    if ctx.tracestate:
        out += b"tracestate: %b\r\n" % ctx.tracestate
    if ctx.b3 == B3_SINGLE:
        out += b"b3: %b-%b-%b\r\n" % (trace_id, span_id, b"1" if sampled else b"0")
    elif ctx.b3 == B3_MULTI:
        out += b"x-b3-traceid: %b\r\nx-b3-spanid: %b\r\nx-b3-sampled: %b\r\n" % (
            trace_id,
            span_id,
            b"1" if sampled else b"0",
        )
    return out
