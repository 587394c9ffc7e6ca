"""The authorization policy's decisions (pillion.filters.authz), without sockets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from pillion.config import load_config_text
from pillion.filters.authz import Authorizer

A = "spiffe://example.org/ns/prod/sa/a"


@dataclass
class Req:
    method: bytes = b"GET"
    host: bytes = b"b.example:80"
    target: bytes = b"/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def policy(**authz: Any) -> Authorizer:
    doc = {
        "service": "t",
        "listeners": [
            {"name": "i", "address": "127.0.0.1:1", "authorization": authz, "routes": [{"cluster": "c"}]}
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2"]}],
    }
    config = load_config_text(json.dumps(doc)).listeners[0].authorization
    assert config is not None
    return Authorizer(config)


@pytest.mark.parametrize(
    ("source", "peer", "allowed"),
    [
        ({"spiffe_ids": [A]}, A, True),
        ({"spiffe_ids": [A]}, "spiffe://example.org/ns/prod/sa/b", False),
        ({"spiffe_prefixes": ["spiffe://example.org/ns/prod/"]}, A, True),
        ({"spiffe_prefixes": ["spiffe://example.org/ns/dev/"]}, A, False),
        ({"trust_domains": ["example.org"]}, A, True),
        ({"trust_domains": ["example.org"]}, "spiffe://example.org.evil/ns/a", False),
        ({"trust_domains": ["example.org"]}, None, False),
        ({"authenticated": True}, A, True),
        ({"authenticated": True}, None, False),
        ({"authenticated": False}, None, True),
        ({"authenticated": False}, A, False),
        ({}, None, True),
    ],
)
def test_sources(source: dict[str, Any], peer: str | None, allowed: bool) -> None:
    authz = policy(rules=[{"source": source}])
    assert (authz.decide(peer, Req()) is None) is allowed


def test_first_matching_rule_decides_then_the_default() -> None:
    authz = policy(
        default="allow",
        rules=[
            {"action": "deny", "match": {"methods": ["DELETE"]}},
            {
                "action": "allow",
                "match": {"prefix": "/admin", "headers": [{"name": "x-role", "exact": "ops"}]},
            },
            {"action": "deny", "match": {"prefix": "/admin"}},
        ],
    )
    assert authz.decide(A, Req(method=b"DELETE")) == "forbidden"
    assert authz.decide(A, Req(target=b"/admin?x=1", headers=[(b"X-Role", b"ops")])) is None
    assert authz.decide(A, Req(target=b"/admin", headers=[(b"x-role", b"dev")])) == "forbidden"
    assert authz.decide(None, Req(target=b"/public")) is None


def test_invalid_identities_are_config_errors() -> None:
    from pillion.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        policy(
            rules=[{"source": {"spiffe_ids": ["spiffe://Example.org/x"], "spiffe_prefixes": ["http://x"]}}]
        )
    text = "\n".join(caught.value.errors)
    assert "listeners[0].authorization.rules[0].source.spiffe_ids[0]" in text
    assert "listeners[0].authorization.rules[0].source.spiffe_prefixes[0]" in text
