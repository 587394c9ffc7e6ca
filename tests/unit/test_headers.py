from pillion.http.headers import (
    _LOWER,
    CONTENT_LENGTH,
    HOP_BY_HOP,
    RESPONSE_LENGTHS,
    SPECIAL,
    SPECIAL_LENGTHS,
    field_line,
    line_name,
    lower_name,
    named_fields,
)


def test_plain_connection_options_name_nothing() -> None:
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"CLOSE"):
        assert named_fields(value) is None


def test_named_fields_are_lower_cased_and_exclude_options() -> None:
    assert named_fields(b"close, X-Internal , ,TE") == {b"x-internal", b"te"}
    assert named_fields(b"Keep-Alive,x-a") == {b"x-a"}
    assert named_fields(b" , ") is None


def test_names_from_several_connection_headers_accumulate() -> None:
    named = named_fields(b"x-a")
    named = named_fields(b"keep-alive", named)
    assert named_fields(b"x-b", named) == {b"x-a", b"x-b"}


def test_lower_name_agrees_with_lower_for_known_and_unknown_spellings() -> None:
    names = [*_LOWER, b"HoSt", b"X-Custom-Thing", b"accept", b"", b"Content-length", b"X-Powered-By"]
    # Names filed in a special name's slot (same length, a first byte equal to it modulo 32), and
    # lengths past the slots.
    names += [b"\xc8ost", b"hOST", b"(ost", b"X" * 31, b"X-Forwarded-Client-Cert" * 2, b"x" * 32]
    for name in names:
        assert lower_name(name) == name.lower(), name


def test_the_length_screens_pass_every_name_the_copy_loops_look_at() -> None:
    assert all(SPECIAL_LENGTHS >> len(name) & 1 for name in SPECIAL)
    assert all(RESPONSE_LENGTHS >> len(name) & 1 for name in HOP_BY_HOP | {CONTENT_LENGTH})
    assert not SPECIAL_LENGTHS >> len(b"accept") & 1  # (6 bytes: no special name is that long)


def test_field_line_is_one_line_and_line_name_reads_its_name_back_lower_cased() -> None:
    line = field_line(b"X-Thing", b"a: b")
    assert line == b"X-Thing: a: b\r\n"
    assert line_name(line) == b"x-thing"  # the first colon ends the name; the value may hold more
    assert line_name(field_line(b"host", b"[::1]:80")) == b"host"
