"""Run a subprocess for a test, wait until it serves, and always stop it.

Theory of operation: `ProcessRunner` starts the command in its own session (so it and anything it forks
share one process group), with stdout and stderr going to temporary files rather than pipes: a chatty
process can never block on a full pipe, and the tail of stderr is at hand for error messages. Readiness is
polled (a TCP connect, or an HTTP GET answering the expected status) within a bounded time; if the
process exits or the time runs out, `ProcessStartError` carries the exit code and the stderr tail.

Stopping sends SIGTERM to the group, waits `stop_timeout`, then SIGKILLs it. The context managers stop
on every exit path, and an atexit hook stops any runner still alive when the interpreter leaves, so a
test can fail however it likes without leaking processes. Use `with` from sync tests and `async with`
from async ones: the async waits poll with asyncio.sleep, so an in-process upstream the child talks to
keeps being served while we wait.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

import httptools

POLL_SECONDS = 0.05
TAIL_BYTES = 4000

# Strong references: a runner dropped without stop() must still be stopped at exit.
_running: set[ProcessRunner] = set()


class ProcessStartError(RuntimeError):
    """The process exited or never became ready; the message ends with its stderr tail."""


class ProcessRunner:
    """`with ProcessRunner([...], wait_port=("127.0.0.1", port)) as proc:` ... stopped on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        wait_port: tuple[str, int] | None = None,
        wait_url: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """`env` is added to (not substituted for) the current environment."""
        self.argv = list(argv)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.wait_port = wait_port
        self.wait_url = wait_url
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._final_output: tuple[str, str] | None = None  # (stdout, stderr) once stopped

    # lifecycle

    def start(self) -> Self:
        """Start the process (without waiting for readiness)."""
        if self.popen is not None:
            raise RuntimeError("already started")
        # The files outlive this method (they are read after the child exits); _finish closes them.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                start_new_session=True,
            )
        except BaseException:
            self._stdout.close()
            self._stderr.close()
            raise
        _running.add(self)
        return self

    def stop(self) -> int | None:
        """SIGTERM the group, SIGKILL it after stop_timeout; returns the exit code."""
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                popen.wait()
        self._finish()
        return popen.returncode

    async def async_stop(self) -> int | None:
        """stop() without blocking the event loop while the child shuts down."""
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            # Popen.wait in a thread: the loop keeps serving whatever the child talks to while it drains.
            try:
                await asyncio.to_thread(popen.wait, self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                await asyncio.to_thread(popen.wait)
        self._finish()
        return popen.returncode

    def __enter__(self) -> Self:
        self.start()
        try:
            if self.wait_port is not None:
                self.wait_for_port(*self.wait_port)
            if self.wait_url is not None:
                self.wait_for_http(self.wait_url)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        try:
            if self.wait_port is not None:
                await self.async_wait_for_port(*self.wait_port)
            if self.wait_url is not None:
                await self.async_wait_for_http(self.wait_url)
        except BaseException:
            await self.async_stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.async_stop()

    # readiness

    def wait_for_port(self, host: str, port: int, time_limit: float | None = None) -> None:
        deadline = time.monotonic() + (self.startup_timeout if time_limit is None else time_limit)
        while not _port_open(host, port):
            self._check_progress(deadline, f"port {host}:{port} to accept")
            time.sleep(POLL_SECONDS)

    async def async_wait_for_port(self, host: str, port: int, time_limit: float | None = None) -> None:
        deadline = time.monotonic() + (self.startup_timeout if time_limit is None else time_limit)
        while not await _async_port_open(host, port):
            self._check_progress(deadline, f"port {host}:{port} to accept")
            await asyncio.sleep(POLL_SECONDS)

    def wait_for_http(self, url: str, time_limit: float | None = None, status: int = 200) -> None:
        """Poll GET `url` (http only) until it answers `status`."""
        deadline = time.monotonic() + (self.startup_timeout if time_limit is None else time_limit)
        while _http_status(url) != status:
            self._check_progress(deadline, f"GET {url} to answer {status}")
            time.sleep(POLL_SECONDS)

    async def async_wait_for_http(self, url: str, time_limit: float | None = None, status: int = 200) -> None:
        deadline = time.monotonic() + (self.startup_timeout if time_limit is None else time_limit)
        while await _async_http_status(url) != status:
            self._check_progress(deadline, f"GET {url} to answer {status}")
            await asyncio.sleep(POLL_SECONDS)

    # inspection

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError("not started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (e.g. SIGHUP to reload), not its group."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stdout_text(self) -> str:
        return self._final_output[0] if self._final_output else _read_all(self._stdout)

    def stderr_text(self) -> str:
        return self._final_output[1] if self._final_output else _read_all(self._stderr)

    def stderr_tail(self, limit: int = TAIL_BYTES) -> str:
        return self.stderr_text()[-limit:]

    # internals

    def _check_progress(self, deadline: float, waiting_for: str) -> None:
        code = self.returncode
        if code is not None:
            raise ProcessStartError(
                self._describe(f"exited with code {code} while waiting for {waiting_for}")
            )
        if time.monotonic() > deadline:
            raise ProcessStartError(self._describe(f"timed out waiting for {waiting_for}"))

    def _describe(self, what: str) -> str:
        return f"{' '.join(self.argv)}: {what}\n--- stderr tail ---\n{self.stderr_tail()}"

    def _signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        # The child leads its own session, so its pid is the group id; the group may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def _finish(self) -> None:
        if self._final_output is not None:
            return
        # Children that ignored SIGTERM after their parent exited still belong to the group.
        self._signal_group(signal.SIGKILL)
        _running.discard(self)
        self._final_output = (_read_all(self._stdout), _read_all(self._stderr))
        for file in (self._stdout, self._stderr):
            if file is not None:
                file.close()


def _read_all(file: IO[bytes] | None) -> str:
    if file is None:
        return ""
    # pread, not seek + read: the child shares this file's offset, and moving it would make the child
    # overwrite its own earlier output.
    fd = file.fileno()
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    return data.decode("utf-8", errors="replace")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=POLL_SECONDS * 4):
            return True
    except OSError:
        return False


async def _async_port_open(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(POLL_SECONDS * 4):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs are supported: {url}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def _http_status(url: str) -> int | None:
    host, port, path = _split(url)
    # http.client rather than urllib: no proxy environment variables can reroute a loopback probe.
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


async def _async_http_status(url: str) -> int | None:
    from pillion.testing.http import http_request

    host, port, path = _split(url)
    try:
        return (await http_request(host, port, "GET", path, time_limit=1.0)).status
    except (OSError, TimeoutError, ValueError, httptools.HttpParserError):
        return None


@atexit.register
def _stop_leftovers() -> None:
    for runner in list(_running):
        with contextlib.suppress(Exception):
            runner.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args...` with this interpreter (the test's virtualenv)."""
    return [sys.executable, "-m", module, *args]


async def run_tool(argv: Sequence[str], stdin: bytes = b"", seconds: float = 5.0) -> tuple[int, bytes, bytes]:
    """Run a tool (curl, openssl...) to completion without blocking the loop, which may be serving the
    sidecar it talks to: (exit code, stdout, stderr). Killed and reaped if it runs past `seconds`."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(seconds):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        raise AssertionError(f"{' '.join(argv)} still running after {seconds}s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err
