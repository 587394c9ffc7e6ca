"""Reading Prometheus text back: parse a scrape, difference two scrapes, estimate histogram quantiles.

Theory of operation: `parse` reads the exposition format 0.0.4 subset Pillion writes (see
telemetry/prometheus.py) into a `Scrape`: `# TYPE` lines give each family its kind, other comments and
blank lines are skipped, and every sample line becomes a `Sample` (name, labels, value). Label values are
unescaped (`\\\\`, `\\"`, `\\n`); values may be `+Inf`, `-Inf` or `NaN`; an optional trailing timestamp is
accepted and ignored. Anything else is a `ParseError` naming the line, never a half-read scrape.

Rates come from two scrapes of the same process. `counter_delta` is the increase of one series between
them, with the two cases that are not a plain subtraction spelled out: a series absent from the earlier
scrape but present in the later one was *born* in between -- Pillion creates a labelled child on its
first use, so it stood at 0 -- and counts from zero; a series that went *down* was reset (a restart, a
reload that rebuilt it) and gives no data (None), never a negative rate. A series missing from the later
scrape gives None as well.

Histograms are kept as Prometheus exposes them: cumulative counts per upper bound `le`, ending at `+Inf`.
`Histogram.minus` subtracts an earlier snapshot bucket by bucket (the distribution of what was observed
in between), `quantile` estimates a quantile from such a distribution exactly as PromQL's
`histogram_quantile` does: find the bucket the rank falls in and interpolate linearly inside it, taking
the lower bound of the first bucket as 0 and answering the largest finite bound when the rank falls in
the `+Inf` bucket.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Histogram",
    "LabelKey",
    "ParseError",
    "Sample",
    "Scrape",
    "counter_delta",
    "parse",
    "quantile",
]

# A series' labels in a hashable, order-independent form: sorted (name, value) pairs.
LabelKey = tuple[tuple[str, str], ...]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"({_NAME})(\{{.*\}})?\s+(\S+)(?:\s+(-?[0-9]+))?\s*\Z")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\Z)', re.DOTALL)
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_ESCAPE_RE = re.compile(r"\\(.)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ParseError(ValueError):
    """The text is not exposition format this parser understands; the message names the line."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float

    @property
    def key(self) -> LabelKey:
        return label_key(self.labels)


@dataclass(slots=True)
class Histogram:
    """One histogram series: cumulative counts per upper bound (ascending, the last one +Inf), and the sum."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float = 0.0

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def minus(self, earlier: Histogram | None) -> Histogram | None:
        """What was observed since `earlier` (a snapshot of the same series); None when the two cannot be
        compared: different bucket bounds, or a bucket that went down (a reset). No earlier snapshot means
        the series was born since, so everything in it is new."""
        if earlier is None:
            return Histogram(list(self.buckets), self.sum)
        if [b for b, _ in earlier.buckets] != [b for b, _ in self.buckets]:
            return None
        out: list[tuple[float, float]] = []
        for (bound, now), (_, then) in zip(self.buckets, earlier.buckets, strict=True):
            if now < then:
                return None
            out.append((bound, now - then))
        return Histogram(out, self.sum - earlier.sum)

    def plus(self, other: Histogram) -> Histogram:
        """The two distributions together (same bounds required), e.g. all routes of one cluster."""
        if [b for b, _ in other.buckets] != [b for b, _ in self.buckets]:
            raise ValueError("histograms with different bucket bounds cannot be added")
        merged = [(b, n + m) for (b, n), (_, m) in zip(self.buckets, other.buckets, strict=True)]
        return Histogram(merged, self.sum + other.sum)


@dataclass(slots=True)
class Scrape:
    """A parsed /metrics body: the samples in order, and the kind of each family that declared one."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def series(self, name: str) -> Iterator[Sample]:
        return (s for s in self.samples if s.name == name)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series of `name` with exactly these labels, None if there is none."""
        want = label_key(labels)
        return next((s.value for s in self.series(name) if s.key == want), None)

    def values(self, name: str) -> dict[LabelKey, float]:
        return {s.key: s.value for s in self.series(name)}

    def total(self, name: str) -> float | None:
        """The sum over every series of `name`; None when the family has no series."""
        found = [s.value for s in self.series(name)]
        return sum(found) if found else None

    def histograms(self, name: str) -> dict[LabelKey, Histogram]:
        """Every series of histogram `name`, keyed by its labels without `le`, buckets sorted by bound."""
        out: dict[LabelKey, Histogram] = {}
        for s in self.samples:
            if s.name == name + "_bucket":
                le = s.labels.get("le")
                if le is None:
                    raise ParseError(f"{s.name} sample without an le label")
                try:
                    bound = _parse_float(le)
                except ValueError as exc:
                    raise ParseError(f"{s.name}: {exc}") from None
                key = label_key({k: v for k, v in s.labels.items() if k != "le"})
                out.setdefault(key, Histogram()).buckets.append((bound, s.value))
            elif s.name == name + "_sum":
                out.setdefault(s.key, Histogram()).sum = s.value
        for h in out.values():
            h.buckets.sort()
        return out


def label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def parse(text: str) -> Scrape:
    scrape = Scrape()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                scrape.types[parts[2]] = parts[3].strip()
            continue  # HELP and free comments carry nothing a reader of numbers needs
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise ParseError(f"line {number}: not a sample: {_clip(raw)}")
        name, braced, value, _timestamp = match.groups()
        try:
            labels = _parse_labels(braced[1:-1]) if braced else {}
            scrape.samples.append(Sample(name, labels, _parse_float(value)))
        except ValueError as exc:
            raise ParseError(f"line {number}: {exc}: {_clip(raw)}") from None
    return scrape


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text) and text[pos:].strip():
        match = _LABEL_RE.match(text, pos)
        if match is None:
            raise ValueError(f"bad label set at {text[pos:]!r}")
        name, escaped, comma = match.groups()
        if name in labels:
            raise ValueError(f"label {name!r} repeated")
        labels[name] = _ESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(0)), escaped)
        pos = match.end()
        if not comma:
            break
    return labels


def _parse_float(text: str) -> float:
    # float() already reads "+Inf", "-Inf" and "NaN" (case-insensitively); refuse what it also accepts but
    # the format does not, such as "1_000" or surrounding spaces.
    if "_" in text or text != text.strip():
        raise ValueError(f"bad number {text!r}")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad number {text!r}") from None


def _clip(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


def counter_delta(before: float | None, after: float | None) -> float | None:
    """The increase of a counter between two scrapes: None without a later value or across a reset; a
    series born in between (no earlier value) counts from zero."""
    if after is None or math.isnan(after):
        return None
    if before is None:
        return after
    if math.isnan(before) or after < before:
        return None
    return after - before


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The `q`-quantile (0 <= q <= 1) of a distribution given as cumulative (upper bound, count) pairs
    ending at +Inf, as PromQL's histogram_quantile computes it; None when there is nothing to estimate
    from (no observations, no +Inf bucket, fewer than two buckets)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    points = sorted(buckets)
    if len(points) < 2 or points[-1][0] != math.inf:
        return None
    total = points[-1][1]
    if not total > 0:
        return None
    rank = q * total
    # The first bucket whose cumulative count reaches the rank; ranks past every finite bucket land in +Inf.
    index = next(i for i, (_, count) in enumerate(points) if count >= rank)
    if index == len(points) - 1:
        return points[-2][0]  # the +Inf bucket has no width to interpolate in: say "at least this"
    upper, count = points[index]
    if index == 0:
        if upper <= 0:
            return upper  # a first bound at or below zero has no sensible lower bound; Prometheus says so too
        lower, below = 0.0, 0.0
    else:
        lower, below = points[index - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return lower  # rank 0 in an empty bucket: the bottom of it
    # The same operations in the same order as Prometheus, so the two agree to the last bit.
    return lower + (upper - lower) * ((rank - below) / in_bucket)
