"""Load-balancing policies: which of a cluster's eligible endpoints gets the next request.

Theory of operation: a Balancer is built from the eligible endpoints whenever that set changes (rare:
config, DNS, health), so all the work that can be done ahead goes into building it, and `pick` is a
couple of list lookups. Round robin walks a precomputed interleaved schedule; random and least request
bisect a cumulative weight table; ring hash bisects a sorted ring of stable point hashes. Only ring hash
reads `pick`'s key; the others ignore it. Endpoints are duck-typed (`Balanced`): the balancer only reads
`weight`, `active` (least request) and `label` (ring hash), and never mutates them.
"""

from __future__ import annotations

import random
from _blake2 import blake2b  # not hashlib, which loads OpenSSL (see pillion.tls.loading)
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from math import gcd
from typing import Generic, Protocol, TypeVar

POLICIES = ("round_robin", "least_request", "random", "ring_hash")

# A round-robin period longer than this is scaled down (proportions kept to within 1/8192 of the total):
# the schedule is one list slot per pick of the period, and 1000 endpoints at weight 1000 would be 1M.
MAX_SCHEDULE = 65536
# Ring points per unit of weight, and the ring's size cap (each point is a bisect step's worth of list).
POINTS_PER_WEIGHT = 100
MAX_RING_POINTS = 4096


class Balanced(Protocol):
    """What a balancer reads from an endpoint."""

    @property
    def weight(self) -> int:
        """Relative share of requests, >= 1."""

    @property
    def active(self) -> int:
        """Requests in flight to it right now (least request)."""

    @property
    def label(self) -> str:
        """Stable identity, e.g. `host:port` (ring hash places the endpoint on the ring by it)."""


E = TypeVar("E", bound=Balanced)


def hash_key(data: bytes) -> int:
    """A 64-bit hash of `data`, the same in every process and across restarts (unlike `hash()`)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class Balancer(Generic[E]):
    """Picks endpoints for one eligible set; build a new one when the set changes."""

    __slots__ = ("endpoints",)

    def __init__(self, endpoints: Sequence[E]) -> None:
        self.endpoints: tuple[E, ...] = tuple(endpoints)

    def pick(self, key: int) -> E | None:
        """The endpoint for the next request; `key` (a `hash_key`) matters only to ring hash. None only
        when there are no endpoints."""
        raise NotImplementedError


def make_balancer(policy: str, endpoints: Sequence[E], rng: random.Random | None = None) -> Balancer[E]:
    """A balancer of `policy` (a `Cluster.lb` value) over `endpoints`; `rng` is injectable for tests."""
    if policy not in POLICIES:
        raise ValueError(f"unknown load-balancing policy {policy!r}")
    if not endpoints:
        return _Empty(endpoints)
    rng = rng if rng is not None else random.Random()
    if policy == "round_robin":
        return RoundRobin(endpoints, rng)
    if policy == "least_request":
        return LeastRequest(endpoints, rng)
    if policy == "random":
        return WeightedRandom(endpoints, rng)
    return RingHash(endpoints)


def _weights(endpoints: Sequence[Balanced]) -> list[int]:
    # Config validation keeps weights at 1-1000; a bad one here must not break picking.
    return [max(1, int(e.weight)) for e in endpoints]


class _Empty(Balancer[E]):
    __slots__ = ()

    def pick(self, key: int) -> E | None:
        return None


class RoundRobin(Balancer[E]):
    """Weighted round robin over a precomputed schedule of one period (sum of weights, divided by their
    gcd): every window of a period's length holds each endpoint exactly its weight's share of times.

    The schedule interleaves endpoints rather than grouping them: endpoint i of n takes its k-th turn at
    (k + (i + 1/2) / n) / weight_i of the period (each endpoint's turns evenly spaced, endpoints phased
    apart so light ones do not bunch up; ties by position), so weights 5:1:1 give `a a a b a a c`, never
    five `a` in a row even across the period's wrap. With equal weights it is the endpoints in order, a
    plain rotation. The order cannot break the counts: the schedule holds exactly weight_i turns of i.
    Each balancer starts at a random place in it, so sidecars that start together do not all send their
    first request to the same endpoint.
    """

    __slots__ = ("_next", "_schedule", "_size")

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        super().__init__(endpoints)
        weights = _weights(endpoints)
        divisor = 0
        for w in weights:
            divisor = gcd(divisor, w)
        weights = [w // divisor for w in weights]
        total = sum(weights)
        if total > MAX_SCHEDULE:
            weights = [max(1, round(w * MAX_SCHEDULE / total)) for w in weights]
        n = len(weights)
        turns = sorted(((k + (i + 0.5) / n) / w, i) for i, w in enumerate(weights) for k in range(w))
        self._schedule = [self.endpoints[i] for _, i in turns]
        self._size = len(self._schedule)
        self._next = rng.randrange(self._size)

    def pick(self, key: int) -> E | None:
        i = self._next
        self._next = i + 1 if i + 1 < self._size else 0
        return self._schedule[i]


class WeightedRandom(Balancer[E]):
    """Weighted random: a uniform draw over the total weight, bisected into the cumulative weights."""

    __slots__ = ("_cumulative", "_random", "_total", "_uniform")

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        super().__init__(endpoints)
        weights = _weights(endpoints)
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]
        self._uniform = len(set(weights)) == 1
        self._random = rng.random

    def pick(self, key: int) -> E | None:
        # random() < 1, so random() * n < n: the index is always in range (no rounding up to n).
        if self._uniform:
            return self.endpoints[int(self._random() * len(self.endpoints))]
        return self.endpoints[bisect_right(self._cumulative, self._random() * self._total)]


class LeastRequest(Balancer[E]):
    """Power of two choices: two distinct endpoints at random (weighted by weight when weights differ),
    and the one with fewer requests in flight wins (a tie goes to the first drawn, itself random).

    Two random candidates avoid both the herd that "globally least loaded" causes when many sidecars see
    the same stale picture, and a full scan per request. The second draw is exact, not a retry loop:
    a uniform draw over the total weight minus the first endpoint's, mapped past the first's span.
    """

    __slots__ = ("_cumulative", "_random", "_total", "_uniform", "_weights")

    def __init__(self, endpoints: Sequence[E], rng: random.Random) -> None:
        super().__init__(endpoints)
        self._weights = _weights(endpoints)
        self._cumulative = list(accumulate(self._weights))
        self._total = self._cumulative[-1]
        self._uniform = len(set(self._weights)) == 1
        self._random = rng.random

    def pick(self, key: int) -> E | None:
        endpoints = self.endpoints
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        rand = self._random
        if self._uniform:
            i = int(rand() * n)
            j = int(rand() * (n - 1))
            if j >= i:
                j += 1
        else:
            cumulative = self._cumulative
            i = bisect_right(cumulative, rand() * self._total)
            weight_i = self._weights[i]
            r = rand() * (self._total - weight_i)
            if r >= cumulative[i] - weight_i:  # at or past the start of i's span: skip over it
                r += weight_i
            j = bisect_right(cumulative, r)
            if j == i or j >= n:  # float rounding at the very edge of a span: any other one will do
                j = i + 1 if i + 1 < n else 0
        a = endpoints[i]
        b = endpoints[j]
        return b if b.active < a.active else a


class RingHash(Balancer[E]):
    """Consistent hashing: each endpoint owns points on a 64-bit ring, and a key goes to the owner of
    the first point at or after it (wrapping around). The same key keeps its endpoint while the set
    is unchanged, and removing an endpoint moves only the keys that were on it.

    An endpoint gets `POINTS_PER_WEIGHT` points per unit of weight, scaled down so the ring holds at
    most about `MAX_RING_POINTS` (at least one point each). Point j of an endpoint is
    `hash_key(label + "#" + j)`: it depends on the label alone, so it is the same in every sidecar and
    after restarts. When the cap scales points down, a changed total weight changes every endpoint's
    point count a little, which moves a few keys between endpoints that stayed (as Envoy's ring does).
    """

    __slots__ = ("_hashes", "_owners")

    def __init__(self, endpoints: Sequence[E]) -> None:
        super().__init__(endpoints)
        weights = _weights(endpoints)
        per_weight = min(float(POINTS_PER_WEIGHT), MAX_RING_POINTS / sum(weights))
        points: list[tuple[int, str, int]] = []
        for i, (endpoint, weight) in enumerate(zip(self.endpoints, weights, strict=True)):
            label = endpoint.label
            for j in range(max(1, round(weight * per_weight))):
                points.append((hash_key(f"{label}#{j}".encode()), label, i))
        points.sort()  # a (vanishingly unlikely) hash tie is settled by label, the same everywhere
        self._hashes = [h for h, _, _ in points]
        self._owners = [self.endpoints[i] for _, _, i in points]

    def pick(self, key: int) -> E | None:
        i = bisect_left(self._hashes, key)
        return self._owners[i if i < len(self._owners) else 0]
