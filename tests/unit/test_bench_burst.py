"""bench/burst.py (hey's bursts, interleaved over targets) and the pure parts of bench/ab.py.

The client is run against real loopback servers (the standard library's threaded HTTP server), so its
framing, pacing and counting are checked on real sockets; ab.py's build parsing and report are pure.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import ab
import burst


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[int]]:
    started = [ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in started]
    for t in threads:
        t.start()
    yield [s.server_address[1] for s in started]
    for s in started:
        s.shutdown()
        s.server_close()


def test_answer_complete_follows_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n\r\n"
    assert not burst.answer_complete(b"HTTP/1.1 200 OK\r\nContent-Len")
    assert not burst.answer_complete(head + b"abc")
    assert burst.answer_complete(head + b"abcde")
    assert burst.answer_complete(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="content-length"):
        burst.answer_complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_percentile_and_summary() -> None:
    assert burst.percentile([], 99) == 0.0
    values = [float(v) for v in range(1, 101)]
    assert burst.percentile(values, 50) == 51.0  # nearest rank, 0-based index 50
    assert burst.percentile(values, 99) == 100.0
    s = burst.summarize([3.0, 1.0, 2.0], failed=2)
    assert (s.requests, s.failed, s.p50_us, s.mean_us) == (5, 2, 2.0, 2.0)


def test_bursts_reach_every_target(servers: list[int]) -> None:
    stats = burst.run_bursts(servers, seconds=0.2, burst=4, rate=50)
    assert set(stats) == set(servers)
    for s in stats.values():
        assert s.requests == 10 * 4  # 0.2 s at 50 bursts a second, 4 requests each
        assert s.failed == 0
        assert 0 < s.p50_us <= s.p99_us < 1_000_000


def test_bursts_refuse_bad_settings(servers: list[int]) -> None:
    with pytest.raises(ValueError, match="burst"):
        burst.run_bursts(servers, seconds=0.1, burst=0)


def test_parse_builds(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ab.parse_builds([f"old={tmp_path / 'a'}", f"new={tmp_path / 'b'}"]) == [
        ("old", tmp_path / "a"),
        ("new", tmp_path / "b"),
    ]
    for bad in ("old", f"={tmp_path}", f"old={tmp_path / 'missing'}", f"haproxy={tmp_path / 'a'}"):
        with pytest.raises(ValueError):
            ab.parse_builds([bad])
    with pytest.raises(ValueError, match="taken"):
        ab.parse_builds([f"x={tmp_path / 'a'}", f"x={tmp_path / 'b'}"])


def test_table_takes_medians_and_per_round_added_p99() -> None:
    def stats(p99: float, **cpu: float) -> dict[str, float]:
        base = {"requests": 100.0, "failed": 0.0, "p50_us": p99 / 2, "p90_us": p99, "p99_us": p99}
        return base | {"mean_us": p99 / 2} | cpu

    rounds = [
        {"direct": stats(100), "x": stats(900, a_us=50, b_us=40)},
        {"direct": stats(300), "x": stats(1000, a_us=60, b_us=45)},
        {"direct": stats(200), "x": stats(1300, a_us=70, b_us=50)},
    ]
    rows = ab.table(rounds).splitlines()
    assert rows[2].startswith("| direct | 100 | 200 | 200 | 100 | - | - | - | 0 |")
    # added p99 per round: 800, 700, 1100 -> median 800 (not 1000 - 200)
    assert rows[3] == "| x | 500 | 1000 | 1000 | 500 | +800 | 60.0 | 45.0 | 0 |"
