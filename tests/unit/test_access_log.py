"""The access log: exact fields, JSON validity for any path, buffering, errors counted and never raised;
the text format, sampling, and reopening for log rotation."""

from __future__ import annotations

import calendar
import json
import logging
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pillion.config import ConfigError, load_config_text
from pillion.config.model import AccessLog as AccessLogConfig
from pillion.telemetry import access_log as access_log_module
from pillion.telemetry.access_log import TEXT_FIELDS, AccessLog, compile_text_format
from pillion.testing.access_log import DEFAULT_TEXT_LINE, parse_text_line


def _write(log: AccessLog, **over: Any) -> None:
    fields: dict[str, Any] = {
        "ts": 1_700_000_000.1234,
        "method": "GET",
        "path": "/api/users?id=1",
        "status": 200,
        "bytes_sent": 1234,
        "bytes_received": 56,
        "duration": 0.00123456,
        "upstream": "10.0.0.1:8080",
        "request_id": "req-1",
        "error": "",
        "listener": "inbound",
        "route": "route0",
        "cluster": "backend",
    }
    fields.update(over)
    scope = log.scope(fields.pop("listener"), fields.pop("route"), fields.pop("cluster"))
    log.write(scope=scope, **fields)


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_fields(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    _write(log)
    _write(log, status=503, upstream="", error="upstream connect timeout", bytes_sent=0)
    log.close()
    first, second = _read(path)
    assert first == {
        "ts": "2023-11-14T22:13:20.123Z",
        "listener": "inbound",
        "route": "route0",
        "method": "GET",
        "path": "/api/users?id=1",
        "status": 200,
        "bytes_sent": 1234,
        "bytes_received": 56,
        "duration_ms": 1.235,
        "upstream": "10.0.0.1:8080",
        "cluster": "backend",
        "request_id": "req-1",
        "trace_id": "",
        "error": "",
        "flags": "",
    }
    assert second["status"] == 503 and second["error"] == "upstream connect timeout"
    assert second["upstream"] == "" and second["bytes_sent"] == 0
    assert '"duration_ms":1.235,' in path.read_text()  # three decimals, as written


def test_any_path_byte_or_character(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    every_byte = bytes(range(256))
    _write(log, path=every_byte)
    _write(log, path=every_byte.decode("latin-1"))
    _write(log, path='/"quoted"/back\\slash/\n/\udcff/☃/😀', method='G"ET')
    log.close()
    raw, as_str, odd = _read(path)
    # Bytes: valid UTF-8 kept, anything else visible as \xNN, never a broken line.
    assert raw["path"] == every_byte.decode("utf-8", "backslashreplace")
    assert as_str["path"] == every_byte.decode("latin-1")
    assert odd["path"] == '/"quoted"/back\\slash/\n/\udcff/☃/😀' and odd["method"] == 'G"ET'


def test_timestamp_millis_across_seconds(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    for ts in (1_700_000_000.0, 1_700_000_000.9999, 1_700_000_001.5, 1_700_000_000.001, 0.9999999999):
        _write(log, ts=ts)
    log.close()
    assert [line["ts"] for line in _read(path)] == [
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20.999Z",
        "2023-11-14T22:13:21.500Z",
        "2023-11-14T22:13:20.001Z",
        "1970-01-01T00:00:00.999Z",
    ]


def test_lines_in_one_millisecond_share_its_stamp(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    for ts in (1_700_000_000.5, 1_700_000_000.5004, 1_700_000_001.5, 1_700_000_000.5, 1_700_000_000.501):
        _write(log, ts=ts)
    log.close()
    assert [line["ts"][17:] for line in _read(path)] == [
        "20.500Z", "20.500Z", "21.500Z", "20.500Z", "20.501Z"
    ]  # fmt: skip


def test_start_on_the_monotonic_clock(tmp_path: Path) -> None:
    """`start` is a time.perf_counter() time, converted to wall-clock time without a clock read."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    before = time.time()
    _write(log, ts=0.0, start=time.perf_counter() - 3.0)
    log.close()
    [line] = _read(path)
    logged = calendar.timegm(time.strptime(line["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 3.0 - 1.0 <= logged <= before - 3.0 + 1.0


def test_visible_path_still_escapes_quotes_and_backslashes(tmp_path: Path) -> None:
    """A path the parser accepted (`path_visible`) skips the escaper unless it holds `"` or `\\`."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    for target in (b"/plain?a=1&b=%22", b'/a"b', b"/a\\b", b'/"\\"'):
        _write(log, path=target, path_visible=True)
    log.close()
    assert [line["path"] for line in _read(path)] == ["/plain?a=1&b=%22", '/a"b', "/a\\b", '/"\\"']


def test_error_and_flags_end_the_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    for error, flags in (("", ""), ("upstream_reset", ""), ("", "URX"), ("upstream_reset", "UC,URX")):
        _write(log, error=error, flags=flags)
    log.close()
    assert [(x["error"], x["flags"]) for x in _read(path)] == [
        ("", ""), ("upstream_reset", ""), ("", "URX"), ("upstream_reset", "UC,URX")
    ]  # fmt: skip
    assert path.read_text().splitlines()[0].endswith('"error":"","flags":""}')


def test_buffered_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    _write(log)
    time.sleep(0.05)
    assert path.read_bytes() == b""  # nothing written until a flush
    log.flush()
    _wait_for(lambda: path.read_bytes().count(b"\n") == 1)
    log.close()


def test_flushes_itself_past_64k(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    _write(log, request_id="small")
    _write(log, path="/" + "x" * access_log_module.FLUSH_BYTES)
    # Past 64 KiB the buffer went to the writer without an explicit flush.
    _wait_for(lambda: path.read_bytes().count(b"\n") == 2)
    _write(log, request_id="waits")
    time.sleep(0.05)
    assert path.read_bytes().count(b"\n") == 2
    log.close()
    assert [line["request_id"] for line in _read(path)] == ["small", "req-1", "waits"]


def test_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog("-")
    _write(log, request_id="to-stdout")
    log.close()
    log.close()  # idempotent
    out = capfd.readouterr().out
    assert json.loads(out)["request_id"] == "to-stdout"


def test_write_error_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    log = AccessLog("/dev/full")  # every write fails with ENOSPC
    with caplog.at_level(logging.ERROR, logger="pillion.access_log"):
        for _ in range(3):
            _write(log)
            log.flush()
        log.close()
    assert log.write_errors == 3
    assert len([r for r in caplog.records if r.name == "pillion.access_log"]) == 1


def test_backlog_is_bounded(tmp_path: Path) -> None:
    r, w = os.pipe()  # a pipe nobody reads: the writer thread blocks once it is full
    try:
        log = AccessLog(f"/dev/fd/{w}", max_pending_chunks=2)
        for _ in range(200):
            _write(log, path="/" + "y" * 5000)
            log.flush()
        assert log.dropped_lines > 0  # the loop side dropped, instead of growing or blocking
        log.close(timeout=0.1)
    finally:
        os.close(r)  # unblocks the writer thread with EPIPE
        time.sleep(0.05)
        os.close(w)


def test_write_after_close_is_dropped(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "access.log"))
    log.close()
    _write(log)
    log.flush()
    assert log.dropped_lines == 1


def test_unopenable_path_raises_at_startup(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AccessLog(str(tmp_path / "no" / "such" / "dir" / "access.log"))


def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_default_ts_is_now_minus_duration(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    before = time.time()
    _write(log, duration=2.0, ts=0.0)
    log.close()
    [line] = _read(path)
    logged = calendar.timegm(time.strptime(line["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 2.0 - 1.0 <= logged <= before - 2.0 + 1.0
    assert line["duration_ms"] == 2000.0


# -- trace id, upstream duration, text format, sampling, reopen ---------------------------------------

DEFAULT_TEXT = AccessLogConfig().text_format


def test_trace_id_and_upstream_duration(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    _write(log, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", upstream_duration=0.0009876)
    _write(log)
    log.close()
    first, second = _read(path)
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["upstream_duration_ms"] == 0.988
    assert '"duration_ms":1.235,"upstream_duration_ms":0.988,' in path.read_text()
    assert second["trace_id"] == "" and "upstream_duration_ms" not in second  # none: the key is left out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0.000"), (0.0000004, "0.000"), (0.0000005, "0.001"), (1.0239994, "1023.999"),
     (1.0239996, "1024.000"), (12.3456789, "12345.679")],
)  # fmt: skip
def test_durations_are_milliseconds_rounded_to_three_decimals(
    tmp_path: Path, seconds: float, text: str
) -> None:
    """Both durations, below and past the table of small numbers (1024 ms), as `:.3f` would give."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    _write(log, duration=seconds, upstream_duration=seconds)
    log.close()
    assert f'"duration_ms":{text},"upstream_duration_ms":{text},' in path.read_text()


def test_default_text_format(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), text_format=DEFAULT_TEXT)
    _write(log, upstream_duration=0.001, trace_id="abc", flags="UT,URX")
    _write(log, upstream="", route="", cluster="", error="no_route", status=404, request_id='a "b" \\c')
    log.close()
    first, second = (parse_text_line(line) for line in path.read_text(encoding="ascii").splitlines())
    assert first == {
        "ts": "2023-11-14T22:13:20.123Z",
        "method": "GET",
        "path": "/api/users?id=1",
        "status": "200",
        "flags": "UT,URX",
        "received": "56",
        "sent": "1234",
        "duration": "1.235",
        "upstream_duration": "1.000",
        "request_id": "req-1",
        "upstream": "10.0.0.1:8080",
        "listener": "inbound",
        "route": "route0",
        "cluster": "backend",
        "trace_id": "abc",
        "error": "-",
    }
    # Empty values are "-"; a quoted value with quotes and backslashes is escaped as in JSON.
    assert second["upstream_duration"] == second["flags"] == second["route"] == second["trace_id"] == "-"
    assert second["error"] == "no_route" and second["upstream"] == "-"
    assert second["request_id"] == 'a "b" \\c'
    assert '"a \\"b\\" \\\\c"' in path.read_text()


def test_text_format_cannot_be_broken_out_of(tmp_path: Path) -> None:
    """Whatever the client sends, a text line stays one ASCII line and its quoted fields stay quoted."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), text_format=DEFAULT_TEXT)
    nasty = '/x" 200 - 0 0 1.0 - "forged"\r\n[2023-01-01T00:00:00.000Z] "GET /\udcff/☃/😀'
    _write(log, path=nasty, method='G"ET', request_id="\n\x00\x7f")
    _write(log, path=bytes(range(256)))
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2] == b""  # two lines, each ending in a newline
    assert all(line.isascii() for line in lines)
    first, second = parse_text_line(lines[0].decode()), parse_text_line(lines[1].decode())
    assert first["path"] == nasty and first["request_id"] == "\n\x00\x7f" and first["status"] == "200"
    assert second["path"] == bytes(range(256)).decode("utf-8", "backslashreplace")


def test_custom_text_format(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), text_format="%RESPONSE_CODE% 100%% %DURATION%ms {braces} %ROUTE%")
    _write(log)
    log.close()
    assert path.read_text() == "200 100% 1.235ms {braces} route0\n"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("%STATUS%", "unknown field %STATUS%"),
        ("100% done", "without its closing"),
        ("%PATH%\n%PATH%", "single line"),
        ("%PATH% ☃", "ASCII"),
    ],
)
def test_bad_text_format(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        compile_text_format(template)


def test_every_text_field_renders() -> None:
    line = compile_text_format(" ".join(f"%{name}%" for name in TEXT_FIELDS))
    out = line("T", "M", "/p", 200, "F", 1, 2, 0.5, None, "U", "R", "X", "L", "RO", "C", "E")
    assert out == "T M /p 200 F 1 2 500.000 - U R X L RO C E\n"


def test_sampling_zero_logs_only_errors(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), sampling=0.0)
    for status, error in ((200, ""), (404, ""), (499, "client_disconnected"), (404, "no_route"), (503, "")):
        _write(log, status=status, error=error)
    log.close()
    assert [(x["status"], x["error"]) for x in _read(path)] == [
        (499, "client_disconnected"),
        (404, "no_route"),
        (503, ""),
    ]


def test_sampling_keeps_about_the_share_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), sampling=0.25)
    random.seed(7)  # the log draws from the module-level generator
    for _ in range(4000):
        _write(log)
    log.close()
    assert 800 < len(_read(path)) < 1200


@pytest.mark.parametrize("sampling", [-0.1, 1.5, float("nan")])
def test_sampling_out_of_range(sampling: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sampling"):
        AccessLog(str(tmp_path / "access.log"), sampling=sampling)


def _cached_bytes(path: Path) -> int:
    """How much of the file is in the page cache, from util-linux's fincore (mincore(2))."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def test_old_pages_leave_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    keep = 256 * 1024
    log = AccessLog(str(path), keep_cached=keep)
    chunk_lines, line_path = 8, "/" + "p" * (64 * 1024 - 200)  # ~512 KiB a chunk
    written = 0
    for chunk in range(16):
        for i in range(chunk_lines):
            _write(log, path=line_path, request_id=f"r{chunk}-{i}")
        log.flush()
        # (The file's size, not its lines: reading it would bring its pages back into the cache.)
        _wait_for(lambda n=written: path.stat().st_size > n)
        written = path.stat().st_size
        time.sleep(0.02)  # the writeback the last chunk started has time to finish
    log.close()
    size, cached = path.stat().st_size, _cached_bytes(path)
    assert size > 8 * 1024 * 1024
    # The kept tail plus at most the last chunks still being written back: far from the whole file.
    assert cached < size // 2, (cached, size)
    assert [x["request_id"] for x in _read(path)] == [
        f"r{c}-{i}" for c in range(16) for i in range(chunk_lines)
    ]


def test_reopen_after_a_move_loses_no_line(tmp_path: Path) -> None:
    path, moved = tmp_path / "access.log", tmp_path / "access.log.1"
    log = AccessLog(str(path))
    for i in range(3):
        _write(log, request_id=f"before{i}")
    log.flush()
    _write(log, request_id="buffered")  # not yet handed to the writer when the file moves
    path.rename(moved)  # logrotate's move...
    log.reopen()  # ...then its postrotate signal
    for i in range(3):
        _write(log, request_id=f"after{i}")
    log.close()
    assert log.reopens == 1
    assert [x["request_id"] for x in _read(moved)] == ["before0", "before1", "before2", "buffered"]
    assert [x["request_id"] for x in _read(path)] == ["after0", "after1", "after2"]


def test_reopen_failure_keeps_the_old_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "access.log"
    log = AccessLog(str(path))
    moved = tmp_path / "access.log.1"
    path.rename(moved)
    directory.rmdir()  # the path cannot be created again
    with caplog.at_level(logging.ERROR, logger="pillion.access_log"):
        log.reopen()
        _write(log, request_id="still-logged")
        log.close()
    assert log.reopens == 0 and log.write_errors == 1
    assert [x["request_id"] for x in _read(moved)] == ["still-logged"]
    assert any("reopen failed" in r.getMessage() for r in caplog.records)


def test_reopen_of_stdout_is_a_no_op(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog("-")
    log.reopen()
    _write(log, request_id="x")
    log.close()
    assert log.reopens == 0 and json.loads(capfd.readouterr().out)["request_id"] == "x"


def test_from_config(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog.from_config(AccessLogConfig(enabled=True, path=str(path), format="text", sampling=0.0))
    _write(log, status=502, error="upstream_reset")
    _write(log)  # sampled out
    log.close()
    [line] = path.read_text().splitlines()
    assert DEFAULT_TEXT_LINE.match(line) is not None


@pytest.mark.parametrize(
    ("yaml", "error"),
    [
        ("{sampling: 1.5}", "access_log.sampling: must be between 0 and 1"),
        ("{sampling: .nan}", "access_log.sampling: "),
        ("{format: csv}", "access_log.format"),
        ("{text_format: '%PATH% %LATENCY%'}", "access_log.text_format: unknown field %LATENCY%"),
        ("{text_format: '50% off'}", "access_log.text_format: a '%' without its closing '%'"),
    ],
)
def test_config_errors(yaml: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f"service: s\naccess_log: {yaml}\n", env={})
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors


def test_config_accepts_text_and_sampling() -> None:
    cfg = load_config_text("service: s\naccess_log: {format: text, sampling: 0.1, text_format: '%PATH%'}\n")
    assert (cfg.access_log.format, cfg.access_log.sampling, cfg.access_log.text_format) == (
        "text",
        0.1,
        "%PATH%",
    )


def test_numbers_from_the_table_and_past_it_and_ids_made_here_unescaped(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    made_here = "3f2a9c1e-7b4d-4e21-a9f3-00000001a2b3"
    _write(
        log,
        status=404,
        bytes_sent=1023,
        bytes_received=1024,
        duration=5000.0005,
        request_id=made_here,
        request_id_safe=True,
    )
    _write(log, request_id='x"\\y', request_id_safe=False, bytes_sent=0, bytes_received=10**12)
    log.close()
    first, second = _read(path)
    assert (first["status"], first["bytes_sent"], first["bytes_received"]) == (404, 1023, 1024)
    assert first["duration_ms"] == 5000000.5 and first["request_id"] == made_here
    assert second["request_id"] == 'x"\\y' and second["bytes_received"] == 10**12
    raw = path.read_text(encoding="ascii").splitlines()[0]
    assert f'"request_id":"{made_here}"' in raw


def test_cached_pieces_keep_each_method_status_upstream_and_cluster_apart(tmp_path: Path) -> None:
    """Method, status and upstream come from caches of ready pieces (the method with the path's key,
    the upstream with its scope's cluster): every combination must still log its own values."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    scopes = {c: log.scope("inbound", f"r-{c}", c) for c in ("a", "b")}  # reused, as the listener does
    cases: list[tuple[str | bytes, int, str, str]] = [
        ("GET", 200, "10.0.0.1:80", "a"),
        (b"POST", 201, "10.0.0.2:80", "a"),
        ("POST", 599, "10.0.0.1:80", "b"),
        (b"GET", 100, "10.0.0.2:80", "b"),
        ('M"X', 600, "[::1]:8080", "a"),  # past the status table; a method that needs escaping
        ("GET", 200, "10.0.0.2:80", "a"),
    ]
    for method, status, upstream, cluster in cases * 2:
        log.write(
            scope=scopes[cluster], method=method, path="/p", status=status, bytes_sent=1, bytes_received=0,
            duration=0.001, upstream=upstream, request_id="r", error="",
        )  # fmt: skip
    log.close()
    got = [(e["method"], e["status"], e["upstream"], e["cluster"], e["route"]) for e in _read(path)]
    want = [(m if isinstance(m, str) else m.decode(), s, u, c, f"r-{c}") for m, s, u, c in cases]
    assert got == want * 2
