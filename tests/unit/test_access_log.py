"""The access log: exact fields, JSON validity for any path, buffering, errors counted and never raised."""

from __future__ import annotations

import calendar
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pillion.telemetry import access_log as access_log_module
from pillion.telemetry.access_log import AccessLog


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
    log.write(**fields)


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
