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
from pillion.config.model import Address, Config, Listener, Route

# Metric-label and DNS-label friendly: letters, digits, `.`, `-`, `_`; alphanumeric at both ends.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_NAME_RULE = "use letters, digits, '.', '-' or '_', starting and ending with a letter or digit, at most 63"
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


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
    listeners = tuple(
        _check_listener(listener, item("listeners", i), clusters, errors)
        for i, listener in enumerate(cfg.listeners)
    )
    _unique([li.name for li in cfg.listeners], "listeners", "listener", errors)
    ready = cfg.admin.ready_check
    if ready is not None:
        path = "admin.ready_check"
        _check_reference(ready.cluster, child(path, "cluster"), clusters, errors)
        _check_path(ready.path, child(path, "path"), errors)
        if ready.timeout <= 0:
            errors.append(at(child(path, "timeout"), "must be greater than 0"))
    sockets = [("admin.address", cfg.admin.address)]
    sockets += [(child(item("listeners", i), "address"), li.address) for i, li in enumerate(cfg.listeners)]
    _check_collisions(sockets, errors)
    if not cfg.access_log.path:
        errors.append(at("access_log.path", "must not be empty (use '-' for standard output)"))
    return replace(cfg, listeners=listeners), errors


def _check_listener(listener: Listener, path: str, clusters: Sequence[str], errors: list[str]) -> Listener:
    routes = tuple(
        _check_route(route, item(child(path, "routes"), i), i, clusters, errors)
        for i, route in enumerate(listener.routes)
    )
    _check_name(listener.name, child(path, "name"), errors)
    _unique([r.name for r in routes], child(path, "routes"), "route", errors)
    return replace(listener, routes=routes)


def _check_route(route: Route, path: str, index: int, clusters: Sequence[str], errors: list[str]) -> Route:
    _check_reference(route.cluster, child(path, "cluster"), clusters, errors)
    match, match_path = route.match, child(path, "match")
    if match.prefix is not None and match.path is not None:
        errors.append(at(match_path, "set 'prefix' or 'path', not both"))
    if match.prefix is not None:
        _check_path(match.prefix, child(match_path, "prefix"), errors)
    if match.path is not None:
        _check_path(match.path, child(match_path, "path"), errors)
    if match.host is not None:
        host = match.host.removeprefix("*.")
        if not host or "*" in host:
            problem = f"invalid host {match.host!r}: '*.' is allowed only as a prefix"
            errors.append(at(child(match_path, "host"), problem))
    if route.name:
        _check_name(route.name, child(path, "name"), errors)
        return route
    return replace(route, name=f"route{index}")


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
