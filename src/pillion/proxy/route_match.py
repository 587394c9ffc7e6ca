"""Compiled route matching: a route's `match` conditions turned, once per config, into one small object.

Theory of operation: `compile_match` looks at which conditions a `RouteMatch` sets and picks the cheapest
matcher that checks exactly those. The common routes (a path prefix or an exact path, optionally with a
host that has no port) get a dedicated class whose `matches` is one or two byte comparisons, cheaper than a
generic loop. Any other combination gets `_AllOf`, a tuple of checks run cheapest first (path, host, port,
method, path regex, headers, query) that stops at the first failure. Everything derivable from the config
is derived here: byte strings, lower-cased header names, regexes compiled for bytes. Per request, the
caller computes the host key (`host_key`: lower-cased, port removed) and the path (`split_target`: query
removed) once and hands both to every route's matcher; only matchers with query conditions parse the query
string, and only matchers with header conditions walk the headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final, Protocol
from urllib.parse import unquote_to_bytes

from pillion.config.model import RouteMatch, ValueMatch


class RequestView(Protocol):
    """What matching reads from a request, as received."""

    @property
    def method(self) -> bytes: ...

    @property
    def host(self) -> bytes:
        """The raw Host header value: may carry a port, may be empty."""
        ...

    @property
    def target(self) -> bytes:
        """The raw request-target, query string included."""
        ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """Every header field in arrival order, names as received (any case)."""
        ...


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """`(path, query)` of a request-target; the query is `b""` when there is none."""
    q = target.find(b"?")
    if q < 0:
        return target, b""
    return target[:q], target[q + 1 :]


def host_key(raw_host: bytes) -> tuple[bytes, int | None]:
    """`(host, port)` of a Host header value: the host lower-cased without its port, the port or None.

    IPv6 literals keep their brackets (`[::1]:80` gives `(b"[::1]", 80)`). An empty port (`api:`) counts
    as none. A port that is not a number (`api:x`) is not split off, so the host matches no route's host.
    """
    host = raw_host.strip(b" \t").lower()  # llhttp keeps trailing whitespace; it is not part of the value
    colon = host.rfind(b":")
    if colon < 0 or colon < host.rfind(b"]"):
        return host, None
    port = host[colon + 1 :]
    if port.isdigit() and len(port) <= 5:
        return host[:colon], int(port)
    if not port:
        return host[:colon], None
    return host, None


# Sought by int value: `b"%" in data` first tries its operand as an int (a TypeError built and dropped).
_PERCENT: Final = ord("%")
_PLUS: Final = ord("+")


def parse_query(query: bytes) -> list[tuple[bytes, bytes]]:
    """The `name=value` pairs of a query string, percent-decoded, `+` read as a space (as HTML forms
    send it). A part without `=` has an empty value; empty parts are skipped."""
    pairs: list[tuple[bytes, bytes]] = []
    for part in query.split(b"&"):  # bounded: the query's length bounds the parts
        if part:
            name, _, value = part.partition(b"=")
            if _PERCENT in part or _PLUS in part:
                name, value = _unquote(name), _unquote(value)
            pairs.append((name, value))
    return pairs


def _unquote(text: bytes) -> bytes:
    if _PLUS in text:
        text = text.replace(b"+", b" ")
    return unquote_to_bytes(text) if _PERCENT in text else text


class Matcher:
    """A compiled `RouteMatch`. `needs_host` is False when `matches` never reads its `host` argument, so
    a caller whose routes all say so can skip computing it."""

    __slots__ = ("needs_host",)

    def __init__(self, needs_host: bool) -> None:
        self.needs_host = needs_host

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        """Whether `req` meets every condition. `host` is `host_key(req.host)[0]` and `path` is
        `split_target(req.target)[0]`, computed once per request by the caller."""
        raise NotImplementedError


class _Always(Matcher):
    __slots__ = ()

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        return True


class _Prefix(Matcher):
    __slots__ = ("prefix",)

    def __init__(self, prefix: bytes) -> None:
        super().__init__(needs_host=False)
        self.prefix = prefix

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        return path.startswith(self.prefix)


class _Path(Matcher):
    __slots__ = ("path",)

    def __init__(self, path: bytes) -> None:
        super().__init__(needs_host=False)
        self.path = path

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        return path == self.path


class _HostPrefix(Matcher):
    """Exact host (any port) and a path prefix, which may be empty."""

    __slots__ = ("host", "prefix")

    def __init__(self, host: bytes, prefix: bytes) -> None:
        super().__init__(needs_host=True)
        self.host = host
        self.prefix = prefix

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        return host == self.host and path.startswith(self.prefix)


class _SuffixPrefix(Matcher):
    """Wildcard host (any port) and a path prefix, which may be empty."""

    __slots__ = ("prefix", "suffix")

    def __init__(self, suffix: bytes, prefix: bytes) -> None:
        super().__init__(needs_host=True)
        self.suffix = suffix
        self.prefix = prefix

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        return host.endswith(self.suffix) and path.startswith(self.prefix)


Check = Callable[[RequestView, bytes, bytes], bool]


class _AllOf(Matcher):
    """Any other combination: every check must hold, tried in order."""

    __slots__ = ("checks",)

    def __init__(self, checks: tuple[Check, ...], needs_host: bool) -> None:
        super().__init__(needs_host)
        self.checks = checks

    def matches(self, req: RequestView, host: bytes, path: bytes) -> bool:
        for check in self.checks:  # noqa: SIM110 (all() over a generator costs a frame per call)
            if not check(req, host, path):
                return False
        return True


class _ValueTest:
    """One header or query `ValueMatch`, judged on every value its name had in the request."""

    __slots__ = ("exact", "fullmatch", "name", "present")

    def __init__(self, m: ValueMatch, name: bytes) -> None:
        self.name = name
        self.present = m.present is not False
        self.exact = m.exact.encode() if m.exact is not None else None
        self.fullmatch = _compile(m.regex).fullmatch if m.regex is not None else None

    def holds(self, values: list[bytes] | None) -> bool:
        if values is None:
            return not self.present
        if not self.present:
            return False
        if self.exact is not None:
            return self.exact in values  # any occurrence
        fullmatch = self.fullmatch
        if fullmatch is not None:
            for value in values:  # noqa: SIM110 (all() over a generator costs a frame per call)
                if fullmatch(value) is not None:
                    return True
            return False
        return True


def compile_match(match: RouteMatch) -> Matcher:
    """The fastest matcher for the conditions `match` sets.

    Raises ValueError for what config validation rejects (a host port that is not a number, a regex
    that does not compile for bytes), so it never sees valid config fail.
    """
    host: bytes | None = None
    suffix = False
    port: int | None = None
    if match.host is not None:
        host, port = host_key(match.host.encode())
        if b":" in host.removeprefix(b"[").split(b"]", 1)[-1] or (port is not None and not 0 < port < 65536):
            raise ValueError(f"invalid port in host {match.host!r}")
        suffix = host.startswith(b"*.")
        if suffix:
            host = host[1:]  # keep the dot: `*.a.com` matches `x.a.com`, never `xa.com` or `a.com`
    prefix = match.prefix.encode() if match.prefix is not None else None
    exact = match.path.encode() if match.path is not None else None
    plain = match.regex is None and not match.methods and not match.headers and not match.query
    if plain and port is None and (exact is None or host is None):
        if host is None:
            if exact is not None:
                return _Path(exact)
            return _Always(needs_host=False) if prefix is None else _Prefix(prefix)
        if suffix:
            return _SuffixPrefix(host, prefix or b"")
        return _HostPrefix(host, prefix or b"")
    checks: list[Check] = []
    if prefix is not None:
        checks.append(_prefix_check(prefix))
    if exact is not None:
        checks.append(_path_check(exact))
    if host is not None:
        checks.append(_suffix_check(host) if suffix else _host_check(host))
    if port is not None:
        checks.append(_port_check(port))
    if match.methods:
        checks.append(_methods_check(frozenset(m.encode() for m in match.methods)))
    if match.regex is not None:
        checks.append(_regex_check(_compile(match.regex)))
    if match.headers:
        checks.append(_headers_check(tuple(_ValueTest(m, m.name.lower().encode()) for m in match.headers)))
    if match.query:
        checks.append(_query_check(tuple(_ValueTest(m, m.name.encode()) for m in match.query)))
    return _AllOf(tuple(checks), needs_host=host is not None)


def _compile(pattern: str) -> re.Pattern[bytes]:
    # Matched against raw bytes: the pattern's literal characters are encoded as UTF-8, like the request.
    try:
        return re.compile(pattern.encode())
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _prefix_check(prefix: bytes) -> Check:
    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return path.startswith(prefix)

    return check


def _path_check(exact: bytes) -> Check:
    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return path == exact

    return check


def _host_check(name: bytes) -> Check:
    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return host == name

    return check


def _suffix_check(suffix: bytes) -> Check:
    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return host.endswith(suffix)

    return check


def _port_check(port: int) -> Check:
    # A Host header without a port means the default one; plain HTTP only, so 80.
    default_ok = port == 80

    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        got = host_key(req.host)[1]
        return got == port or (got is None and default_ok)

    return check


def _methods_check(methods: frozenset[bytes]) -> Check:
    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return req.method in methods

    return check


def _regex_check(pattern: re.Pattern[bytes]) -> Check:
    fullmatch = pattern.fullmatch

    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        return fullmatch(path) is not None

    return check


def _headers_check(tests: tuple[_ValueTest, ...]) -> Check:
    names = frozenset(t.name for t in tests)
    lengths = frozenset(len(n) for n in names)

    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        # One pass over the headers, lower-casing only names of a wanted length.
        found: dict[bytes, list[bytes]] = {}
        for name, value in req.headers:
            if len(name) in lengths:
                lname = name.lower()
                if lname in names:
                    stripped = value.rstrip(b" \t")  # llhttp keeps trailing whitespace
                    values = found.get(lname)
                    if values is None:
                        found[lname] = [stripped]
                    else:
                        values.append(stripped)
        for test in tests:  # noqa: SIM110 (all() over a generator costs a frame per call)
            if not test.holds(found.get(test.name)):
                return False
        return True

    return check


def _query_check(tests: tuple[_ValueTest, ...]) -> Check:
    names = frozenset(t.name for t in tests)

    def check(req: RequestView, host: bytes, path: bytes) -> bool:
        target = req.target
        q = target.find(b"?")
        found: dict[bytes, list[bytes]] = {}
        if q >= 0:
            for name, value in parse_query(target[q + 1 :]):
                if name in names:
                    values = found.get(name)
                    if values is None:
                        found[name] = [value]
                    else:
                        values.append(value)
        for test in tests:  # noqa: SIM110 (all() over a generator costs a frame per call)
            if not test.holds(found.get(test.name)):
                return False
        return True

    return check
