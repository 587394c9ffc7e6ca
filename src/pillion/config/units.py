"""Durations and sizes: the human notations of the config file, and back.

Theory of operation: a value is a non-negative decimal number with an optional unit suffix, checked by
one anchored pattern per kind (the same patterns go into the JSON Schema). The number is read as an exact
`Fraction` and scaled by the unit's exact factor, so `100ms` is the float nearest 0.1, not 100 * 0.001.
Formatting picks the largest unit that gives a short number and re-parses to the same value, so
`format_duration`/`format_size` output can be fed back in (config_dump relies on that).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

from pillion.config.errors import describe
from pillion.config.model import Duration, Size

# Seconds per unit, exact.
_DURATION_UNITS: dict[str, Fraction] = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
    "us": Fraction(1, 1_000_000),
}
# Bytes per unit. `KB` is deliberately absent: it means 1000 or 1024 depending on who wrote it.
_SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "kB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}

DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(us|ms|s|m|h)?$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(B|kB|KiB|MB|MiB|GB|GiB)?$"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)?")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(B|kB|KiB|MB|MiB|GB|GiB)?")


def parse_duration(value: str | float) -> Duration:
    """Seconds from `250ms`, `2s`, `1.5s`, `1m`, `1h`, `100us`, or a bare number of seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as '250ms' or '2s', got {describe(value)}")
    if not isinstance(value, str):
        return Duration(_non_negative(value, "duration"))
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        if value.strip().startswith("-"):
            raise ValueError(f"negative duration {value!r} is not allowed")
        raise ValueError(
            f"invalid duration {value!r}: expected a number with an optional unit "
            "(us, ms, s, m, h), e.g. '250ms' or '2s'"
        )
    number, unit = match.groups()
    return Duration(float(Fraction(number) * _DURATION_UNITS[unit or "s"]))


def parse_size(value: str | int) -> Size:
    """Bytes from `512`, `64KiB`, `1MiB`, `1GiB`, `10kB`, `1MB`, `1GB` (KiB = 1024, kB = 1000)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a size such as '64KiB' or '1MB', got {describe(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size {value} is not allowed")
        return Size(value)
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        if value.strip().startswith("-"):
            raise ValueError(f"negative size {value!r} is not allowed")
        hint = " ('KB' is ambiguous: write 'kB' for 1000 or 'KiB' for 1024)" if "KB" in value else ""
        raise ValueError(
            f"invalid size {value!r}: expected a number of bytes with an optional unit "
            f"(B, kB, KiB, MB, MiB, GB, GiB), e.g. '64KiB'{hint}"
        )
    number, unit = match.groups()
    total = Fraction(number) * _SIZE_UNITS[unit or "B"]
    if total.denominator != 1:
        raise ValueError(f"size {value!r} is not a whole number of bytes")
    return Size(total.numerator)


def format_duration(seconds: float) -> str:
    """The shortest readable form that parses back to `seconds`: `250ms`, `1.5s`, `90s`, `1m`, `2h`."""
    if seconds == 0:
        return "0s"
    for unit in ("h", "m"):
        count = Fraction(seconds) / _DURATION_UNITS[unit]
        if count.denominator == 1:
            return f"{count.numerator}{unit}"
    # Below a second, whole-ish milli/microseconds read better than `0.25s`.
    for unit in ("s", "ms", "us"):
        scaled = float(Fraction(seconds) / _DURATION_UNITS[unit])
        if scaled < 1 and unit != "us":
            continue
        for digits in range(1, 18):
            text = f"{scaled:.{digits}g}"
            if "e" not in text and parse_duration(text + unit) == seconds:
                return text + unit
    # Exact decimal expansion of the float: ugly, but still parses back to the same value.
    return f"{Decimal(seconds):f}s"


def format_size(size: int) -> str:
    """The largest unit that divides `size` exactly, binary units first: `60KiB`, `1MiB`, `1MB`, `512B`."""
    if size == 0:
        return "0"  # reads as "off" where 0 means no limit
    for unit in ("GiB", "MiB", "KiB", "GB", "MB", "kB"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


def _non_negative(number: float, kind: str) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{kind} must be a finite number, got {number}")
    if number < 0:
        raise ValueError(f"negative {kind} {number} is not allowed")
    return float(number)
