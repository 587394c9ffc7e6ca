"""The access log: one line per request (JSON, or text from a template), buffered, written off the loop.

Theory of operation (Envoy's design): `write` runs on the event loop for every request, so it only formats
a line and appends it to a list -- about a microsecond. The JSON line is built as bytes, one `%b` format
(compiled, a single allocation and copy), from the parser's own bytes for the method and the ids, so
nothing is decoded and the writer thread joins the lines without an encode. Its string fields go through
the C JSON string escaper (`encode_basestring_ascii`), which was 3-4x faster than `json.dumps` on a dict
when measured and is equally correct: any character, control bytes and lone surrogates included, comes
out as a valid ASCII JSON string. A path given as `bytes` (straight from the parser) is decoded as UTF-8
with undecodable bytes kept visible as `\\xNN` text.

The text format is a template with `%FIELD%` placeholders (`TEXT_FIELDS`), compiled once, at startup,
into one generated function whose body is a single f-string (see `compile_text_format`), so a request
pays nothing to parse the template and no call per field: measured on the default template, a text line
costs what a JSON line does. The fields a client controls (method, path, request and trace ids) go
through the same JSON escaper, minus its quotes, so a text line is ASCII, one line, and a quoted field
cannot be broken out of.

Sampling (`sampling` < 1) drops a random share of requests before any formatting, so an unlogged request
costs one comparison and one `random()`; errors -- a status >= 500, or any `error` (a local reply, a
client disconnect, an upstream reset) -- are always logged, since they are what a log is read for.

Rotation: `reopen()` (SIGUSR1, after logrotate moved the file) flushes and queues a reopen marker behind
the lines already handed over. The writer thread, which alone owns the descriptor, reaches the marker in
order: every line written before the signal lands in the old (moved) file, every later one in the new
file, and none is lost or duplicated. The new descriptor is opened before the old is closed, so a
failure (a removed directory) leaves the log writing to the old file, counted and logged.

When the buffer passes 512 KiB, or when the owner calls `flush()` (about once a second, and at shutdown),
the list is handed to a writer thread through a queue. (Each hand-over costs a few thread switches and GIL
hand-offs on a busy core; at 64 KiB they were half the access log's cost per request, measured, so chunks
are large: 512 KiB is about 1,400 lines, a twentieth of a second at 30k requests/s.) Only that thread
touches the file, so a slow disk or a stdout pipe nobody reads blocks the thread, never the loop. If the
thread falls far behind (more than `max_pending_chunks` chunks queued, 4 MiB by default) further chunks
are dropped and counted rather than growing memory without bound. Write errors are counted and logged
once; nothing here raises into the request path. `close()` flushes, waits for the thread to write
everything, and closes the file.

Page cache: a log is written once and read at most once more, soon, by a shipper tailing it. Left in the
page cache it is charged to the pod's memory cgroup and pushes out pages the app reads again. So, for a
regular file, after each chunk the writer asks the kernel (`posix_fadvise(DONTNEED)`) to drop the file's
pages more than `KEEP_CACHED` bytes behind its end -- the tail a shipper is still reading stays cached --
as PostgreSQL does for its WAL. The call starts writeback of the older dirty pages and drops the clean
ones; what is still being written is dropped by the next call. Measured on the benchmark: writing into
recycled pages instead of fresh ones cut the writer thread's kernel time from ~0.6 to ~0.2 us a line.

The counters `write_errors` and `dropped_lines` are plain ints for the owner to export as metrics; each
is written by one thread only.
"""

from __future__ import annotations

import contextlib
import json.encoder
import logging
import os
import queue
import random
import re
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from pillion.config.model import AccessLog as AccessLogConfig

__all__ = ["TEXT_FIELDS", "AccessLog", "LogScope", "TextLine", "compile_text_format"]

log: Final = logging.getLogger("pillion.access_log")
# Final, so that compiled code reads these from C statics rather than the module dict on each call.
_esc: Final = json.encoder.encode_basestring_ascii
_random: Final = random.random
_now: Final = time.time
_monotonic: Final = time.perf_counter  # the clock of the owner's `start` times (CLOCK_MONOTONIC)

FLUSH_BYTES: Final = 512 * 1024
# "000".."999": indexing this is a quarter of the cost of formatting `{ms:03d}` per line. The index adds
# 0.1 us before truncating so that e.g. .001, stored as .000999..., still reads 001; the extra last entry
# catches the .9999999 that this nudges to 1000.
_MILLIS: Final = (*(b"%03d" % i for i in range(1000)), b"999")
_DOT_MILLIS: Final = tuple(b"." + m for m in _MILLIS)  # a duration's fraction, with its dot
_EMPTY: Final = b'""'  # an empty JSON string
_GET_JSON: Final = b'"GET","path":"'  # the method's value with the key after it (see _method)
# The JSON line's end when there is no error and no flag: nearly every line.
_CLEAN_TAIL: Final = b'","error":"","flags":""}\n'
_QUOTES_CACHED: Final = 256  # methods and upstream addresses: a sidecar sees a handful of each
_STOP = None
# Queued by reopen(); compared by identity (flush never queues an empty chunk).
_REOPEN: Final[list[bytes]] = []
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
# The file's last bytes kept in the page cache for a shipper tailing it: ~2 s of lines at 30k req/s.
KEEP_CACHED: Final = 8 * 1024 * 1024

# A text template compiles to one function of these values, in this order (see `compile_text_format`).
_PARAMS: Final = (
    "start", "method", "path", "status", "flags", "bytes_received", "bytes_sent", "duration",
    "upstream_duration", "upstream", "request_id", "trace_id", "listener", "route", "cluster", "error",
)  # fmt: skip
TextLine = Callable[
    [str, str, str, int, str, int, int, float, float | None, str, str, str, str, str, str, str], str
]


_NUMBERS: Final = tuple(b"%d" % i for i in range(1024))  # status codes, small sizes and durations


def _number(n: int) -> bytes:
    """`n` in decimal, from a table for the small numbers most fields hold (a lookup, not a conversion)."""
    return _NUMBERS[n] if 0 <= n < 1024 else b"%d" % n


# The status with the path's closing quote and its key before it: one piece of the line, not three.
_STATUSES: Final = tuple(b'","status":%d' % i for i in range(600))


def _status(code: int) -> bytes:
    return _STATUSES[code] if 0 <= code < 600 else b'","status":%d' % code


def _remember(cache: dict[str | bytes, bytes], key: str | bytes, part: bytes) -> bytes:
    """Store `part` for `key` while `cache` is under its bound (clients choose these values), return it."""
    if len(cache) < _QUOTES_CACHED:
        cache[key] = part
    return part


def _quote(value: str | bytes) -> bytes:
    """`value` as an ASCII JSON string, quotes included."""
    return _esc(_text(value)).encode("ascii")


def _text(value: str | bytes) -> str:
    # A field given as the parser's bytes, for the text format (Latin-1: every byte is one character).
    return value if isinstance(value, str) else value.decode("latin-1")


class LogScope:
    """Where a request was served -- listener, route, cluster -- with its JSON fields rendered once.

    These three are the same for every request a route serves, so the owner asks for a scope per route
    (`AccessLog.scope`) and hands it to each `write`, which then pays nothing to escape or format them."""

    __slots__ = ("_upstreams", "cluster", "cluster_json", "json", "listener", "route")

    def __init__(self, listener: str, route: str, cluster: str) -> None:
        self.listener = listener
        self.route = route
        self.cluster = cluster
        # The JSON line's fields between "ts" and "method", and "cluster" with the keys around it (it
        # is written between "upstream" and the request id's value).
        self.json = f'"listener":{_esc(listener)},"route":{_esc(route)},"method":'.encode("ascii")
        self.cluster_json = f',"cluster":{_esc(cluster)},"request_id":"'.encode("ascii")
        self._upstreams: dict[str | bytes, bytes] = {}  # see upstream_json

    def upstream_json(self, upstream: str) -> bytes:
        """`,"upstream":"ADDRESS"` and this scope's cluster with the keys around it, from a cache: a route
        sends to a handful of endpoints."""
        part = self._upstreams.get(upstream)
        if part is not None:
            return part
        part = b',"upstream":%b%b' % (_quote(upstream), self.cluster_json)
        return _remember(self._upstreams, upstream, part)


def _escaped(name: str) -> str:
    # Text a client controls: JSON-escaped without its quotes, so it stays on one ASCII line.
    return f"(_esc({name})[1:-1] if {name} else '-')"


def _millis(name: str) -> str:
    return f"('-' if {name} is None else f'{{{name} * 1000:.3f}}')"


# The placeholders of a text template, each with the expression that renders it. Method, path and the
# ids can carry a client's bytes and are escaped; the rest Pillion made itself (a validated name, an
# address, a reason, flags) and are written as they are. An empty value is written `-`.
TEXT_FIELDS: Final[dict[str, str]] = {
    "START_TIME": "start",
    "METHOD": _escaped("method"),
    "PATH": _escaped("path"),
    "RESPONSE_CODE": "status",
    "RESPONSE_FLAGS": "(flags or '-')",
    "BYTES_RECEIVED": "bytes_received",
    "BYTES_SENT": "bytes_sent",
    "DURATION": "duration * 1000:.3f",  # (the f-string's own format spec)
    "UPSTREAM_DURATION": _millis("upstream_duration"),
    "UPSTREAM_HOST": "(upstream or '-')",
    "REQUEST_ID": _escaped("request_id"),
    "TRACE_ID": _escaped("trace_id"),
    "LISTENER": "(listener or '-')",
    "ROUTE": "(route or '-')",
    "CLUSTER": "(cluster or '-')",
    "ERROR": "(error or '-')",
}

_PLACEHOLDER: Final = re.compile(r"%([^%]*)%")


def compile_text_format(template: str) -> TextLine:
    """The function that renders `template` as one line (newline included).

    It is generated source: one f-string alternating the template's literal text with the fields'
    expressions, so a line costs what the hand-written JSON f-string costs (a list of per-field getter
    functions, tried first, measured 75% slower than JSON on the default template: a call per field).
    The template itself never becomes source: its literal pieces are passed in as constants (`_l0`,
    `_l1`...) and its field names are only looked up in `TEXT_FIELDS`, so no template can inject code.

    Raises ValueError naming the problem: an unknown field, a lone `%`, a line break, non-ASCII text."""
    if "\n" in template or "\r" in template:
        raise ValueError("must be a single line (each request gets one line)")
    if not template.isascii():
        raise ValueError("must be ASCII (values are escaped to ASCII, so the line is ASCII)")
    constants: dict[str, object] = {"_esc": _esc}
    pieces: list[str] = []
    literal, pos = "", 0

    def add_literal(text: str) -> None:
        if text:
            name = f"_l{len(pieces)}"
            constants[name] = text
            pieces.append(f"{{{name}}}")

    for m in _PLACEHOLDER.finditer(template):
        literal += template[pos : m.start()]
        pos = m.end()
        field = m.group(1)
        if not field:  # %% is a literal %
            literal += "%"
            continue
        expression = TEXT_FIELDS.get(field)
        if expression is None:
            raise ValueError(f"unknown field %{field}% (known: {', '.join(TEXT_FIELDS)})")
        add_literal(literal)
        literal = ""
        pieces.append(f"{{{expression}}}")
    rest = template[pos:]
    if "%" in rest:
        raise ValueError("a '%' without its closing '%' (write %% for a literal %)")
    add_literal(literal + rest + "\n")
    source = f'def line({", ".join(_PARAMS)}):\n    return f"{"".join(pieces)}"\n'
    exec(compile(source, "<access log text_format>", "exec"), constants)
    return cast(TextLine, constants["line"])


class AccessLog:
    def __init__(
        self,
        path: str,
        *,
        text_format: str | None = None,
        sampling: float = 1.0,
        max_pending_chunks: int = 8,
        keep_cached: int = KEEP_CACHED,
    ) -> None:
        """Open `path` for appending (`-` means standard output). Raises OSError if it cannot be opened:
        a bad path is a configuration error best reported at startup.

        `text_format`: a template (see `compile_text_format`, ValueError if it is bad); None writes JSON.
        `sampling`: the share of non-error requests logged, 0 to 1. `keep_cached`: bytes at the file's end
        left in the page cache (see the module doc)."""
        if not 0.0 <= sampling <= 1.0:
            raise ValueError(f"sampling must be between 0 and 1, got {sampling}")
        self._text = compile_text_format(text_format) if text_format is not None else None
        self._sampling = sampling
        self.path = path
        self.write_errors = 0
        self.dropped_lines = 0
        self.reopens = 0  # reopens done by the writer thread (written by it only)
        if path == "-":
            # A duplicate of fd 1, so closing the log never closes the process's stdout.
            self._fd = os.dup(1)
        else:
            self._fd = os.open(path, _OPEN_FLAGS, 0o644)
        self._regular = _is_regular(self._fd)  # a file whose old pages can be dropped from the cache
        self._keep_cached = keep_cached
        self._buf: list[bytes] = []
        self._size = 0
        self._max_pending = max_pending_chunks
        self._closed = False
        self._error_logged = False
        self._sec = -1
        self._sec_text = ""
        self._sec_bytes = b""
        self._ms = -1  # the millisecond (0-999) of second `_sec` that `_ts_json` is for
        self._ts_json = b""  # `{"ts":"...Z",` for that millisecond: the lines of one share it
        # Seconds to add to a `start` (the owner's monotonic clock) to make it a Unix time; kept
        # current by `flush`, which the owner calls about once a second.
        self._wall = _now() - _monotonic()
        self._quotes: dict[str | bytes, bytes] = {}  # error values (see _quoted)
        self._methods: dict[str | bytes, bytes] = {}  # methods with the path's key (see _method)
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._run, name="pillion-access-log", daemon=True)
        self._writer.start()

    @classmethod
    def from_config(cls, config: AccessLogConfig) -> AccessLog:
        text_format = config.text_format if config.format == "text" else None
        return cls(config.path, text_format=text_format, sampling=config.sampling)

    @staticmethod
    def scope(listener: str, route: str, cluster: str) -> LogScope:
        """The scope to pass to `write` for requests served by this listener, route and cluster."""
        return LogScope(listener, route, cluster)

    def write(
        self,
        *,
        scope: LogScope,
        method: str | bytes,
        path: str | bytes,
        status: int,
        bytes_sent: int,
        bytes_received: int,
        duration: float,
        upstream: str,
        request_id: str | bytes,
        error: str,
        flags: str = "",
        trace_id: str | bytes = "",
        request_id_safe: bool = False,
        path_visible: bool = False,
        upstream_duration: float | None = None,
        start: float = 0.0,
        ts: float = 0.0,
    ) -> None:
        """Log one request (or, when sampling, maybe not). Keyword-only, so a dozen fields cannot be
        silently swapped. `scope` says where it was served (see `scope`).

        `duration` is seconds from the request's first byte to its response's last (logged as
        `duration_ms`, 3 decimals); the same number the duration histogram observes. `upstream_duration`
        is seconds from sending the request upstream to its response head, None (key left out, `-` in
        text) when no upstream answered. The start is `ts` (a Unix time) if given, else `start` (a
        `time.perf_counter()` time: the owner's clock, converted here without a clock read), else now
        minus `duration`. `upstream`, `error` and `trace_id` are "" when there is none.
        `request_id_safe` says the id needs no escaping (one Pillion made: hex and dashes);
        `path_visible` says every byte of a `bytes` path is visible ASCII (0x21-0x7e), as the request
        parser guarantees for a target it accepted, so only quotes and backslashes need looking for.
        `trace_id` is hex (the tracer's own, or one it validated), so it is written as it is. `method`,
        `upstream` and `error` take a handful of values each: their escaped forms are cached. Method,
        path and ids may be `bytes` as parsed (Latin-1; the path UTF-8) or `str`."""
        if self._sampling < 1.0 and status < 500 and not error and _random() >= self._sampling:
            return
        if not ts:
            ts = start + self._wall if start else _now() - duration
        text = self._text
        if text is not None:
            sec = int(ts)
            if sec != self._sec:
                self._sec_stamp(sec)
            millis = _MILLIS[int((ts - sec) * 1000 + 1e-4)].decode()
            if not isinstance(path, str):
                path = path.decode("utf-8", "backslashreplace")
            self._append(text(
                f"{self._sec_text}.{millis}Z", _text(method), path, status, flags, bytes_received,
                bytes_sent, duration, upstream_duration, upstream, _text(request_id), _text(trace_id),
                scope.listener, scope.route, scope.cluster, error,
            ).encode("ascii"))  # fmt: skip
            return
        # One bytes format of %b only: compiled, a single concatenation. Whatever is the same for many
        # lines comes as one piece: the time to the millisecond, the scope, the method with the path's
        # key, the status with its key, the upstream with its key and the cluster's, the clean end.
        # Durations are milliseconds with three decimals, rounded (what `:.3f` gives), from integer
        # microseconds and two table lookups: float formatting costs four times as much.
        sec = int(ts)
        ms = min(int((ts - sec) * 1000 + 1e-4), 999)
        # Second and millisecond compared apart: `sec * 1000` is past the range compiled code
        # multiplies natively, and a big-integer product cost more than the rest of this test.
        if ms != self._ms or sec != self._sec:
            self._stamp(sec, ms)
        # The path's JSON string without its quotes (the line has them).
        if isinstance(path, str):
            path_json = _esc(path)[1:-1].encode("ascii")
        elif path_visible and 34 not in path and 92 not in path:  # no '"', no '\\': as it is
            path_json = path
        else:
            path_json = _esc(path.decode("utf-8", "backslashreplace"))[1:-1].encode("ascii")
        if isinstance(request_id, bytes) and request_id_safe:
            rid = request_id
        else:
            rid = _esc(_text(request_id))[1:-1].encode("ascii")
        if error or flags:
            tail = b'","error":%b,"flags":"%b"}\n' % (
                self._quoted(error) if error else _EMPTY,
                flags.encode("ascii") if flags else b"",
            )
        else:
            tail = _CLEAN_TAIL
        us = int(duration * 1_000_000.0 + 0.5)
        # Two formats, with and without upstream_duration_ms, rather than that key as a piece of its
        # own: building the piece would be a second format per line.
        if upstream_duration is None:
            line = (
                b'%b%b%b%b%b,"bytes_sent":%b,"bytes_received":%b,"duration_ms":%b%b%b%b","trace_id":"%b%b'
                % (
                    self._ts_json, scope.json, self._method(method), path_json, _status(status),
                    _number(bytes_sent), _number(bytes_received), _number(us // 1000),
                    _DOT_MILLIS[us % 1000], scope.upstream_json(upstream), rid,
                    trace_id if isinstance(trace_id, bytes) else trace_id.encode("ascii"), tail,
                )
            )  # fmt: skip
        else:
            u = int(upstream_duration * 1_000_000.0 + 0.5)
            line = (
                b'%b%b%b%b%b,"bytes_sent":%b,"bytes_received":%b,"duration_ms":%b%b'
                b',"upstream_duration_ms":%b%b%b%b","trace_id":"%b%b'
                % (
                    self._ts_json, scope.json, self._method(method), path_json, _status(status),
                    _number(bytes_sent), _number(bytes_received), _number(us // 1000),
                    _DOT_MILLIS[us % 1000], _number(u // 1000), _DOT_MILLIS[u % 1000],
                    scope.upstream_json(upstream), rid,
                    trace_id if isinstance(trace_id, bytes) else trace_id.encode("ascii"), tail,
                )
            )  # fmt: skip
        self._append(line)

    def _stamp(self, sec: int, ms: int) -> None:
        """Make `_ts_json` the line start for millisecond `ms` (0-999) of second `sec`."""
        self._ms = ms
        if sec != self._sec:
            self._sec_stamp(sec)
        self._ts_json = b'{"ts":"%b.%bZ",' % (self._sec_bytes, _MILLIS[ms])

    def _sec_stamp(self, sec: int) -> None:
        # strftime costs more than the rest of a line; it changes once a second.
        self._sec = sec
        self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self._sec_bytes = self._sec_text.encode("ascii")

    def _append(self, line: bytes) -> None:
        self._buf.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def _method(self, method: str | bytes) -> bytes:
        """`"METHOD","path":"`: the method as a JSON string and the path's key, cached as `_quoted`."""
        # Most requests are GETs: a compare is a fraction of hashing the parser's new bytes each time.
        if method == b"GET":
            return _GET_JSON
        part = self._methods.get(method)
        return part if part is not None else _remember(self._methods, method, _quote(method) + b',"path":"')

    def _quoted(self, value: str | bytes) -> bytes:
        """`value` as a JSON string, from a cache for the few values of a field like the error: a dict
        lookup costs a seventh of escaping."""
        quoted = self._quotes.get(value)
        return quoted if quoted is not None else _remember(self._quotes, value, _quote(value))

    def flush(self) -> None:
        """Hand the buffered lines to the writer thread. Cheap; never blocks on I/O."""
        self._wall = _now() - _monotonic()  # follows the wall clock's steps and slews
        if not self._buf:
            return
        chunk, self._buf, self._size = self._buf, [], 0
        if self._closed:
            self.dropped_lines += len(chunk)
            return
        if self._queue.qsize() >= self._max_pending:
            self.dropped_lines += len(chunk)
            self._report("access log writer is behind; dropping lines", None)
            return
        self._queue.put(chunk)

    def reopen(self) -> None:
        """Reopen the file by its path (SIGUSR1, once logrotate has moved it); lines logged before this
        call go to the old file, later ones to the new. Never blocks; a no-op for standard output."""
        if self.path == "-" or self._closed:
            return
        self.flush()
        self._queue.put(_REOPEN)

    def close(self, timeout: float = 5.0) -> None:
        """Flush, wait up to `timeout` seconds for everything to be written, close the file. Idempotent.
        It blocks; from the event loop at shutdown that is intended, else use `asyncio.to_thread`."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(_STOP)
        # The writer closes the file after the last chunk. If it is stuck in a write (a pipe nobody
        # reads) we stop waiting; it closes the file when the write finally returns.
        self._writer.join(timeout)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _STOP:
            if chunk is _REOPEN:
                self._reopen()
                continue
            data = b"".join(chunk)  # lines are ASCII by construction
            try:
                view = memoryview(data)
                while view:
                    # Two statements: compiled by mypyc, `view[os.write(...):]` ran the write twice.
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as exc:
                self.write_errors += 1
                self._report("access log write failed", exc)
            if self._regular:
                _drop_cached(self._fd, self._keep_cached)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _reopen(self) -> None:
        # Open first: if the new file cannot be opened the old descriptor is kept, and lines keep
        # going somewhere (the moved file) rather than nowhere.
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            self.write_errors += 1
            # Logged every time, unlike write errors: a reopen happens once per rotation, not per flush.
            extra = {"path": self.path, "error": repr(exc)}
            log.error("access log reopen failed; still writing to the old file", extra=extra)
            return
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = fd
        self._regular = _is_regular(fd)
        self.reopens += 1
        log.info("access log reopened", extra={"path": self.path})

    def _report(self, msg: str, exc: OSError | None) -> None:
        # Once per process lifetime: a full disk would otherwise turn every flush into a log line.
        if not self._error_logged:
            self._error_logged = True
            log.error(msg, extra={"path": self.path, "error": repr(exc) if exc else ""})


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _drop_cached(fd: int, keep: int) -> None:
    """Ask the kernel to drop the file's pages more than `keep` bytes behind its end (advice: an error
    changes nothing that matters, so it is ignored)."""
    try:
        end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: the end, as of this thread's last write
        if end > keep:
            os.posix_fadvise(fd, 0, end - keep, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
