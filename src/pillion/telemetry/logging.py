"""Process logs as one JSON object per line, through the standard `logging` module.

Theory of operation: `setup_logging` puts a single stream handler with `JsonFormatter` on the root logger.
Code logs as usual -- `log.info("listener bound", extra={"listener": "inbound", "address": "0.0.0.0:15006"})`
-- and every line comes out as `{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra fields>,
"exc": <traceback>}`. `ts` is ISO 8601 UTC with milliseconds. Extra fields are whatever attributes the
record carries beyond the standard ones, which is exactly what `extra=` adds.

A log line must always be valid JSON whatever it is given: values json cannot encode become their `repr`,
non-finite floats (which `json` would write as the invalid `NaN`) become strings, and a message whose
%-formatting fails is logged with its raw template and arguments instead of raising. Output is ASCII-only
(`\\uXXXX` escapes), so no encoding of the stream can break a line. Process logs are low volume, so the
handler writes synchronously; per-request output goes to the buffered `AccessLog` instead.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_CORE = ("ts", "level", "logger", "msg")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        secs = int(record.created)
        # The nudge makes .001 (stored as .000999...) read 001; min() catches .9999999 nudged to 1000.
        ms = min(int((record.created - secs) * 1000 + 1e-4), 999)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                # An extra field that collides with a core key must not overwrite it.
                out[f"extra_{key}" if key in _CORE or key == "exc" else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        try:
            return json.dumps(out, allow_nan=False, default=repr)
        except (ValueError, TypeError, RecursionError):
            # NaN/inf, circular structures, unsortable oddities: fall back to safe, flat values.
            return json.dumps({k: _safe(v) for k, v in out.items()}, allow_nan=False)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad %-format in a log call must not lose the line or raise
        return f"{record.msg!r} % {record.args!r}"


def _safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def setup_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send all process logs, at `level` and above, to `stream` (default: stderr) as JSON lines.

    Replaces any handlers already on the root logger, so calling it twice (tests, reloads) does not
    duplicate lines. Returns the handler. Raises ValueError for an unknown level name.
    """
    try:
        threshold = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    logging.captureWarnings(True)
    return handler
