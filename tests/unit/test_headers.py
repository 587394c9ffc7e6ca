from pillion.http.headers import named_fields


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
