import re
from dataclasses import dataclass, field

import pytest

from pillion.config import ConfigError, load_config_text
from pillion.config.model import RouteMatch, ValueMatch
from pillion.proxy import route_match
from pillion.proxy.route_match import Matcher, compile_match, host_key, parse_query, split_target


@dataclass
class Req:
    method: bytes = b"GET"
    host: bytes = b"api.local"
    target: bytes = b"/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def hits(match: RouteMatch | Matcher, **request: object) -> bool:
    """Whether the route takes the request, computing host and path the way the router does."""
    m = compile_match(match) if isinstance(match, RouteMatch) else match
    req = Req(**request)  # type: ignore[arg-type]
    return m.matches(req, host_key(req.host)[0], split_target(req.target)[0])


def vm(name: str, **kw: object) -> ValueMatch:
    return ValueMatch(name=name, **kw)  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------------


def test_split_target() -> None:
    assert split_target(b"/a/b?x=1&y") == (b"/a/b", b"x=1&y")
    assert split_target(b"/a/b") == (b"/a/b", b"")
    assert split_target(b"/a?") == (b"/a", b"")
    assert split_target(b"/a?b?c") == (b"/a", b"b?c")


def test_host_key() -> None:
    assert host_key(b"API.Local") == (b"api.local", None)
    assert host_key(b"api.local:8080") == (b"api.local", 8080)
    assert host_key(b"api.local:8080  ") == (b"api.local", 8080)  # llhttp keeps trailing whitespace
    assert host_key(b"[::1]:80") == (b"[::1]", 80)
    assert host_key(b"[::1]") == (b"[::1]", None)
    assert host_key(b"[FE80::1]") == (b"[fe80::1]", None)
    assert host_key(b"api:") == (b"api", None)
    assert host_key(b"") == (b"", None)
    # A port that is not a number stays part of the host, so no route host matches it.
    assert host_key(b"api:x") == (b"api:x", None)
    assert host_key(b"api:" + b"9" * 5000) == (b"api:" + b"9" * 5000, None)  # no huge int()


def test_parse_query_decodes_percent_and_plus() -> None:
    assert parse_query(b"a=1&b=x%20y&c=p+q&flag&&=e&d=%E2%9C%93") == [
        (b"a", b"1"),
        (b"b", b"x y"),
        (b"c", b"p q"),
        (b"flag", b""),
        (b"", b"e"),
        (b"d", "✓".encode()),
    ]
    assert parse_query(b"") == []
    assert parse_query(b"n%61me=v=w") == [(b"name", b"v=w")]


# --- path ----------------------------------------------------------------------------------------


def test_no_conditions_match_everything() -> None:
    m = compile_match(RouteMatch())
    assert not m.needs_host
    assert hits(m, target=b"/anything?x", host=b"")
    assert hits(m, target=b"*", method=b"OPTIONS")


def test_prefix() -> None:
    m = RouteMatch(prefix="/api/")
    assert hits(m, target=b"/api/")
    assert hits(m, target=b"/api/v1?x=/other")
    assert not hits(m, target=b"/api")
    assert not hits(m, target=b"/API/")  # paths are case-sensitive
    assert not hits(m, target=b"/other?/api/")  # the query is not part of the path


def test_exact_path_ignores_the_query() -> None:
    m = RouteMatch(path="/healthz")
    assert hits(m, target=b"/healthz")
    assert hits(m, target=b"/healthz?verbose=1")
    assert not hits(m, target=b"/healthz/")
    assert not hits(m, target=b"/healthzz")


def test_path_is_matched_raw_without_percent_decoding() -> None:
    assert not hits(RouteMatch(prefix="/admin"), target=b"/%61dmin")
    assert hits(RouteMatch(path="/a%20b"), target=b"/a%20b")


def test_regex_must_match_the_whole_path() -> None:
    m = RouteMatch(regex=r"/users/\d+")
    assert hits(m, target=b"/users/42")
    assert hits(m, target=b"/users/42?tab=1")
    assert not hits(m, target=b"/users/42/posts")  # search() would accept this
    assert not hits(m, target=b"/v1/users/42")
    assert not hits(m, target=b"/users/")


def test_regex_with_non_ascii_literal_matches_its_utf8_bytes() -> None:
    assert hits(RouteMatch(headers=(vm("x-name", regex="caf(é|e)"),)), headers=[(b"X-Name", "café".encode())])


def test_regex_is_compiled_once_and_never_at_match_time(monkeypatch: pytest.MonkeyPatch) -> None:
    m = compile_match(
        RouteMatch(regex=r"/v\d+/(a|b)+", headers=(vm("x-v", regex=r"\d+"),), query=(vm("q", regex="z+"),))
    )

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("regex compiled while matching")

    monkeypatch.setattr(re, "compile", no_compile)
    monkeypatch.setattr(re, "_compile", no_compile)
    request = {"target": b"/v1/abab?q=zz", "headers": [(b"X-V", b"7")]}
    assert hits(m, **request)
    long_miss = b"/v1/" + b"ab" * 5000 + b"c"  # fails only at the last byte: linear for this pattern
    for _ in range(100):
        assert not hits(m, target=long_miss + b"?q=zz", headers=[(b"X-V", b"7")])
        assert not hits(m, target=b"/v1/ab?q=zy", headers=[(b"X-V", b"7")])


# --- host ----------------------------------------------------------------------------------------


def test_exact_host_is_case_insensitive_and_ignores_the_port() -> None:
    m = compile_match(RouteMatch(host="API.local"))
    assert m.needs_host
    assert hits(m, host=b"api.local")
    assert hits(m, host=b"Api.Local:8080")
    assert hits(m, host=b"api.local:80")
    assert not hits(m, host=b"api.local.evil")
    assert not hits(m, host=b"x.api.local")
    assert not hits(m, host=b"")
    assert not hits(m, host=b"api.local:x")  # malformed port


def test_wildcard_host_matches_subdomains_only() -> None:
    m = RouteMatch(host="*.example.com", prefix="/")
    assert hits(m, host=b"a.example.com")
    assert hits(m, host=b"A.B.Example.COM:8443")
    assert not hits(m, host=b"example.com")
    assert not hits(m, host=b"badexample.com")
    assert not hits(m, host=b"a.example.com.evil")


def test_host_with_port_requires_that_port() -> None:
    m = RouteMatch(host="api.local:8080")
    assert hits(m, host=b"api.local:8080")
    assert hits(m, host=b"API.LOCAL:8080")
    assert not hits(m, host=b"api.local:8081")
    assert not hits(m, host=b"api.local")  # no port means 80
    assert not hits(m, host=b"other:8080")


def test_host_pattern_port_80_matches_a_host_without_port() -> None:
    m = RouteMatch(host="api.local:80")
    assert hits(m, host=b"api.local")
    assert hits(m, host=b"api.local:80")
    assert not hits(m, host=b"api.local:8080")


def test_wildcard_host_with_port() -> None:
    m = RouteMatch(host="*.svc:9000")
    assert hits(m, host=b"a.svc:9000")
    assert not hits(m, host=b"a.svc:9001")
    assert not hits(m, host=b"a.svc")


def test_ipv6_hosts_keep_their_brackets() -> None:
    assert hits(RouteMatch(host="[::1]"), host=b"[::1]:8080")
    assert hits(RouteMatch(host="[::1]"), host=b"[::1]")
    assert hits(RouteMatch(host="[::1]:8080"), host=b"[::1]:8080")
    assert not hits(RouteMatch(host="[::1]:8080"), host=b"[::1]:8081")
    assert not hits(RouteMatch(host="[::1]:8080"), host=b"[::1]")
    assert hits(RouteMatch(host="[FE80::1]"), host=b"[fe80::1]")
    assert not hits(RouteMatch(host="[::1]"), host=b"[::2]")


def test_invalid_host_ports_are_rejected_at_compile_time() -> None:
    for host in ("api:x", "api:0", "api:65536", "api:123456"):
        with pytest.raises(ValueError, match="invalid port"):
            compile_match(RouteMatch(host=host))


# --- methods -------------------------------------------------------------------------------------


def test_methods() -> None:
    m = RouteMatch(methods=("GET", "HEAD"))
    assert hits(m, method=b"GET")
    assert hits(m, method=b"HEAD")
    assert not hits(m, method=b"POST")
    assert not hits(m, method=b"get")  # methods are case-sensitive


# --- headers -------------------------------------------------------------------------------------


def test_header_exact_with_case_insensitive_name() -> None:
    m = RouteMatch(headers=(vm("X-Tenant", exact="acme"),))
    assert hits(m, headers=[(b"x-tenant", b"acme")])
    assert hits(m, headers=[(b"X-TENANT", b"acme")])
    assert hits(m, headers=[(b"X-Tenant", b"acme \t")])  # trailing whitespace is not part of the value
    assert not hits(m, headers=[(b"X-Tenant", b"Acme")])  # values are case-sensitive
    assert not hits(m, headers=[(b"X-Tenant", b"acme2")])
    assert not hits(m, headers=[(b"X-Tenants", b"acme")])
    assert not hits(m, headers=[])


def test_header_regex_is_a_full_match() -> None:
    m = RouteMatch(headers=(vm("x-version", regex=r"v[23]"),))
    assert hits(m, headers=[(b"X-Version", b"v2")])
    assert not hits(m, headers=[(b"X-Version", b"v22")])
    assert not hits(m, headers=[(b"X-Version", b"xv2")])
    assert not hits(m, headers=[])


def test_header_presence() -> None:
    present = RouteMatch(headers=(vm("authorization"),))
    present_true = RouteMatch(headers=(vm("authorization", present=True),))
    absent = RouteMatch(headers=(vm("authorization", present=False),))
    for m in (present, present_true):
        assert hits(m, headers=[(b"Authorization", b"Bearer x")])
        assert hits(m, headers=[(b"AUTHORIZATION", b"")])  # an empty value is present
        assert not hits(m, headers=[(b"Accept", b"*/*")])
    assert hits(absent, headers=[(b"Accept", b"*/*")])
    assert hits(absent, headers=[])
    assert not hits(absent, headers=[(b"authorization", b"")])


def test_repeated_header_matches_on_any_occurrence() -> None:
    headers = [(b"X-Group", b"a"), (b"Accept", b"*/*"), (b"x-group", b"b")]
    assert hits(RouteMatch(headers=(vm("x-group", exact="a"),)), headers=headers)
    assert hits(RouteMatch(headers=(vm("x-group", exact="b"),)), headers=headers)
    assert hits(RouteMatch(headers=(vm("x-group", regex="[b-z]"),)), headers=headers)
    assert not hits(RouteMatch(headers=(vm("x-group", exact="c"),)), headers=headers)
    # The value is the whole field line: not split on commas.
    assert not hits(RouteMatch(headers=(vm("x-group", exact="a"),)), headers=[(b"X-Group", b"a, b")])


def test_every_header_condition_must_hold() -> None:
    m = RouteMatch(headers=(vm("x-tenant", exact="acme"), vm("x-canary"), vm("x-debug", present=False)))
    good = [(b"X-Tenant", b"acme"), (b"X-Canary", b"1")]
    assert hits(m, headers=good)
    assert not hits(m, headers=good[:1])
    assert not hits(m, headers=good[1:])
    assert not hits(m, headers=[*good, (b"X-Debug", b"1")])


# --- query ---------------------------------------------------------------------------------------


def test_query_exact_is_percent_decoded() -> None:
    m = RouteMatch(query=(vm("v", exact="a b"),))
    assert hits(m, target=b"/?v=a%20b")
    assert hits(m, target=b"/p?x=1&v=a+b")
    assert not hits(m, target=b"/?v=a%2520b")  # decoded once
    assert not hits(m, target=b"/?v=ab")
    assert not hits(m, target=b"/")
    assert hits(RouteMatch(query=(vm("q", exact="✓"),)), target=b"/?q=%E2%9C%93")


def test_query_names_are_case_sensitive_and_decoded() -> None:
    m = RouteMatch(query=(vm("debug"),))
    assert hits(m, target=b"/?debug")
    assert hits(m, target=b"/?debug=")
    assert hits(m, target=b"/?d%65bug=1")
    assert not hits(m, target=b"/?Debug=1")
    assert not hits(m, target=b"/?debugger=1")


def test_query_regex_presence_and_repeats() -> None:
    regex = RouteMatch(query=(vm("id", regex=r"\d+"),))
    assert hits(regex, target=b"/?id=42")
    assert not hits(regex, target=b"/?id=42x")
    assert hits(regex, target=b"/?id=x&id=7")  # any occurrence
    absent = RouteMatch(query=(vm("dry_run", present=False),))
    assert hits(absent, target=b"/?x=1")
    assert hits(absent, target=b"/")
    assert not hits(absent, target=b"/?x=1&dry_run")
    both = RouteMatch(query=(vm("a", exact="1"), vm("b", exact="2")))
    assert hits(both, target=b"/?b=2&a=1")
    assert not hits(both, target=b"/?a=1")


def test_query_is_not_parsed_by_routes_without_query_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(query: bytes) -> list[tuple[bytes, bytes]]:
        raise AssertionError("query parsed")

    monkeypatch.setattr(route_match, "parse_query", no_parse)
    assert hits(
        RouteMatch(prefix="/", headers=(vm("x"),), methods=("GET",)), target=b"/?a=1", headers=[(b"X", b"")]
    )


# --- combinations ---------------------------------------------------------------------------------


def test_all_conditions_together() -> None:
    m = RouteMatch(
        host="*.shop.local:8080",
        prefix="/api/",
        methods=("POST",),
        headers=(vm("content-type", regex=r"application/json(;.*)?"),),
        query=(vm("dry_run", present=False),),
    )
    good: dict[str, object] = {
        "host": b"eu.shop.local:8080",
        "target": b"/api/orders?x=1",
        "method": b"POST",
        "headers": [(b"Content-Type", b"application/json; charset=utf-8")],
    }
    assert hits(m, **good)
    for key, bad in (
        ("host", b"eu.shop.local:8081"),
        ("host", b"shop.local:8080"),
        ("target", b"/web/orders"),
        ("target", b"/api/orders?dry_run=1"),
        ("method", b"GET"),
        ("headers", [(b"Content-Type", b"text/plain")]),
        ("headers", []),
    ):
        assert not hits(m, **{**good, key: bad}), (key, bad)


def test_host_with_exact_path_and_host_with_regex() -> None:
    exact = RouteMatch(host="api.local", path="/status")
    assert hits(exact, host=b"api.local:1", target=b"/status?x")
    assert not hits(exact, host=b"api.local", target=b"/status/x")
    assert not hits(exact, host=b"web.local", target=b"/status")
    regex = RouteMatch(host="*.local", regex="/v[0-9]/.*")
    assert hits(regex, host=b"a.local", target=b"/v1/x")
    assert not hits(regex, host=b"a.remote", target=b"/v1/x")
    assert not hits(regex, host=b"a.local", target=b"/v10/x")


def test_common_routes_get_the_specialised_matchers() -> None:
    # The hot path's promise: prefix-only and host+prefix routes do one or two comparisons, no loop.
    assert type(compile_match(RouteMatch(prefix="/"))).__name__ == "_Prefix"
    assert type(compile_match(RouteMatch(path="/x"))).__name__ == "_Path"
    assert type(compile_match(RouteMatch(host="a", prefix="/"))).__name__ == "_HostPrefix"
    assert type(compile_match(RouteMatch(host="a"))).__name__ == "_HostPrefix"
    assert type(compile_match(RouteMatch(host="*.a", prefix="/"))).__name__ == "_SuffixPrefix"
    assert type(compile_match(RouteMatch(host="a:81", prefix="/"))).__name__ == "_AllOf"
    assert not compile_match(RouteMatch(prefix="/", headers=(vm("x"),))).needs_host


def test_invalid_regex_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        compile_match(RouteMatch(regex="(unclosed"))
    with pytest.raises(ValueError, match="invalid regular expression"):
        compile_match(RouteMatch(headers=(vm("x", regex="caf\\u00e9"),)))  # no \u escapes in bytes patterns


# --- config validation agrees with the compiler ---------------------------------------------------


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("api.local", None),
        ("*.api.local:8080", None),
        ("[::1]", None),
        ("[::1]:65535", None),
        ("api:0", "the port must be 1-65535"),
        ("api:65536", "the port must be 1-65535"),
        ("api:http", "the port must be 1-65535"),
        ("api:", "the port must be 1-65535"),
        ("::1", "an IPv6 address needs brackets ('[::1]:8080')"),
        ("a.*.com", "'*.' is allowed only as a prefix"),
    ],
)
def test_validation_rejects_the_hosts_the_compiler_cannot_use(host: str, problem: str | None) -> None:
    errors = _route_errors(f"host: '{host}'")
    if problem is None:
        assert errors == []
        compile_match(RouteMatch(host=host))
    else:
        assert errors == [f"listeners[0].routes[0].match.host: invalid host {host!r}: {problem}"]


def test_validation_rejects_regexes_that_do_not_compile_for_bytes() -> None:
    (error,) = _route_errors(r"headers: [{name: x, regex: 'caf\u00e9'}]")
    assert error.startswith(r"listeners[0].routes[0].match.headers[0].regex: invalid regular expression")
    assert _route_errors(r"regex: '/caf(é|e)/\d+'") == []


def _route_errors(match: str) -> list[str]:
    text = (
        "service: s\nclusters: [{name: app, endpoints: [127.0.0.1:8080]}]\n"
        "listeners:\n  - {name: in, address: '0.0.0.0:15006', "
        f"routes: [{{cluster: app, match: {{{match}}}}}]}}\n"
    )
    try:
        load_config_text(text, env={})
    except ConfigError as exc:
        return exc.errors
    return []
