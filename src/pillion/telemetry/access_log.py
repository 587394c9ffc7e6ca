"""The access log: one JSON line per request, buffered, written off the event loop.

Theory of operation (Envoy's design): `write` runs on the event loop for every request, so it only formats
a line and appends it to a list -- about a microsecond and a half. The line is a hand-built f-string whose
string fields go through the C JSON string escaper (`encode_basestring_ascii`), which was 3-4x faster than
`json.dumps` on a dict when measured and is equally correct: any character, control bytes and lone
surrogates included, comes out as a valid ASCII JSON string. A path given as `bytes` (straight from the
parser) is decoded as UTF-8 with undecodable bytes kept visible as `\\xNN` text.

When the buffer passes 64 KiB, or when the owner calls `flush()` (about once a second, and at shutdown),
the list is handed to a writer thread through a queue. Only that thread touches the file, so a slow disk
or a stdout pipe nobody reads blocks the thread, never the loop. If the thread falls far behind (more than
`max_pending_chunks` chunks queued, 4 MiB by default) further chunks are dropped and counted rather than
growing memory without bound. Write errors are counted and logged once; nothing here raises into the
request path. `close()` flushes, waits for the thread to write everything, and closes the file.

The counters `write_errors` and `dropped_lines` are plain ints for the owner to export as metrics; each
is written by one thread only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from json.encoder import encode_basestring_ascii as _esc
from time import time as _now

__all__ = ["AccessLog"]

log = logging.getLogger("pillion.access_log")

FLUSH_BYTES = 64 * 1024
# "000".."999": indexing this is a quarter of the cost of formatting `{ms:03d}` per line. The index adds
# 0.1 us before truncating so that e.g. .001, stored as .000999..., still reads 001; the extra last entry
# catches the .9999999 that this nudges to 1000.
_MILLIS = (*(f"{i:03d}" for i in range(1000)), "999")
_STOP = None


class AccessLog:
    def __init__(self, path: str, *, max_pending_chunks: int = 64) -> None:
        """Open `path` for appending (`-` means standard output). Raises OSError if it cannot be opened:
        a bad path is a configuration error best reported at startup."""
        self.path = path
        self.write_errors = 0
        self.dropped_lines = 0
        if path == "-":
            # A duplicate of fd 1, so closing the log never closes the process's stdout.
            self._fd = os.dup(1)
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._buf: list[str] = []
        self._size = 0
        self._max_pending = max_pending_chunks
        self._closed = False
        self._error_logged = False
        self._sec = -1
        self._sec_text = ""
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pillion-access-log", daemon=True)
        self._thread.start()

    def write(
        self,
        *,
        method: str,
        path: str | bytes,
        status: int,
        bytes_sent: int,
        bytes_received: int,
        duration: float,
        upstream: str,
        request_id: str,
        error: str,
        listener: str,
        flags: str = "",
        route: str,
        cluster: str,
        ts: float = 0.0,
    ) -> None:
        """Log one request. Keyword-only, so a dozen fields cannot be silently swapped.

        `duration` is seconds from the request's first byte to its response's last (logged as
        `duration_ms`, 3 decimals); the same number the duration histogram observes. `ts` is the start as
        a Unix time; by default it is now minus `duration`, which spares the caller a wall-clock read at
        request start. `upstream` and `error` are "" when there is none."""
        if not ts:
            ts = _now() - duration
        if not isinstance(path, str):
            path = path.decode("utf-8", "backslashreplace")
        sec = int(ts)
        if sec != self._sec:
            # strftime costs more than the rest of the line; it changes once a second.
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        ms = _MILLIS[int((ts - sec) * 1000 + 1e-4)]
        line = (
            f'{{"ts":"{self._sec_text}.{ms}Z","listener":{_esc(listener)},"route":{_esc(route)},'
            f'"method":{_esc(method)},"path":{_esc(path)},"status":{status:d},'
            f'"bytes_sent":{bytes_sent:d},"bytes_received":{bytes_received:d},'
            f'"duration_ms":{duration * 1000:.3f},"upstream":{_esc(upstream)},"cluster":{_esc(cluster)},'
            f'"request_id":{_esc(request_id)},"error":{_esc(error)},"flags":"{flags}"}}\n'
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered lines to the writer thread. Cheap; never blocks on I/O."""
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
        self._thread.join(timeout)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _STOP:
            data = "".join(chunk).encode("ascii")  # lines are ASCII by construction
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self.write_errors += 1
                self._report("access log write failed", exc)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _report(self, msg: str, exc: OSError | None) -> None:
        # Once per process lifetime: a full disk would otherwise turn every flush into a log line.
        if not self._error_logged:
            self._error_logged = True
            log.error(msg, extra={"path": self.path, "error": repr(exc) if exc else ""})
