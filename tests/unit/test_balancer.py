import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from pillion.proxy.balancer import (
    MAX_RING_POINTS,
    MAX_SCHEDULE,
    POLICIES,
    Balancer,
    RingHash,
    RoundRobin,
    hash_key,
    make_balancer,
)


@dataclass
class Ep:
    label: str
    weight: int = 1
    active: int = 0


def _eps(*weights: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i}:80", w) for i, w in enumerate(weights)]


def _counts(b: Balancer[Ep], n: int, keys: bool = False) -> Counter[str]:
    out: Counter[str] = Counter()
    for i in range(n):
        ep = b.pick(hash_key(str(i).encode()) if keys else 0)
        assert ep is not None
        out[ep.label] += 1
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_empty_list_picks_none(policy: str) -> None:
    b: Balancer[Ep] = make_balancer(policy, [])
    assert b.pick(0) is None
    assert b.pick(hash_key(b"x")) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_single_endpoint_is_always_picked(policy: str) -> None:
    (only,) = _eps(3)
    b = make_balancer(policy, [only], random.Random(1))
    assert all(b.pick(k) is only for k in range(100))


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="maglev"):
        make_balancer("maglev", _eps(1))


def test_hash_key_is_64_bit_and_stable_across_processes() -> None:
    here = hash_key(b"client-42")
    assert 0 <= here < 2**64
    assert hash_key(b"client-43") != here
    there = subprocess.run(
        [sys.executable, "-c", "from pillion.proxy.balancer import hash_key; print(hash_key(b'client-42'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert int(there.stdout) == here


def test_round_robin_equal_weights_is_a_plain_rotation() -> None:
    eps = _eps(1, 1, 1, 1)
    b = make_balancer("round_robin", eps, random.Random(7))
    picks = [b.pick(0) for _ in range(12)]
    first = eps.index(picks[0])  # type: ignore[arg-type]
    assert picks == [eps[(first + i) % 4] for i in range(12)]


def test_round_robin_starts_at_a_random_place() -> None:
    eps = _eps(1, 1, 1, 1, 1, 1, 1, 1)
    firsts = {make_balancer("round_robin", eps, random.Random(seed)).pick(0) is eps[0] for seed in range(40)}
    assert firsts == {True, False}


def test_round_robin_weights_are_exact_over_any_period_window() -> None:
    b = make_balancer("round_robin", _eps(1, 3), random.Random(3))
    picks = [b.pick(0) for _ in range(4000)]
    counts = Counter(p.label for p in picks if p is not None)
    assert counts == {"10.0.0.0:80": 1000, "10.0.0.1:80": 3000}
    weights = [5, 1, 2]
    b = make_balancer("round_robin", _eps(*weights), random.Random(4))
    picks = [b.pick(0) for _ in range(200)]
    for start in range(len(picks) - 8):  # every window of sum(weights) picks, not only aligned ones
        window = Counter(p.label for p in picks[start : start + 8] if p is not None)
        assert window == {"10.0.0.0:80": 5, "10.0.0.1:80": 1, "10.0.0.2:80": 2}


def test_round_robin_interleaves_rather_than_groups() -> None:
    eps = _eps(5, 1, 1)
    b = RoundRobin(eps, random.Random(0))
    b._next = 0
    order = "".join("abc"[eps.index(b.pick(0))] for _ in range(7))  # type: ignore[arg-type]
    assert order == "aaabaac"
    assert "aaaa" not in order * 2  # three in a row at most, also across the period's wrap


def test_round_robin_common_factor_and_oversized_period() -> None:
    assert len(RoundRobin(_eps(100, 300), random.Random(0))._schedule) == 4  # divided by the gcd
    huge = RoundRobin(_eps(*([1000] * 99 + [999])), random.Random(0))
    assert len(huge._schedule) <= MAX_SCHEDULE + 100
    counts = Counter(e.label for e in huge._schedule)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_random_weights_within_tolerance() -> None:
    counts = _counts(make_balancer("random", _eps(1, 3), random.Random(11)), 4000)
    assert abs(counts["10.0.0.1:80"] / 4000 - 0.75) < 0.05
    counts = _counts(make_balancer("random", _eps(1, 1, 1, 1), random.Random(12)), 4000)
    assert all(abs(c / 4000 - 0.25) < 0.05 for c in counts.values())
    assert len(counts) == 4


def test_least_request_prefers_the_less_loaded() -> None:
    eps = _eps(1, 1, 1, 1)
    eps[0].active = 10
    eps[1].active = 10
    eps[2].active = 10
    b = make_balancer("least_request", eps, random.Random(5))
    counts = _counts(b, 4000)
    # eps[3] wins every pair it is in: 1 - P(not drawn in either of two distinct draws) = 1/2.
    assert abs(counts["10.0.0.3:80"] / 4000 - 0.5) < 0.05
    # The most loaded endpoint is never chosen when the other candidate has less in flight.
    eps[3].active = 0
    eps[2].active = 99
    counts = _counts(b, 4000)
    assert "10.0.0.2:80" not in counts


def test_least_request_two_endpoints_always_takes_the_idler() -> None:
    eps = _eps(1, 1)
    eps[0].active = 3
    b = make_balancer("least_request", eps, random.Random(6))
    assert all(b.pick(0) is eps[1] for _ in range(100))
    weighted = make_balancer("least_request", _eps(1, 9), random.Random(6))
    weighted.endpoints[1].active = 5
    assert all(weighted.pick(0) is weighted.endpoints[0] for _ in range(100))


def test_least_request_equal_load_follows_the_weights() -> None:
    counts = _counts(make_balancer("least_request", _eps(1, 3), random.Random(8)), 4000)
    # Two distinct of two: the tie goes to the first draw, which is weighted 1:3.
    assert abs(counts["10.0.0.1:80"] / 4000 - 0.75) < 0.05
    counts = _counts(make_balancer("least_request", _eps(1, 1, 2), random.Random(9)), 8000)
    assert abs(counts["10.0.0.2:80"] / 8000 - 0.5) < 0.05
    assert abs(counts["10.0.0.0:80"] / 8000 - 0.25) < 0.05


def test_ring_hash_is_sticky_and_spreads_keys() -> None:
    eps = _eps(1, 1, 1, 1, 1)
    b = make_balancer("ring_hash", eps)
    keys = [hash_key(f"client-{i}".encode()) for i in range(1000)]
    first = [b.pick(k) for k in keys]
    assert [b.pick(k) for k in keys] == first
    # A ring built elsewhere (another sidecar, after a restart) from the same labels agrees.
    again = make_balancer("ring_hash", list(reversed(_eps(1, 1, 1, 1, 1))))
    assert [e.label for e in (again.pick(k) for k in keys) if e] == [e.label for e in first if e]
    counts = Counter(e.label for e in first if e)
    assert len(counts) == 5
    assert all(100 < c < 300 for c in counts.values())


def test_ring_hash_removing_an_endpoint_moves_only_its_keys() -> None:
    eps = _eps(1, 1, 1, 1, 1)
    keys = [hash_key(f"client-{i}".encode()) for i in range(1000)]
    before = [make_balancer("ring_hash", eps).pick(k) for k in keys]
    gone = eps[2]
    after = [make_balancer("ring_hash", [e for e in eps if e is not gone]).pick(k) for k in keys]
    moved = 0
    for old, new in zip(before, after, strict=True):
        assert new is not gone
        if old is gone:
            moved += 1
        else:
            assert new is old
    assert 100 < moved < 300


def test_ring_hash_weights_and_size_cap() -> None:
    b = RingHash(_eps(1, 3))
    assert len(b._hashes) == 400
    counts = _counts(b, 4000, keys=True)
    assert abs(counts["10.0.0.1:80"] / 4000 - 0.75) < 0.08
    big = RingHash(_eps(*([1000] * 10)))
    assert len(big._hashes) <= MAX_RING_POINTS + 10
    assert make_balancer("ring_hash", _eps(1)).pick(2**64 - 1) is not None  # wraps past the last point
