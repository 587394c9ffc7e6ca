"""Process logs: every line one valid JSON object, whatever the message, extras or exception."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from pillion.telemetry.logging import JsonFormatter, setup_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out = io.StringIO()
    setup_logging("debug", stream=out)
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved_handlers:
        root.addHandler(h)
    root.setLevel(saved_level)
    logging.captureWarnings(False)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_basic_fields_and_extras(stream: io.StringIO) -> None:
    logging.getLogger("pillion.listener").info(
        "listener %s bound", "inbound", extra={"address": "0.0.0.0:15006", "port": 15006}
    )
    [line] = _lines(stream)
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert line["level"] == "info"
    assert line["logger"] == "pillion.listener"
    assert line["msg"] == "listener inbound bound"
    assert line["address"] == "0.0.0.0:15006" and line["port"] == 15006
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert "exc" not in line


def test_exception_traceback(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("pillion.x").exception("it failed")
    [line] = _lines(stream)
    assert line["level"] == "error"
    assert "Traceback" in line["exc"] and "RuntimeError: boom" in line["exc"]


def test_odd_messages_stay_valid_json(stream: io.StringIO) -> None:
    log = logging.getLogger("pillion.odd")
    log.warning('quote " backslash \\ newline \n nul \x00 surrogate \udcff emoji 😀')
    log.warning("extras", extra={"nan": float("nan"), "obj": object(), "b": b"\xff", "ts": "collide"})
    circular: list[Any] = []
    circular.append(circular)
    log.warning("circular", extra={"c": circular, "k": {(1, 2): "tuple key"}})
    log.warning({"not": "a string"})
    lines = _lines(stream)
    assert len(lines) == 4
    assert lines[0]["msg"].startswith('quote " backslash \\ newline \n nul \x00')
    assert lines[1]["nan"] == "nan" and lines[1]["ts"] != "collide" and lines[1]["extra_ts"] == "collide"
    assert lines[1]["b"] == "b'\\xff'"
    assert lines[2]["msg"] == "circular"
    assert lines[3]["msg"] == "{'not': 'a string'}"
    assert stream.getvalue().isascii()


def test_bad_format_arguments_do_not_raise() -> None:
    # Formatted directly: pytest's own log capture would raise on this record before ours sees it.
    record = logging.LogRecord("pillion.z", logging.WARNING, __file__, 1, "bad %d", ("not a number",), None)
    line = json.loads(JsonFormatter().format(record))
    assert "bad %d" in line["msg"] and "not a number" in line["msg"]


def test_level_threshold_and_replacing_handlers(stream: io.StringIO) -> None:
    out = io.StringIO()
    setup_logging("WARNING", stream=out)
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("pillion.y").info("hidden")
    logging.getLogger("pillion.y").error("shown")
    assert [line["msg"] for line in _lines(out)] == ["shown"]
    assert stream.getvalue() == ""


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("verbose")
