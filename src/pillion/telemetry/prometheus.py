"""Prometheus text exposition format 0.0.4 for a `Registry`.

Theory of operation: a scrape runs the registry's collectors, then writes every family in declaration
order: `# HELP` and `# TYPE` lines (also for a family with no children yet, which Prometheus and promtool
accept), then one sample line per child. Histograms become cumulative `_bucket{le="..."}` lines ending in
`+Inf`, then `_sum` and `_count`. Label values are escaped (backslash, double quote, newline) as the format
requires; help text escapes backslash and newline. Numbers print as integers when they are whole, so
counters read `42`, not `42.0`. The label text of a child is rebuilt per scrape: a scrape is rare and the
hot path must not pay to keep it.
"""

from __future__ import annotations

import math

from pillion.telemetry.stats import Counter, Gauge, Histogram, Registry

__all__ = ["CONTENT_TYPE", "escape_help", "escape_label_value", "format_value", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def escape_label_value(value: str) -> str:
    return value.translate(_LABEL_ESCAPES)


def escape_help(text: str) -> str:
    return text.translate(_HELP_ESCAPES)


def format_value(v: float) -> str:
    """A sample value or bound: `+Inf`, `-Inf`, `NaN`, an integer when whole, else the shortest repr."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if abs(v) < 1e15 and v == int(v):
        return str(int(v))
    return repr(float(v))


def _label_text(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


def render(registry: Registry) -> str:
    """The whole registry as exposition text, ending in a newline."""
    out: list[str] = []
    for family in registry.collect():
        name = family.name
        out.append(f"# HELP {name} {escape_help(family.help)}")
        out.append(f"# TYPE {name} {family.kind}")
        names = family.label_names
        for values, child in family.children():
            labels = _label_text(names, values)
            if isinstance(child, Counter | Gauge):
                braced = f"{{{labels}}}" if labels else ""
                out.append(f"{name}{braced} {format_value(child.value)}")
            elif isinstance(child, Histogram):
                _render_histogram(out, name, labels, child)
    out.append("")
    return "\n".join(out)


def _render_histogram(out: list[str], name: str, labels: str, h: Histogram) -> None:
    prefix = f"{labels}," if labels else ""
    cumulative = h.cumulative()
    for bound, n in zip(h.bounds, cumulative, strict=False):
        out.append(f'{name}_bucket{{{prefix}le="{format_value(bound)}"}} {n}')
    total = cumulative[-1]
    out.append(f'{name}_bucket{{{prefix}le="+Inf"}} {total}')
    braced = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_sum{braced} {format_value(h.sum)}")
    out.append(f"{name}_count{braced} {total}")
