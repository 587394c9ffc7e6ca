"""free_port: listening ports outside the kernel's ephemeral range, free when picked, not repeated."""

from __future__ import annotations

import errno
import itertools
import socket
from pathlib import Path

import pytest

from pillion.testing import ports
from pillion.testing.ports import ephemeral_range, free_port, listen_ports


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    custom = tmp_path / "range"
    custom.write_text("40000\t50000\n")
    assert ephemeral_range(str(custom)) == (40000, 50000)
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)
    custom.write_text("garbage\n")
    assert ephemeral_range(str(custom)) == (32768, 60999)


def test_ports_are_picked_below_the_range_or_else_above_it_or_not_at_all() -> None:
    assert listen_ports(32768, 60999) == range(10_000, 32768)
    assert listen_ports(10_500, 60999) == range(61000, 65536)  # too little room below
    assert listen_ports(1024, 5000) == range(10_000, 65536)  # above, but never below LOWEST
    assert listen_ports(1024, 65535) is None  # a tuned range leaves no room
    assert listen_ports(1024, 64000) is None


def test_a_picked_port_is_outside_the_ephemeral_range_bindable_and_not_repeated() -> None:
    low, high = ephemeral_range()
    picked = [free_port() for _ in range(100)]
    assert len(set(picked)) == len(picked)
    assert all(not low <= port <= high for port in picked)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", picked[-1]))
        sock.listen()


def test_an_ipv6_host_gets_an_ipv6_port() -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine's Python has no IPv6")
    port = free_port("::1")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", port))


def test_without_room_outside_the_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        ports._recent.clear()  # the busy port may be picked again, and must then be refused
        choices = itertools.chain([taken], itertools.cycle(range(10_000, 32768)))
        monkeypatch.setattr(ports._random, "choice", lambda _seq: next(choices))
        got = free_port()
        assert got != taken
        assert 10_000 <= got < 32768


def test_a_port_handed_out_is_not_handed_out_again_before_binding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = free_port()  # picked, not bound yet: a caller may pick several before binding any
    choices = itertools.chain([first], itertools.cycle(range(10_000, 32768)))
    monkeypatch.setattr(ports._random, "choice", lambda _seq: next(choices))
    assert free_port() != first


def test_no_free_port_is_an_error_that_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        taken = busy.getsockname()[1]
        ports._recent.clear()
        monkeypatch.setattr(ports._random, "choice", lambda _seq: taken)
        with pytest.raises(OSError, match=r"no free port on 127\.0\.0\.1"):
            free_port()


def test_a_host_that_is_not_here_is_refused_at_once() -> None:
    with pytest.raises(OSError) as refused:
        free_port("192.0.2.1")  # TEST-NET-1: no interface has it
    assert refused.value.errno == errno.EADDRNOTAVAIL  # not "no free port", and at once
