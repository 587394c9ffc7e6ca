"""Metrics declared once at startup, updated on the hot path with a few attribute operations.

Theory of operation: a `Registry` holds metric *families* (a name, help text, label names). A family's
`labels(*values)` returns a *child* -- `Counter`, `Gauge` or `Histogram` -- created on first use and cached,
so the same values always give the same object. Hot-path code looks its children up once (when a listener
or cluster is built) and then only touches them: `counter.value += 1`, `histogram.observe(seconds)`. No
locks: everything runs on the event loop thread, and a scrape reads the numbers on that same thread.

Histograms keep *non-cumulative* per-bucket counts (a scan of the bounds, which stops early for the
usual small values, plus a native increment of the bucket hit last, see `Histogram`); the cumulative
`le` series Prometheus wants is computed only when rendering. The total count is the sum of the
buckets, so `observe` does not maintain it separately.

Values that are cheaper to compute at scrape time than to maintain (process memory, open fds, pool sizes)
come from *collectors*: callables the registry runs just before each scrape, which set ordinary children.

Names are checked when declared -- Prometheus syntax, the `pillion_` prefix, and the conventions
`promtool check metrics` lints (counters end in `_total`, base units, snake_case) -- so a bad name fails at
startup instead of producing a scrape that warns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, Literal, TypeVar

__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "CounterFamily",
    "Family",
    "Gauge",
    "GaugeFamily",
    "Histogram",
    "HistogramFamily",
    "Registry",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Kind = Literal["counter", "gauge", "histogram"]

_NAME_RE = re.compile(r"pillion_[a-z0-9_]*[a-z0-9]\Z")
_LABEL_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
# Units promtool's linter wants spelled as base units: it flags abbreviations (`_ms`, `_s`, `_b`) and
# scaled units (`_milliseconds`, `_kilobytes`).
_NON_BASE_UNITS = frozenset(
    ("s", "ms", "us", "ns", "sec", "secs", "b", "kb", "mb", "gb", "tb", "pb", "kib", "mib", "gib", "m", "h",
     "d", "milliseconds", "microseconds", "nanoseconds", "minutes", "hours", "days", "weeks", "kilobytes",
     "megabytes", "gigabytes", "bits", "percent")
)  # fmt: skip
_TYPE_WORDS = frozenset(("counter", "gauge", "histogram", "summary"))


class Counter:
    """A monotonically increasing number. Hot-path code may do `c.value += 1` directly."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n


class Gauge:
    """A number that goes up and down."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n

    def dec(self, n: float = 1) -> None:
        self.value -= n

    def set(self, value: float) -> None:
        self.value = value


class Histogram:
    """A distribution: per-bucket counts (non-cumulative; the last bucket is `+Inf`) and their sum.

    The observations of one histogram mostly land in one bucket (a route's request and response sizes,
    its sub-millisecond durations), so the bucket hit last keeps its new observations in a native int
    (`_hot_n`), folded into the list when another bucket is hit or the counts are read. The list holds
    Python ints: storing `n + 1` there made a new int object each time, about 240 instructions of an
    observation's 360 (callgrind, compiled)."""

    __slots__ = ("_counts", "_hot", "_hot_n", "bounds", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts: list[int] = [0] * (len(bounds) + 1)
        self._hot = 0  # the bucket observed last
        self._hot_n = 0  # its observations not yet in `_counts`
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        # A scan from the smallest bound, not bisect: observations are mostly small (sub-millisecond
        # durations, empty bodies) and stop at the first bounds, and compiled it is a few compares on
        # unboxed floats where bisect_left boxes the value and makes a call. `<=`: Prometheus `le`.
        i = 0
        for bound in self.bounds:
            if value <= bound:
                break
            i += 1
        if i != self._hot:
            self._fold()
            self._hot = i
        self._hot_n += 1
        self.sum += value

    def _fold(self) -> None:
        if self._hot_n:
            counts = self._counts
            # Not `counts[i] += n`: compiled, that is a generic in-place add on Python objects.
            n: int = counts[self._hot]
            counts[self._hot] = n + self._hot_n
            self._hot_n = 0

    @property
    def counts(self) -> list[int]:
        """The per-bucket counts, up to date (the list itself: read it, do not keep it)."""
        self._fold()
        return self._counts

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Counts per bound, cumulative, the last one (`+Inf`) equal to `count`."""
        out: list[int] = []
        running = 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


C = TypeVar("C", Counter, Gauge, Histogram)


class Family(Generic[C]):
    """One metric name with its help text and label names; children are cached per label values."""

    kind: Kind

    def __init__(self, name: str, help: str, labels: Sequence[str], factory: Callable[[], C]) -> None:
        self.name = name
        self.help = help
        self.label_names: tuple[str, ...] = tuple(labels)
        self._factory: Callable[[], C] = factory
        self._children: dict[tuple[str, ...], C] = {}
        if not self.label_names:
            # An unlabelled metric exists from the start, so it is scraped as 0 rather than missing.
            self._children[()] = factory()

    def labels(self, *values: str) -> C:
        """The child for these label values (in declaration order), created on first use."""
        try:
            return self._children[values]
        except KeyError:
            pass
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {len(values)} values")
        for v in values:
            if not isinstance(v, str):
                raise TypeError(f"{self.name}: label values must be str, got {type(v).__name__}")
        child = self._children[values] = self._factory()
        return child

    def remove(self, *values: str) -> None:
        """Forget one child (e.g. a cluster removed by a reload). Holders of it keep a detached object."""
        self._children.pop(values, None)

    def clear(self) -> None:
        """Forget all children (an unlabelled family gets a fresh zero child)."""
        self._children.clear()
        if not self.label_names:
            self._children[()] = self._factory()

    def children(self) -> Iterator[tuple[tuple[str, ...], C]]:
        """(label values, child) pairs in creation order; a snapshot, safe to mutate the family after."""
        return iter(list(self._children.items()))


class CounterFamily(Family[Counter]):
    kind = "counter"


class GaugeFamily(Family[Gauge]):
    kind = "gauge"


class HistogramFamily(Family[Histogram]):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"{name}: buckets must be finite, strictly increasing and not empty")
        self.bounds = bounds
        super().__init__(name, help, labels, lambda: Histogram(bounds))


AnyFamily = CounterFamily | GaugeFamily | HistogramFamily
F = TypeVar("F", CounterFamily, GaugeFamily, HistogramFamily)


class Registry:
    """All metric families of a process, in declaration order, plus the scrape-time collectors."""

    def __init__(self) -> None:
        self._families: dict[str, AnyFamily] = {}
        self._collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> CounterFamily:
        return self._add(CounterFamily(name, help, self._check("counter", name, help, labels), Counter))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> GaugeFamily:
        return self._add(GaugeFamily(name, help, self._check("gauge", name, help, labels), Gauge))

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> HistogramFamily:
        label_names = self._check("histogram", name, help, labels)
        if "le" in label_names:
            raise ValueError(f"histogram {name!r} cannot have a label named 'le'")
        return self._add(HistogramFamily(name, help, label_names, buckets))

    def gauge_callback(self, name: str, help: str, fn: Callable[[], float]) -> GaugeFamily:
        """An unlabelled gauge whose value is `fn()` at each scrape."""
        family = self.gauge(name, help)
        child = family.labels()

        def collect() -> None:
            child.value = fn()

        self.collector(collect)
        return family

    def collector(self, fn: Callable[[], None]) -> None:
        """Run `fn` before every scrape; it updates children of families declared here."""
        self._collectors.append(fn)

    def get(self, name: str) -> AnyFamily | None:
        return self._families.get(name)

    def collect(self) -> Iterable[AnyFamily]:
        """Run the collectors, then return the families in declaration order."""
        for fn in self._collectors:
            fn()
        return list(self._families.values())

    def _check(self, kind: Kind, name: str, help: str, labels: Sequence[str]) -> tuple[str, ...]:
        if not _NAME_RE.match(name):
            raise ValueError(f"metric name {name!r} must be snake_case and start with pillion_")
        if name in self._families:
            raise ValueError(f"metric {name!r} declared twice")
        words = name.split("_")
        if bad := _NON_BASE_UNITS.intersection(words):
            raise ValueError(f"metric {name!r}: use base units (seconds, bytes, ratio), not {sorted(bad)}")
        if bad := _TYPE_WORDS.intersection(words):
            raise ValueError(f"metric {name!r} should not include its type {sorted(bad)}")
        if (kind == "counter") != (words[-1] == "total"):
            raise ValueError(f"metric {name!r}: counters, and only counters, end in _total")
        if words[-1] in ("bucket", "count", "sum"):
            raise ValueError(f"metric {name!r}: _bucket, _count and _sum are reserved for histogram series")
        if not help.strip():
            raise ValueError(f"metric {name!r} needs help text")
        if isinstance(labels, str):
            raise TypeError(f"metric {name!r}: labels must be a sequence of names, not a string")
        names = tuple(labels)
        if len(set(names)) != len(names):
            raise ValueError(f"metric {name!r}: duplicate label names {names}")
        for label in names:
            if not _LABEL_RE.match(label) or label.startswith("__"):
                raise ValueError(f"metric {name!r}: bad label name {label!r}")
        return names

    def _add(self, family: F) -> F:
        self._families[family.name] = family
        return family
