"""Cross-reference checks: rules that span fields, run once the structure has converted cleanly.

Theory of operation: the converter guarantees types; this module checks meaning. Names must be unique
and well formed (they become metric labels), references must name something that exists (with a
did-you-mean), route matches must be coherent, and no two sockets may bind the same port. It also fills
in defaults that depend on position (a route's name is `route<index>`), returning a new frozen `Config`
via `dataclasses.replace`. Like the converter it collects every problem rather than stopping at one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from pillion.config.errors import at, child, item, suggest
from pillion.config.model import (
    AccessLog,
    Address,
    Authorization,
    Cluster,
    Config,
    Listener,
    MergeApp,
    ReadyCheck,
    Route,
    RouteMatch,
    ValueMatch,
)

# Metric-label and DNS-label friendly: letters, digits, `.`, `-`, `_`; alphanumeric at both ends.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_NAME_RULE = "use letters, digits, '.', '-' or '_', starting and ending with a letter or digit, at most 63"
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: header names and methods
# Framing and hop-by-hop fields are Pillion's to write: a route's header edit must not add or remove them
# (removing a response's content-length leaves its body unframed; adding one to a request smuggles).
_MANAGED_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)


def check(cfg: Config) -> tuple[Config, list[str]]:
    """`cfg` with position-dependent defaults filled in, and every cross-reference problem found."""
    errors: list[str] = []
    _check_name(cfg.service, "service", errors)
    clusters = _unique([c.name for c in cfg.clusters], "clusters", "cluster", errors)
    for i, cluster in enumerate(cfg.clusters):
        path = item("clusters", i)
        if not cluster.endpoints:
            errors.append(at(child(path, "endpoints"), "a cluster needs at least one endpoint"))
        if cluster.connect_timeout <= 0:
            errors.append(at(child(path, "connect_timeout"), "must be greater than 0"))
        _check_cluster(cluster, path, errors)
    listeners = tuple(
        _check_listener(listener, item("listeners", i), clusters, errors)
        for i, listener in enumerate(cfg.listeners)
    )
    _check_tls(cfg, errors)
    _unique([li.name for li in cfg.listeners], "listeners", "listener", errors)
    for path, app in (
        ("admin.ready_check", cfg.admin.ready_check),
        ("metrics.merge_app", cfg.metrics.merge_app),
    ):
        if app is not None:
            _check_app_request(app, path, clusters, errors)
    sockets = [("admin.address", cfg.admin.address)]
    sockets += [(child(item("listeners", i), "address"), li.address) for i, li in enumerate(cfg.listeners)]
    _check_collisions(sockets, errors)
    if cfg.tracing is not None:
        if not 0.0 <= cfg.tracing.sampling <= 1.0:
            errors.append(at("tracing.sampling", "must be between 0 and 1"))
        if not cfg.tracing.otlp_endpoint.startswith(("http://", "https://")):
            errors.append(at("tracing.otlp_endpoint", "must be an http:// or https:// URL"))
    if cfg.overload.max_connections < 0:
        errors.append(at("overload.max_connections", "must be 0 (no limit) or more"))
    if cfg.overload.check_interval <= 0:
        errors.append(at("overload.check_interval", "must be greater than 0"))
    if not cfg.access_log.path:
        errors.append(at("access_log.path", "must not be empty (use '-' for standard output)"))
    _check_access_log(cfg.access_log, errors)
    return replace(cfg, listeners=listeners), errors


def _check_app_request(
    app: ReadyCheck | MergeApp, path: str, clusters: Sequence[str], errors: list[str]
) -> None:
    """A request Pillion itself makes to the app: `cluster` names its first endpoint."""
    _check_reference(app.cluster, child(path, "cluster"), clusters, errors)
    _check_path(app.path, child(path, "path"), errors)
    if app.timeout <= 0:
        errors.append(at(child(path, "timeout"), "must be greater than 0"))


def _check_access_log(access_log: AccessLog, errors: list[str]) -> None:
    if not 0.0 <= access_log.sampling <= 1.0:  # (NaN fails too)
        errors.append(at("access_log.sampling", "must be between 0 and 1"))
    # Checked even with format: json, so a broken template is found before someone switches to it.
    from pillion.telemetry.access_log import compile_text_format

    try:
        compile_text_format(access_log.text_format)
    except ValueError as exc:
        errors.append(at("access_log.text_format", str(exc)))


def _check_listener(listener: Listener, path: str, clusters: Sequence[str], errors: list[str]) -> Listener:
    routes = tuple(
        _check_route(route, item(child(path, "routes"), i), i, clusters, errors)
        for i, route in enumerate(listener.routes)
    )
    _check_name(listener.name, child(path, "name"), errors)
    _unique([r.name for r in routes], child(path, "routes"), "route", errors)
    if listener.protocol == "tcp":
        if listener.cluster is None:
            errors.append(at(child(path, "cluster"), "a tcp listener needs a cluster"))
        else:
            _check_reference(listener.cluster, child(path, "cluster"), clusters, errors)
        if listener.routes:
            errors.append(at(child(path, "routes"), "a tcp listener has no routes (use 'cluster')"))
    elif listener.cluster is not None:
        errors.append(at(child(path, "cluster"), "only tcp listeners take a cluster; http ones use 'routes'"))
    if listener.authorization is not None:
        _check_authorization(listener.authorization, child(path, "authorization"), errors)
    return replace(listener, routes=routes)


def _check_tls(cfg: Config, errors: list[str]) -> None:
    """Every TLS mode has what it needs, and nothing that belongs to another mode."""
    for i, listener in enumerate(cfg.listeners):
        path = child(item("listeners", i), "tls")
        tls = listener.tls
        if tls.mode in ("strict", "permissive") and cfg.identity is None:
            errors.append(at(child(path, "mode"), f"'{tls.mode}' needs a top-level 'identity'"))
        if tls.mode == "simple":
            for name in ("cert", "key"):
                if not getattr(tls, name):
                    errors.append(at(child(path, name), "required when mode is 'simple'"))
        elif tls.cert is not None or tls.key is not None:
            errors.append(at(path, "'cert' and 'key' are for mode 'simple' (mTLS uses 'identity')"))
        if listener.protocol == "tcp" and tls.mode == "permissive":
            errors.append(at(child(path, "mode"), "'permissive' is for http listeners"))
    for i, cluster in enumerate(cfg.clusters):
        path = child(item("clusters", i), "tls")
        ctls = cluster.tls
        if ctls.mode == "mesh" and cfg.identity is None:
            errors.append(at(child(path, "mode"), "'mesh' needs a top-level 'identity'"))
        if ctls.peer is not None:
            if ctls.mode != "mesh":
                errors.append(at(child(path, "peer"), "only for mode 'mesh'"))
            else:
                _check_spiffe_id(ctls.peer, child(path, "peer"), errors)
        for name in ("sni", "ca"):
            if getattr(ctls, name) is not None and ctls.mode != "simple":
                errors.append(at(child(path, name), "only for mode 'simple'"))


def _check_cluster(cluster: Cluster, path: str, errors: list[str]) -> None:
    for i, endpoint in enumerate(cluster.endpoints):
        if not 1 <= endpoint.weight <= 1000:
            errors.append(at(child(item(child(path, "endpoints"), i), "weight"), "must be 1-1000"))
    if cluster.lb == "ring_hash":
        h = cluster.hash_on
        if h.header is not None and h.cookie is not None:
            errors.append(at(child(path, "hash_on"), "set 'header' or 'cookie', not both"))
    if cluster.dns_refresh <= 0:
        errors.append(at(child(path, "dns_refresh"), "must be greater than 0"))
    od = cluster.outlier_detection
    if od is not None:
        od_path = child(path, "outlier_detection")
        if od.max_ejection_percent > 100:
            errors.append(at(child(od_path, "max_ejection_percent"), "must be 0-100"))
        if od.base_ejection <= 0:
            errors.append(at(child(od_path, "base_ejection"), "must be greater than 0"))
    hc = cluster.health_check
    if hc is not None:
        hc_path = child(path, "health_check")
        if hc.path is not None:
            _check_path(hc.path, child(hc_path, "path"), errors)
        for name in ("interval", "timeout"):
            if getattr(hc, name) <= 0:
                errors.append(at(child(hc_path, name), "must be greater than 0"))
        for name in ("healthy_threshold", "unhealthy_threshold"):
            if getattr(hc, name) < 1:
                errors.append(at(child(hc_path, name), "must be at least 1"))
    if cluster.retry_budget.ttl <= 0:
        errors.append(at(child(child(path, "retry_budget"), "ttl"), "must be greater than 0"))


def _check_regex(pattern: str | None, path: str, errors: list[str]) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
        re.compile(pattern.encode())  # what the route matcher runs on raw request bytes (no \u, \N)
    except re.error as exc:
        errors.append(at(path, f"invalid regular expression {pattern!r}: {exc}"))


def _check_value_matches(matches: Sequence[ValueMatch], path: str, errors: list[str]) -> None:
    for i, m in enumerate(matches):
        p = item(path, i)
        if sum(x is not None for x in (m.exact, m.regex, m.present)) > 1:
            errors.append(at(p, "set at most one of 'exact', 'regex' and 'present'"))
        if not m.name:
            errors.append(at(child(p, "name"), "must not be empty"))
        _check_regex(m.regex, child(p, "regex"), errors)


_STATUS_WORDS = ("5xx", "gateway-error", "connect-failure", "reset", "retriable-4xx", "per-try-timeout")


def _check_action(route: Route, path: str, clusters: Sequence[str], errors: list[str]) -> None:
    actions = [
        name
        for name, present in (
            ("cluster", route.cluster is not None),
            ("split", bool(route.split)),
            ("redirect", route.redirect is not None),
            ("direct_response", route.direct_response is not None),
        )
        if present
    ]
    if len(actions) != 1:
        found = ", ".join(repr(a) for a in actions) if actions else "none"
        problem = (
            f"a route needs exactly one of 'cluster', 'split', 'redirect', 'direct_response' (found {found})"
        )
        errors.append(at(path, problem))
    if route.cluster is not None:
        _check_reference(route.cluster, child(path, "cluster"), clusters, errors)
    for i, side in enumerate(route.split):
        _check_reference(side.cluster, child(item(child(path, "split"), i), "cluster"), clusters, errors)
    if route.split and sum(side.weight for side in route.split) == 0:
        errors.append(at(child(path, "split"), "the weights must not all be 0"))
    direct = route.direct_response
    if direct is not None and not 200 <= direct.status <= 599:
        errors.append(at(child(child(path, "direct_response"), "status"), "must be 200-599"))
    redirect = route.redirect
    if redirect is not None:
        r_path = child(path, "redirect")
        if redirect.path is not None and redirect.prefix is not None:
            errors.append(at(r_path, "set 'path' or 'prefix', not both"))
        if redirect.prefix is not None and route.match.prefix is None:
            errors.append(at(child(r_path, "prefix"), "needs the route's 'match.prefix'"))
    if route.prefix_rewrite is not None and route.match.prefix is None:
        errors.append(at(child(path, "prefix_rewrite"), "needs the route's 'match.prefix'"))


def _check_policies(route: Route, path: str, errors: list[str]) -> None:
    retries = route.retries
    if retries is not None:
        r_path = child(path, "retries")
        for i, cond in enumerate(retries.on):
            if cond not in _STATUS_WORDS and not (cond.isdigit() and 100 <= int(cond) <= 599):
                allowed = ", ".join(_STATUS_WORDS)
                errors.append(
                    at(
                        item(child(r_path, "on"), i),
                        f"unknown condition {cond!r}; use {allowed} or a status code",
                    )
                )
        if retries.backoff.base <= 0 or retries.backoff.max < retries.backoff.base:
            errors.append(at(child(r_path, "backoff"), "needs 0 < base <= max"))
    limit = route.rate_limit
    if limit is not None:
        l_path = child(path, "rate_limit")
        if limit.requests_per_second <= 0:
            errors.append(at(child(l_path, "requests_per_second"), "must be greater than 0"))
        if (limit.key == "header") != (limit.header is not None):
            errors.append(at(child(l_path, "header"), "set exactly when 'key' is 'header'"))
    fault = route.fault
    if fault is not None:
        f_path = child(path, "fault")
        for name, part in (("delay", fault.delay), ("abort", fault.abort)):
            if part is not None and part.percent > 100:
                errors.append(at(child(child(f_path, name), "percent"), "must be 0-100"))
        if fault.abort is not None and not 200 <= fault.abort.status <= 599:
            errors.append(at(child(child(f_path, "abort"), "status"), "must be 200-599"))
    for name in ("request_headers_add", "response_headers_add"):
        for i, header in enumerate(getattr(route, name)):
            if not _TOKEN.fullmatch(header.name) or any(c in header.value for c in "\r\n\0"):
                errors.append(
                    at(item(child(path, name), i), f"invalid header {header.name!r}: {header.value!r}")
                )
            elif header.name.lower() in _MANAGED_HEADERS:
                errors.append(at(item(child(path, name), i), f"{header.name!r} is managed by Pillion"))
    for name in ("request_headers_remove", "response_headers_remove"):
        for i, field in enumerate(getattr(route, name)):
            if field.lower() in _MANAGED_HEADERS:
                errors.append(at(item(child(path, name), i), f"{field!r} is managed by Pillion"))


def _check_route(route: Route, path: str, index: int, clusters: Sequence[str], errors: list[str]) -> Route:
    _check_action(route, path, clusters, errors)
    _check_policies(route, path, errors)
    _check_match(route.match, child(path, "match"), errors)
    if route.authorization is not None:
        _check_authorization(route.authorization, child(path, "authorization"), errors)
    if route.name:
        _check_name(route.name, child(path, "name"), errors)
        return route
    return replace(route, name=f"route{index}")


def _check_authorization(authz: Authorization, path: str, errors: list[str]) -> None:
    from pillion.tls.identity import parse_trust_domain  # (no X.509 stack)

    for i, rule in enumerate(authz.rules):
        rule_path = item(child(path, "rules"), i)
        source_path = child(rule_path, "source")
        source = rule.source
        for j, value in enumerate(source.spiffe_ids):
            _check_spiffe_id(value, item(child(source_path, "spiffe_ids"), j), errors)
        for j, value in enumerate(source.spiffe_prefixes):
            if not value.startswith("spiffe://"):
                errors.append(
                    at(item(child(source_path, "spiffe_prefixes"), j), "must start with 'spiffe://'")
                )
        for j, value in enumerate(source.trust_domains):
            try:
                parse_trust_domain(value)
            except ValueError as exc:
                errors.append(at(item(child(source_path, "trust_domains"), j), str(exc)))
        _check_match(rule.match, child(rule_path, "match"), errors)


def _check_spiffe_id(value: str, path: str, errors: list[str]) -> None:
    from pillion.tls.identity import parse_spiffe_id  # (no X.509 stack)

    try:
        parse_spiffe_id(value)
    except ValueError as exc:
        errors.append(at(path, str(exc)))


def _check_match(match: RouteMatch, match_path: str, errors: list[str]) -> None:
    if sum(x is not None for x in (match.prefix, match.path, match.regex)) > 1:
        errors.append(at(match_path, "set one of 'prefix', 'path' and 'regex'"))
    _check_regex(match.regex, child(match_path, "regex"), errors)
    _check_value_matches(match.headers, child(match_path, "headers"), errors)
    _check_value_matches(match.query, child(match_path, "query"), errors)
    for i, method in enumerate(match.methods):
        if not _TOKEN.fullmatch(method) or method != method.upper():
            errors.append(
                at(item(child(match_path, "methods"), i), f"invalid method {method!r} (upper case)")
            )
    if match.prefix is not None:
        _check_path(match.prefix, child(match_path, "prefix"), errors)
    if match.path is not None:
        _check_path(match.path, child(match_path, "path"), errors)
    if match.host is not None:
        _check_host(match.host, child(match_path, "host"), errors)


def _check_host(value: str, path: str, errors: list[str]) -> None:
    host, port = value, None
    colon = value.rfind(":")
    if colon > value.rfind("]"):  # IPv6 literals keep their brackets: `[::1]:8080`
        host, port = value[:colon], value[colon + 1 :]
    host = host.removeprefix("*.")
    if not host or "*" in host:
        errors.append(at(path, f"invalid host {value!r}: '*.' is allowed only as a prefix"))
    elif ":" in host and not (host.startswith("[") and host.endswith("]")):
        errors.append(at(path, f"invalid host {value!r}: an IPv6 address needs brackets ('[::1]:8080')"))
    elif port is not None and not (port.isdigit() and len(port) < 6 and 0 < int(port) < 65536):
        errors.append(at(path, f"invalid host {value!r}: the port must be 1-65535"))


def _check_name(name: str, path: str, errors: list[str]) -> None:
    if not name:
        errors.append(at(path, "must not be empty"))
    elif not _NAME.fullmatch(name):
        errors.append(at(path, f"invalid name {name!r}: {_NAME_RULE} characters"))


def _check_path(value: str, path: str, errors: list[str]) -> None:
    if not value.startswith("/"):
        errors.append(at(path, f"must start with '/', got {value!r}"))


def _check_reference(name: str, path: str, clusters: Sequence[str], errors: list[str]) -> None:
    if name not in clusters:
        errors.append(at(path, f"unknown cluster {name!r}{suggest(name, clusters)}"))


def _unique(names: list[str], path: str, kind: str, errors: list[str]) -> list[str]:
    """`names`, with an error on each repeat pointing at the first occurrence."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            errors.append(
                at(
                    child(item(path, i), "name"),
                    f"duplicate {kind} name {name!r} (first used at {item(path, first[name])})",
                )
            )
        else:
            first[name] = i
    return names


def _check_collisions(sockets: list[tuple[str, Address]], errors: list[str]) -> None:
    # Port 0 asks the kernel for a free port, so it never collides. A wildcard host binds every
    # interface, so it collides with any host on the same port.
    for i, (path, addr) in enumerate(sockets):
        for earlier_path, earlier in sockets[:i]:
            if addr.port == 0 or addr.port != earlier.port:
                continue
            hosts = {addr.host.lower(), earlier.host.lower()}
            if len(hosts) == 1 or hosts & _WILDCARD_HOSTS:
                errors.append(at(path, f"{addr} collides with {earlier_path} ({earlier})"))
                break
