"""free_port: listening ports outside the kernel's ephemeral range, free when picked, not repeated."""

from __future__ import annotations

import itertools
import random
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


def test_ports_are_picked_below_the_range_or_else_above_it() -> None:
    assert listen_ports(32768, 60999) == range(10_000, 32768)
    assert listen_ports(10_500, 60999) == range(61000, 65536)  # too little room below


def test_a_picked_port_is_outside_the_ephemeral_range_bindable_and_not_repeated() -> None:
    low, high = ephemeral_range()
    picked = [free_port() for _ in range(100)]
    assert len(set(picked)) == len(picked)
    assert all(not low <= port <= high for port in picked)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", picked[-1]))
        sock.listen()


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        ports._recent.clear()  # the busy port may be picked again, and must then be refused
        choices = itertools.chain([taken], itertools.cycle(range(10_000, 32768)))
        monkeypatch.setattr(random, "choice", lambda _seq: next(choices))
        got = free_port()
        assert got != taken
        assert 10_000 <= got < 32768


def test_no_free_port_is_an_error_that_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        taken = busy.getsockname()[1]
        ports._recent.clear()
        monkeypatch.setattr(random, "choice", lambda _seq: taken)
        with pytest.raises(OSError, match=r"no free port on 127\.0\.0\.1"):
            free_port()


def test_a_port_handed_out_is_not_handed_out_again_before_it_is_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = free_port()  # picked, not bound yet: a caller may pick several before binding any
    choices = itertools.chain([first], itertools.cycle(range(10_000, 32768)))
    monkeypatch.setattr(random, "choice", lambda _seq: next(choices))
    assert free_port() != first
