"""Durations, sizes and addresses: parsing, formatting, and formatting's round trip."""

from __future__ import annotations

import pytest

from pillion.config import Address, Duration, Size, format_duration, format_size, parse_duration, parse_size
from pillion.config.address import parse_address


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("100us", 0.0001),
        ("100ms", 0.1),
        ("0", 0.0),
        ("3", 3.0),
        (" 2s ", 2.0),
        (5, 5.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    parsed = parse_duration(text)
    assert isinstance(parsed, Duration)
    assert parsed == seconds


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("-1s", "negative duration '-1s' is not allowed"),
        (-1, "negative duration -1 is not allowed"),
        ("5 sec", "invalid duration '5 sec'"),
        ("1d", "invalid duration '1d'"),
        ("", "invalid duration ''"),
        ("ms", "invalid duration 'ms'"),
        (float("inf"), "duration must be a finite number"),
        (True, "expected a duration such as '250ms' or '2s', got boolean true"),
    ],
)
def test_parse_duration_rejects(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("512B", 512),
        ("64KiB", 64 * 1024),
        ("1MiB", 1024**2),
        ("1GiB", 1024**3),
        ("10kB", 10_000),
        ("1MB", 1_000_000),
        ("1GB", 1_000_000_000),
        ("1.5KiB", 1536),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    parsed = parse_size(text)
    assert isinstance(parsed, Size)
    assert parsed == size


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("-1KiB", "negative size '-1KiB' is not allowed"),
        (-5, "negative size -5 is not allowed"),
        ("1KB", "invalid size '1KB'.*'KB' is ambiguous"),
        ("1.5B", "size '1.5B' is not a whole number of bytes"),
        ("lots", "invalid size 'lots'"),
        (1.5, "expected a size such as '64KiB' or '1MB', got number 1.5"),
    ],
)
def test_parse_size_rejects(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        parse_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.1, "100ms"),
        (0.0015, "1.5ms"),
        (0.0001, "100us"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (90.0, "90s"),
        (60.0, "1m"),
        (300.0, "5m"),
        (7200.0, "2h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.3, 1 / 3, 123.456, 1e-9, 1e-20, 86400.5, 0.000123, 42.000001, 2.5e6])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (512, "512B"),
        (60 * 1024, "60KiB"),
        (1024**2, "1MiB"),
        (3 * 1024**3, "3GiB"),
        (1000, "1kB"),
        (2_000_000, "2MB"),
        (1_000_000_000, "1GB"),
        (1001, "1001B"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8080", Address("127.0.0.1", 8080)),
        ("[::1]:8080", Address("::1", 8080)),
        ("localhost:0", Address("localhost", 0)),
        ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
        ("app.default.svc:80", Address("app.default.svc", 80)),
    ],
)
def test_parse_address(text: str, address: Address) -> None:
    assert parse_address(text) == address
    assert str(address) == text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("8080", "expected host:port"),
        (":8080", "expected host:port"),
        ("localhost:http", "port 'http' is not a number"),
        ("localhost:65536", "port 65536 is out of range 0-65535"),
        ("::1:8080", "write IPv6 hosts in brackets"),
        ("[nope]:80", "'nope' is not an IPv6 address"),
        ("999.1.1.1:80", "'999.1.1.1' is not an IPv4 address"),
        ("bad host:80", "'bad host' is not a valid host name"),
    ],
)
def test_parse_address_rejects(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_address(bad)
