from pillion.config.model import RateLimit
from pillion.filters.rate_limit import MAX_KEY_BYTES, RateLimiter, RateLimitStats, retry_after
from pillion.telemetry.stats import Registry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_the_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=2, burst=5), clock)
    assert [limiter.check(b"") for _ in range(5)] == [0.0] * 5
    wait = limiter.check(b"")
    assert abs(wait - 0.5) < 1e-9  # one token at 2/s
    clock.now += 0.2
    assert abs(limiter.check(b"") - 0.3) < 1e-9  # refusals take nothing, the wait shrinks
    clock.now += 0.3
    assert limiter.check(b"") == 0.0
    assert limiter.check(b"") > 0


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=2.5), clock)
    assert [limiter.check(b"") == 0.0 for _ in range(4)] == [True, True, True, False]
    tiny = RateLimiter(RateLimit(requests_per_second=0.1), clock)
    assert tiny.check(b"") == 0.0
    assert abs(tiny.check(b"") - 10.0) < 1e-9


def test_refill_rate_and_the_burst_cap() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=10, burst=3), clock)
    for _ in range(3):
        assert limiter.check(b"") == 0.0
    allowed = 0
    for _ in range(1000):  # 10 s in 10 ms steps, asking every step: 10/s get through
        clock.now += 0.01
        if limiter.check(b"") == 0.0:
            allowed += 1
    assert 99 <= allowed <= 101
    clock.now += 3600  # a long idle refills to the burst, not beyond
    assert sum(limiter.check(b"") == 0.0 for _ in range(10)) == 3


def test_keys_have_their_own_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=2, key="client_address"), clock)
    assert [limiter.check(b"10.0.0.1") for _ in range(2)] == [0.0, 0.0]
    assert limiter.check(b"10.0.0.1") > 0
    assert [limiter.check(b"10.0.0.2") for _ in range(2)] == [0.0, 0.0]
    assert limiter.check(b"10.0.0.2") > 0
    assert len(limiter) == 2


def test_clock_stepping_back_adds_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), clock)
    assert limiter.check(b"") == 0.0
    clock.now -= 50
    assert limiter.check(b"") > 0
    clock.now += 51
    assert limiter.check(b"") == 0.0


def test_key_table_is_bounded_and_drops_the_idlest_when_none_has_refilled() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimit(requests_per_second=1, burst=1, key="header", header="x-user"), clock, 100
    )
    for i in range(100):
        assert limiter.check(b"old-%d" % i) == 0.0
    clock.now += 0.5  # no bucket has refilled yet
    busy = [b"busy-%d" % i for i in range(50)]
    for key in busy:
        assert limiter.check(key) == 0.0
        assert len(limiter) <= 100
    for key in busy:
        assert limiter.check(key) > 0  # the old keys (idle longest) made room; these buckets were kept
    for i in range(10_000):  # a flood of distinct keys never grows the table
        limiter.check(b"flood-%d" % i)
        assert len(limiter) <= 100


def test_refilled_buckets_are_evicted_before_busy_ones() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), clock, 10)
    for i in range(5):
        limiter.check(b"idle-%d" % i)
    clock.now += 10  # the idle buckets refill
    for i in range(5):
        limiter.check(b"busy-%d" % i)
    limiter.check(b"new")  # full table: only the refilled ones go
    assert len(limiter) == 6
    for i in range(5):
        assert limiter.check(b"busy-%d" % i) > 0


def test_long_keys_are_stored_as_a_digest() -> None:
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), FakeClock())
    long_a, long_b = b"a" * 8000, b"a" * 7999 + b"b"
    assert limiter.check(long_a) == 0.0
    assert limiter.check(long_a) > 0
    assert limiter.check(long_b) == 0.0
    assert all(len(k) <= MAX_KEY_BYTES for k in limiter._buckets)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.001) == b"1"
    assert retry_after(1.0) == b"1"
    assert retry_after(1.2) == b"2"
    assert retry_after(float("inf")) == b"86400"
    assert retry_after(float("nan")) == b"86400"


def test_stats_declare_a_per_route_counter() -> None:
    stats = RateLimitStats.declare(Registry())
    child = stats.limited.labels("ingress", "api")
    child.value += 1
    assert stats.limited.labels("ingress", "api").value == 1
