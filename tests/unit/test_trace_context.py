"""Trace context parsing and emitting: W3C traceparent/tracestate (the cases of the W3C test suite),
B3 single and multi, id generation, and ratio sampling that every hop decides the same way."""

from __future__ import annotations

import binascii
import random
import re

import pytest

from pillion.telemetry.trace_context import (
    B3_MULTI,
    B3_NONE,
    B3_SINGLE,
    DEFER,
    NOT_SAMPLED,
    SAMPLED,
    TRACE_HEADERS,
    TRACESTATE_LIMIT,
    Sampler,
    TraceContext,
    extract,
    format_traceparent,
    inject,
    new_span_id,
    new_trace_id,
    parse_b3_multi,
    parse_b3_single,
    parse_traceparent,
    render_roots,
    root_context,
    root_line,
    root_sampled,
    start_root,
    start_span,
    trace_id_of,
    truncate_tracestate,
)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"00f067aa0ba902b7"
VALID = b"00-" + TRACE + b"-" + SPAN + b"-01"
ALWAYS = Sampler(1.0)
NEVER = Sampler(0.0)


# ---- traceparent ----------------------------------------------------------------------------------


def test_valid_version_00() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, SAMPLED)
    assert parse_traceparent(VALID[:-2] + b"00") == TraceContext(TRACE, SPAN, NOT_SAMPLED)


@pytest.mark.parametrize(
    ("flags", "sampled"),
    [(b"00", 0), (b"01", 1), (b"02", 0), (b"03", 1), (b"09", 1), (b"fe", 0), (b"ff", 1)],
)
def test_only_the_sampled_bit_of_the_flags_counts(flags: bytes, sampled: int) -> None:
    ctx = parse_traceparent(b"00-" + TRACE + b"-" + SPAN + b"-" + flags)
    assert ctx is not None
    assert ctx.sampled == sampled


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"ff-" + TRACE + b"-" + SPAN + b"-01", id="version ff"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-01-extra", id="version 00 with more fields"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-011", id="version 00 too long"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-1", id="flags too short"),
        pytest.param(b"0-" + TRACE + b"-" + SPAN + b"-01", id="version too short"),
        pytest.param(b"000-" + TRACE + b"-" + SPAN + b"-01", id="version too long"),
        pytest.param(b"0g-" + TRACE + b"-" + SPAN + b"-01", id="version not hex"),
        pytest.param(b"00-" + b"0" * 32 + b"-" + SPAN + b"-01", id="trace id all zero"),
        pytest.param(b"00-" + TRACE + b"-" + b"0" * 16 + b"-01", id="parent id all zero"),
        pytest.param(b"00-" + TRACE.upper() + b"-" + SPAN + b"-01", id="trace id uppercase"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN.upper() + b"-01", id="parent id uppercase"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-0A", id="flags uppercase"),
        pytest.param(b"0A-" + TRACE + b"-" + SPAN + b"-01", id="version uppercase"),
        pytest.param(b"00-" + TRACE[:-1] + b"-" + SPAN + b"-01", id="trace id too short"),
        pytest.param(b"00-" + TRACE + b"0-" + SPAN + b"-01", id="trace id too long"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN[:-1] + b"-01", id="parent id too short"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"0-01", id="parent id too long"),
        pytest.param(b"00-" + TRACE[:-1] + b"g-" + SPAN + b"-01", id="trace id not hex"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN[:-1] + b".-01", id="parent id not hex"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-0g", id="flags not hex"),
        pytest.param(b"00_" + TRACE + b"_" + SPAN + b"_01", id="wrong separators"),
        pytest.param(b"cc-" + TRACE + b"-" + SPAN + b"-01.what", id="future version without a dash"),
        pytest.param(b"cc-" + TRACE + b"-" + SPAN, id="future version too short"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\t \t", id="whitespace"),
        pytest.param(VALID + b"\n", id="trailing newline"),
    ],
)
def test_invalid_traceparent_is_absent(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_future_version_parsed_by_the_version_00_layout() -> None:
    # W3C §3.2.4: a higher version may append fields after a dash; the first four are read as in 00.
    ctx = parse_traceparent(b"cc-" + TRACE + b"-" + SPAN + b"-01-what-the-future-will-be-like")
    assert ctx == TraceContext(TRACE, SPAN, SAMPLED)
    assert parse_traceparent(b"01-" + TRACE + b"-" + SPAN + b"-00") == TraceContext(TRACE, SPAN, NOT_SAMPLED)


def test_optional_whitespace_around_the_value() -> None:
    assert parse_traceparent(b" \t" + VALID + b"\t ") == TraceContext(TRACE, SPAN, SAMPLED)


def test_format_traceparent() -> None:
    assert format_traceparent(TRACE, SPAN, True) == VALID
    assert format_traceparent(TRACE, SPAN, SAMPLED) == VALID
    assert format_traceparent(TRACE, SPAN, False) == VALID[:-2] + b"00"
    assert format_traceparent(TRACE, SPAN, NOT_SAMPLED) == VALID[:-2] + b"00"
    assert parse_traceparent(format_traceparent(TRACE, SPAN, True)) == TraceContext(TRACE, SPAN, SAMPLED)


# ---- tracestate -----------------------------------------------------------------------------------


def test_tracestate_is_forwarded_as_is() -> None:
    state = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    ctx = extract([(b"traceparent", VALID), (b"tracestate", state)])
    assert ctx is not None
    assert ctx.tracestate == state
    child = start_span(ctx, NEVER)
    assert child.tracestate == state
    assert b"tracestate: " + state + b"\r\n" in inject(child)


def test_several_tracestate_fields_are_joined() -> None:
    ctx = extract([(b"Tracestate", b"a=1"), (b"traceparent", VALID), (b"TRACESTATE", b"b=2,c=3")])
    assert ctx is not None
    assert ctx.tracestate == b"a=1,b=2,c=3"


def test_tracestate_without_a_valid_traceparent_is_ignored() -> None:
    assert extract([(b"tracestate", b"a=1")]) is None
    assert extract([(b"traceparent", b"ff" + VALID[2:]), (b"tracestate", b"a=1")]) is None
    ctx = extract([(b"b3", TRACE + b"-" + SPAN + b"-1"), (b"tracestate", b"a=1")])
    assert ctx is not None
    assert ctx.tracestate == b""


def test_long_tracestate_keeps_the_members_that_fit() -> None:
    members = [b"k%02d=%s" % (i, b"v" * 40) for i in range(20)]  # 20 x 44 bytes + commas
    state = b",".join(members)
    assert len(state) > TRACESTATE_LIMIT
    kept = truncate_tracestate(state)
    assert len(kept) <= TRACESTATE_LIMIT
    assert state.startswith(kept)
    assert kept.split(b",") == members[: len(kept.split(b","))]
    assert truncate_tracestate(b"x=" + b"y" * 600) == b""  # one member too long: dropped
    assert truncate_tracestate(b"a=1") == b"a=1"


# ---- B3 -------------------------------------------------------------------------------------------


def test_b3_single() -> None:
    assert parse_b3_single(TRACE + b"-" + SPAN + b"-1") == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_SINGLE)
    assert parse_b3_single(TRACE + b"-" + SPAN + b"-0") == TraceContext(
        TRACE, SPAN, NOT_SAMPLED, b3=B3_SINGLE
    )
    assert parse_b3_single(TRACE + b"-" + SPAN + b"-d") == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_SINGLE)
    assert parse_b3_single(TRACE + b"-" + SPAN) == TraceContext(TRACE, SPAN, DEFER, b3=B3_SINGLE)
    with_parent = TRACE + b"-" + SPAN + b"-1-" + b"1" * 16
    assert parse_b3_single(with_parent) == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_SINGLE)


def test_b3_single_64_bit_trace_id_is_padded() -> None:
    ctx = parse_b3_single(TRACE[16:] + b"-" + SPAN + b"-1")
    assert ctx is not None
    assert ctx.trace_id == b"0" * 16 + TRACE[16:]


def test_b3_single_decision_only() -> None:
    assert parse_b3_single(b"0") == TraceContext(b"", b"", NOT_SAMPLED, b3=B3_SINGLE)
    assert parse_b3_single(b"1") == TraceContext(b"", b"", SAMPLED, b3=B3_SINGLE)
    assert parse_b3_single(b"d") == TraceContext(b"", b"", SAMPLED, b3=B3_SINGLE)


@pytest.mark.parametrize(
    "value",
    [
        b"2",
        b"",
        TRACE + b"-" + SPAN + b"-2",
        TRACE + b"-" + SPAN + b"-1-" + b"1" * 15,
        TRACE.upper() + b"-" + SPAN + b"-1",
        TRACE[:-2] + b"-" + SPAN + b"-1",
        b"0" * 32 + b"-" + SPAN + b"-1",
        TRACE + b"-" + b"0" * 16 + b"-1",
        TRACE + b"-" + SPAN + b"-",
        TRACE + b"-" + SPAN + b"-1-",
    ],
)
def test_b3_single_invalid(value: bytes) -> None:
    assert parse_b3_single(value) is None


def test_b3_multi() -> None:
    assert parse_b3_multi(TRACE, SPAN, b"1", None) == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_MULTI)
    assert parse_b3_multi(TRACE, SPAN, b"0", None) == TraceContext(TRACE, SPAN, NOT_SAMPLED, b3=B3_MULTI)
    assert parse_b3_multi(TRACE, SPAN, None, None) == TraceContext(TRACE, SPAN, DEFER, b3=B3_MULTI)
    assert parse_b3_multi(TRACE, SPAN, b"0", b"1") == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_MULTI)
    assert parse_b3_multi(TRACE, SPAN, b"true", None) == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_MULTI)
    assert parse_b3_multi(TRACE[16:], SPAN, b"1", None) == TraceContext(
        b"0" * 16 + TRACE[16:], SPAN, SAMPLED, b3=B3_MULTI
    )
    assert parse_b3_multi(None, None, b"0", None) == TraceContext(b"", b"", NOT_SAMPLED, b3=B3_MULTI)
    assert parse_b3_multi(None, None, None, b"1") == TraceContext(b"", b"", SAMPLED, b3=B3_MULTI)


@pytest.mark.parametrize(
    ("trace_id", "span_id", "sampled"),
    [
        (TRACE, None, b"1"),
        (None, SPAN, b"1"),
        (None, None, None),
        (None, None, b"maybe"),
        (TRACE.upper(), SPAN, b"1"),
        (TRACE, SPAN + b"0", b"1"),
        (b"0" * 32, SPAN, b"1"),
        (TRACE, b"0" * 16, b"1"),
    ],
)
def test_b3_multi_invalid(trace_id: bytes | None, span_id: bytes | None, sampled: bytes | None) -> None:
    assert parse_b3_multi(trace_id, span_id, sampled, None) is None


# ---- extract: which header wins ------------------------------------------------------------------


def test_extract_nothing() -> None:
    assert extract([]) is None
    assert extract([(b"host", b"a"), (b"x-request-id", b"1")]) is None


def test_extract_header_names_are_case_insensitive() -> None:
    assert extract([(b"TraceParent", VALID)]) == TraceContext(TRACE, SPAN, SAMPLED)
    ctx = extract([(b"X-B3-TraceId", TRACE), (b"X-B3-SpanId", SPAN), (b"X-B3-Sampled", b"1")])
    assert ctx == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_MULTI)


def test_two_traceparents_start_a_new_trace() -> None:
    assert extract([(b"traceparent", VALID), (b"traceparent", VALID)]) is None


def test_traceparent_wins_over_b3_and_remembers_the_b3_form() -> None:
    other = b"a" * 32
    ctx = extract([(b"b3", other + b"-" + SPAN + b"-0"), (b"traceparent", VALID)])
    assert ctx == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_SINGLE)
    ctx = extract([(b"x-b3-traceid", other), (b"x-b3-spanid", SPAN), (b"traceparent", VALID)])
    assert ctx == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_MULTI)


def test_b3_single_wins_over_multi_and_an_invalid_traceparent() -> None:
    other = b"a" * 32
    ctx = extract(
        [
            (b"traceparent", b"ff" + VALID[2:]),
            (b"x-b3-traceid", other),
            (b"x-b3-spanid", SPAN),
            (b"b3", TRACE + b"-" + SPAN + b"-1"),
        ]
    )
    assert ctx == TraceContext(TRACE, SPAN, SAMPLED, b3=B3_SINGLE)


def test_invalid_b3_single_falls_back_to_multi() -> None:
    ctx = extract([(b"b3", b"junk"), (b"x-b3-traceid", TRACE), (b"x-b3-spanid", SPAN)])
    assert ctx == TraceContext(TRACE, SPAN, DEFER, b3=B3_MULTI)


def test_trace_headers_lists_every_header_read() -> None:
    assert {
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    } == TRACE_HEADERS


# ---- ids, spans, inject ---------------------------------------------------------------------------


def test_new_ids_are_lowercase_hex_and_distinct() -> None:
    traces = {new_trace_id() for _ in range(1000)}
    spans = {new_span_id() for _ in range(1000)}
    assert len(traces) == 1000
    assert len(spans) == 1000
    for t in traces:
        assert len(t) == 32
        assert parse_traceparent(format_traceparent(t, SPAN, True)) is not None
    for s in spans:
        assert len(s) == 16
        assert parse_traceparent(format_traceparent(TRACE, s, True)) is not None


def test_root_span() -> None:
    ctx = start_span(None, ALWAYS)
    assert len(ctx.trace_id) == 32
    assert len(ctx.span_id) == 16
    assert ctx.parent_id == b""
    assert ctx.sampled == SAMPLED
    assert ctx.b3 == B3_NONE
    assert start_span(None, NEVER).sampled == NOT_SAMPLED


def test_child_span_keeps_the_trace_and_points_at_its_parent() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None
    child = start_span(parent, NEVER)
    assert child.trace_id == TRACE
    assert child.parent_id == SPAN
    assert child.span_id not in (SPAN, b"")
    assert child.sampled == SAMPLED  # the parent's decision wins over the ratio
    grandchild = start_span(parse_traceparent(inject(child)[13:-2]), NEVER)
    assert grandchild.trace_id == TRACE
    assert grandchild.parent_id == child.span_id


def test_parent_not_sampled_wins_over_the_ratio() -> None:
    parent = parse_traceparent(VALID[:-2] + b"00")
    assert start_span(parent, ALWAYS).sampled == NOT_SAMPLED


def test_deferred_b3_parent_is_decided_by_the_ratio() -> None:
    parent = parse_b3_multi(TRACE, SPAN, None, None)
    assert start_span(parent, ALWAYS).sampled == SAMPLED
    assert start_span(parent, NEVER).sampled == NOT_SAMPLED


def test_b3_decision_only_starts_a_trace_with_that_decision() -> None:
    child = start_span(parse_b3_single(b"1"), NEVER)
    assert len(child.trace_id) == 32
    assert child.parent_id == b""
    assert child.sampled == SAMPLED
    assert start_span(parse_b3_single(b"0"), ALWAYS).sampled == NOT_SAMPLED


def test_inject_w3c_only() -> None:
    ctx = TraceContext(TRACE, SPAN, SAMPLED, parent_id=b"1" * 16)
    assert inject(ctx) == b"traceparent: " + VALID + b"\r\n"
    ctx.sampled = NOT_SAMPLED
    assert inject(ctx) == b"traceparent: " + VALID[:-2] + b"00\r\n"


def test_inject_answers_in_the_b3_form_that_arrived() -> None:
    single = TraceContext(TRACE, SPAN, SAMPLED, tracestate=b"a=1", b3=B3_SINGLE)
    assert inject(single) == (
        b"traceparent: " + VALID + b"\r\ntracestate: a=1\r\nb3: " + TRACE + b"-" + SPAN + b"-1\r\n"
    )
    multi = TraceContext(TRACE, SPAN, NOT_SAMPLED, b3=B3_MULTI)
    assert inject(multi) == (
        b"traceparent: " + VALID[:-2] + b"00\r\n"
        b"x-b3-traceid: " + TRACE + b"\r\nx-b3-spanid: " + SPAN + b"\r\nx-b3-sampled: 0\r\n"
    )
    # What we emit, we read back as the same context.
    assert parse_b3_single(inject(single).split(b"b3: ")[1][:-2]) == TraceContext(
        TRACE, SPAN, SAMPLED, b3=B3_SINGLE
    )


# ---- sampling -------------------------------------------------------------------------------------


def test_sampler_bounds() -> None:
    with pytest.raises(ValueError, match="ratio"):
        Sampler(1.5)
    with pytest.raises(ValueError, match="ratio"):
        Sampler(-0.1)
    assert ALWAYS.sample(b"f" * 32)
    assert not NEVER.sample(b"0" * 31 + b"1")


def test_sampler_reads_the_lower_64_bits_like_opentelemetry() -> None:
    half = Sampler(0.5)
    # The upper half of the id does not matter; the lower 8 bytes are compared with 2**63.
    assert half.sample(b"f" * 16 + b"7" + b"f" * 15)
    assert not half.sample(b"0" * 16 + b"8" + b"0" * 15)
    assert half.bound == 2**63


def test_every_hop_decides_the_same_for_a_trace() -> None:
    rng = random.Random(7)
    ids = [b"%032x" % (rng.getrandbits(128) or 1) for _ in range(2000)]
    for ratio in (0.01, 0.1, 0.5):
        a, b = Sampler(ratio), Sampler(ratio)
        assert [a.sample(t) for t in ids] == [b.sample(t) for t in ids]
        # ...and through the full path: two sidecars each starting a span for the same deferring parent.
        for t in ids[:200]:
            parent = parse_b3_multi(t, SPAN, None, None)
            assert start_span(parent, a).sampled == start_span(parent, b).sampled


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.5, 0.9, 1.0])
def test_a_new_root_is_decided_as_any_hop_decides_its_trace_id(ratio: float) -> None:
    """start_root compares the id's lower half with the bound as hex bytes, not as a number: the two
    must agree, or the next hop (which parses the id) would decide differently. 20,000 roots span
    several of the pool's draws."""
    sampler = Sampler(ratio)
    roots = [start_root(sampler) for _ in range(20_000)]
    hex_id = re.compile(rb"[0-9a-f]{32}")
    assert all(hex_id.fullmatch(r.trace_id) for r in roots)
    assert all(len(r.span_id) == 16 and hex_id.fullmatch(r.span_id * 2) for r in roots)
    assert all(r.parent_id == b"" for r in roots)
    assert all(r.sampled == (SAMPLED if sampler.sample(r.trace_id) else NOT_SAMPLED) for r in roots)
    assert len({r.trace_id for r in roots}) == len(roots)
    assert len({r.span_id for r in roots}) == len(roots)
    assert abs(sum(r.sampled for r in roots) / len(roots) - ratio) < 0.02
    # A root is its traceparent line: the one inject renders for its context, which it carries whole.
    lines = [root_line(sampler) for _ in range(2_000)]
    assert all(inject(root_context(line)) == line for line in lines)
    assert all(root_sampled(line) == (root_context(line).sampled == SAMPLED) for line in lines)
    assert all(trace_id_of(line) == root_context(line).trace_id for line in lines)
    assert len(set(lines)) == len(lines)


def test_rendered_roots_take_their_ids_from_the_hex_in_order() -> None:
    """48 digits a root: the trace id, then the span id; a partial root at the end is dropped."""
    ids = binascii.b2a_hex(bytes(range(7 * 24 + 23)))  # no two roots alike, lower halves rising
    lines = render_roots(ids, Sampler(0.5).bound_hex)
    assert len(lines) == 7 and len(set(lines)) == 7
    for n, line in enumerate(lines):
        assert line == b"traceparent: 00-%b-%b-%b\r\n" % (
            ids[n * 48 : n * 48 + 32],
            ids[n * 48 + 32 : n * 48 + 48],
            b"01" if Sampler(0.5).sample(ids[n * 48 : n * 48 + 32]) else b"00",
        )


def test_an_all_zero_id_is_never_rendered() -> None:
    """All-zero ids are invalid: such a root is drawn again singly."""
    lines = render_roots(b"0" * 48 + b"1" * 32 + b"0" * 16 + b"0" * 32 + b"2" * 16, NEVER.bound_hex)
    roots = [root_context(line) for line in lines]
    assert len(roots) == 3
    assert all(r.trace_id != b"0" * 32 and r.span_id != b"0" * 16 for r in roots)
    assert all(inject(r) == line for r, line in zip(roots, lines, strict=True))


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_a_rendered_root_at_the_bound_is_decided_as_sample_decides(ratio: float) -> None:
    """The lower half one below the bound, equal to it and one above: the byte comparison must agree
    with `Sampler.sample` (lower half < ratio * 2**64) at each."""
    sampler = Sampler(ratio)
    for d in (-1, 0, 1):
        trace_id = b"1" * 16 + b"%016x" % max(0, min(sampler.bound + d, 2**64 - 1))
        (line,) = render_roots(trace_id + b"2" * 16, sampler.bound_hex)
        assert trace_id_of(line) == trace_id
        assert root_sampled(line) == sampler.sample(trace_id), (ratio, d)


def test_trace_id_of_reads_what_inject_wrote() -> None:
    """The access log takes the trace id from the forwarded lines, whatever they carry after it."""
    ctx = TraceContext(TRACE, SPAN, SAMPLED, tracestate=b"k=v", b3=B3_MULTI)
    assert trace_id_of(inject(ctx)) == TRACE


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.25, 0.9])
def test_observed_ratio_matches(ratio: float) -> None:
    n = 100_000
    sampler = Sampler(ratio)
    sampled = sum(sampler.sample(new_trace_id()) for _ in range(n))
    # Binomial: 5 standard deviations (a flake once in millions of runs).
    sigma = (n * ratio * (1 - ratio)) ** 0.5
    assert abs(sampled - n * ratio) < 5 * sigma, (sampled, n * ratio)
