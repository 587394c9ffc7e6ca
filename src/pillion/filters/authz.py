"""Authorization: who may call what, from the caller's SPIFFE ID and the request.

Theory of operation: a policy (a listener's `authorization`, or a route's own) compiles into rules, each
a caller test and a request matcher built by the routing code (proxy/route_match.py), so a rule's
`match` means exactly what a route's `match` means. Rules run in order and the first that matches
decides; when none does, the policy's default does. The caller is the SPIFFE ID the listener verified
on the connection's mTLS certificate (None for a plaintext caller), so a deny costs no I/O and a request
that is refused never reaches a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from pillion.config.model import Authorization, AuthzRule
from pillion.proxy.route_match import RequestView, compile_match, host_key
from pillion.telemetry.stats import CounterFamily, Registry


@dataclass(slots=True)
class AuthzStats:
    denied: CounterFamily

    @classmethod
    def declare(cls, registry: Registry) -> AuthzStats:
        return cls(
            denied=registry.counter(
                "pillion_authz_denied_total",
                "Requests refused with 403 by an authorization policy.",
                ("listener", "route"),
            )
        )


class _Rule:
    __slots__ = ("allow", "authenticated", "domains", "ids", "matcher", "prefixes")

    def __init__(self, rule: AuthzRule) -> None:
        source = rule.source
        self.allow = rule.action == "allow"
        self.ids = frozenset(source.spiffe_ids)
        self.prefixes = source.spiffe_prefixes
        self.domains = frozenset(source.trust_domains)
        self.authenticated = source.authenticated
        self.matcher = compile_match(rule.match)

    def caller_matches(self, peer: str | None) -> bool:
        if self.authenticated is not None and self.authenticated != (peer is not None):
            return False
        if not (self.ids or self.prefixes or self.domains):
            return True
        if peer is None:
            return False
        return (
            peer in self.ids
            or any(peer.startswith(p) for p in self.prefixes)
            or peer.removeprefix("spiffe://").split("/", 1)[0] in self.domains
        )


class Authorizer:
    """The compiled policy of one route."""

    __slots__ = ("_default_allow", "_needs_host", "_rules")

    def __init__(self, config: Authorization) -> None:
        self._rules = tuple(_Rule(r) for r in config.rules)
        self._default_allow = config.default == "allow"
        self._needs_host = any(r.matcher.needs_host for r in self._rules)

    def decide(self, peer: str | None, req: RequestView) -> str | None:
        """None when the request may go on; else the reason for its 403."""
        target = req.target
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        host = host_key(req.host)[0] if self._needs_host else b""
        for rule in self._rules:
            if rule.caller_matches(peer) and rule.matcher.matches(req, host, path):
                return None if rule.allow else "forbidden"
        return None if self._default_allow else "forbidden_by_default"
