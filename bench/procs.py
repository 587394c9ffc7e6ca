"""Child processes of the benchmark: start them pinned, account their CPU and memory, never leave one behind.

Theory of operation: every server (upstream nginx, HAProxy, proxy nginx, Pillion), every load generator
(wrk, hey) and every load-side helper (the slowloris attacker, the OTLP collector) is started through one
`ProcGroup`, as `taskset -c CPU argv...` in a session of its own (so a Ctrl-C at the terminal reaches only
the harness, which then stops the children in order) and with PR_SET_PDEATHSIG=SIGKILL (so even a
SIGKILLed harness takes its direct children with it). `taskset` execs the program, so the PID we hold is
the server's own PID; `ProcGroup.stop_all()` -- called from the harness's `finally` -- sends SIGTERM to
each child's process group (its pgid is its PID, because of the new session), waits, then SIGKILLs what
is left. Nothing is ever killed by name.

Accounting reads /proc directly:
  * CPU: utime+stime (fields 14 and 15 of /proc/PID/stat, in clock ticks of 1/SC_CLK_TCK s) summed over
    the process and all its descendants (nginx master + workers). The kernel reports a thread group's
    total, so threads are included, and the utime+stime sum is scaled to the precise runtime; only its
    resolution is one tick (10 ms at USER_HZ=100). A descendant that exits between two samples takes its
    ticks with it -- `CpuSample.pids` lets the caller notice. `schedstat_ns` (sum over the threads'
    /proc/PID/task/TID/schedstat) is a nanosecond-resolution cross-check.
  * Memory: VmRSS from /proc/PID/status summed over the tree (shared pages of nginx master and worker are
    counted twice, as the brief asks), plus Pss from /proc/PID/smaps_rollup as the fair share.
  * Machine: per-core busy/steal ticks from /proc/stat, so the harness can tell how much CPU something
    *outside* the benchmark used during a measurement (other people's jobs on a shared box).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.,]+Z?")


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: ask the kernel to SIGKILL this child when the harness dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """argv prefixed with `taskset -c CPU` (taskset execs, so the PID stays the program's)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


@dataclass
class Proc:
    """A long-running child (a server) whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 12, width: int = 400) -> str:
        """The last lines of the child's stdout+stderr (for FAILED rows), made readable.

        Repeats that differ only by timestamp are collapsed into one line with a count, and long lines
        keep their start and end (where a JSON log record's exception ends).
        """
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        collapsed: list[tuple[str, int]] = []
        for line in text.rstrip().splitlines():
            key = _TIMESTAMP.sub("", line)
            if collapsed and _TIMESTAMP.sub("", collapsed[-1][0]) == key:
                collapsed[-1] = (line, collapsed[-1][1] + 1)
            else:
                collapsed.append((line, 1))
        out = []
        for line, count in collapsed[-lines:]:
            short = line if len(line) <= width else f"{line[: width // 3]} ... {line[-(2 * width) // 3 :]}"
            out.append(short if count == 1 else f"{short}\n    (the line above, {count} times)")
        return "\n".join(out)


@dataclass(frozen=True)
class Completed:
    """A finished short-lived child (wrk, hey)."""

    returncode: int
    stdout: str
    stderr: str


class ProcGroup:
    """Every child the harness starts; `stop_all()` ends all of them, servers last-started first."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self._running: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, name: str, argv: list[str], log: Path, cpu: int | None, env: dict[str, str] | None = None
    ) -> Proc:
        """Start a server; raises OSError if the program cannot be executed at all."""
        with log.open("wb") as out:
            popen = subprocess.Popen(
                pinned(argv, cpu),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,  # noqa: PLW1509 - single-threaded harness
                env=env,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], cpu: int | None, timeout: float) -> Completed:
        """Run a load generator to completion, capturing its output; killed if it overruns `timeout`."""
        popen = subprocess.Popen(
            pinned(argv, cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_setup,  # noqa: PLW1509 - single-threaded harness
        )
        self._running.append(popen)
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
            err += f"\n(killed after {timeout:.0f} s timeout)".encode()
        finally:
            if popen.poll() is None:  # interrupted (KeyboardInterrupt) while waiting
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
            self._running.remove(popen)
        return Completed(popen.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """SIGTERM the child's process group, wait up to `grace` seconds, then SIGKILL the group."""
        if proc.alive():
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=grace)
        # Even after the leader exits, members of its group (nginx workers) may remain.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=2.0)

    def stop_all(self) -> None:
        for popen in list(self._running):
            _signal_group(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=2.0)
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ---- /proc accounting -------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the `(comm)` field (which may contain spaces): [state, ppid, ...]."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
            todo.extend(children.get(pid, []))
    return sorted(found)


@dataclass(frozen=True)
class CpuSample:
    """CPU used so far by a process tree: ticks (utime+stime) and schedstat nanoseconds."""

    ticks: int
    schedstat_ns: int
    pids: tuple[int, ...]

    def seconds(self) -> float:
        return self.ticks / CLK_TCK


def cpu_sample(root: int) -> CpuSample:
    ticks = 0
    nanos = 0
    pids = tree(root)
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of the full line)
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    nanos += int(Path(task.path, "schedstat").read_text().split()[0])
    return CpuSample(ticks, nanos, tuple(pids))


def process_ticks() -> dict[int, int]:
    """utime+stime of every process on the machine (to find who else used the CPU during a run)."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = _stat_fields(int(entry.name))
                out[int(entry.name)] = int(fields[11]) + int(fields[12])
    return out


def describe(pid: int, width: int = 70) -> str:
    """A short human name for a process: its command line, else its comm."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        if not cmd:
            raw = Path(f"/proc/{pid}/stat").read_text()
            cmd = "[" + raw[raw.index("(") + 1 : raw.rindex(")")] + "]"
    except (OSError, ValueError):
        return f"pid {pid} (exited)"
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."


def _status_kib(pid: int, key: str, filename: str = "status") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/{filename}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kib(root: int) -> int:
    """VmRSS summed over the tree, in KiB."""
    return sum(_status_kib(pid, "VmRSS") or 0 for pid in tree(root))


def pss_kib(root: int) -> int | None:
    """Pss summed over the tree (None where smaps_rollup is unavailable)."""
    values = [_status_kib(pid, "Pss", "smaps_rollup") for pid in tree(root)]
    return None if any(v is None for v in values) else sum(v or 0 for v in values)


@dataclass(frozen=True)
class MachineSample:
    """Per-core busy and steal ticks from /proc/stat, and the harness's own and reaped children's CPU."""

    busy: dict[int, int]
    steal: dict[int, int]
    self_s: float
    children_s: float
    wall: float


def machine_sample() -> MachineSample:
    busy: dict[int, int] = {}
    steal: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        v = [int(x) for x in values]
        # user nice system idle iowait irq softirq steal guest guest_nice; guest time is inside user.
        core = int(name[3:])
        busy[core] = v[0] + v[1] + v[2] + v[5] + v[6]
        steal[core] = v[7] if len(v) > 7 else 0
    times = os.times()
    return MachineSample(
        busy, steal, times.user + times.system, times.children_user + times.children_system, time.monotonic()
    )


# ---- HTTP probes --------------------------------------------------------------------------------------


def http_exchange(
    host: str,
    port: int,
    path: str,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET on a fresh connection (no proxy environment variables involved): the status, the response
    header fields and the body. `headers` may replace Host. With `context`, over TLS (the mTLS pairs'
    server sides)."""
    conn = (
        http.client.HTTPConnection(host, port, timeout=timeout)
        if context is None
        else http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def http_get(
    host: str,
    port: int,
    path: str,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """`http_exchange` without the response header fields: (status, body)."""
    status, _, body = http_exchange(host, port, path, timeout, headers, context=context)
    return status, body


def tls_session(host: str, port: int, context: ssl.SSLContext, timeout: float = 2.0) -> str:
    """The TLS version and cipher suite a handshake with `host:port` negotiates, e.g. "TLSv1.3
    TLS_AES_256_GCM_SHA384" (ssl.SSLError, an OSError, when it fails)."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw) as tls,
    ):
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def wait_http(
    host: str,
    port: int,
    path: str,
    timeout: float,
    proc: Proc | None = None,
    *,
    context: ssl.SSLContext | None = None,
) -> None:
    """Poll until GET `path` answers 200; raise RuntimeError (with the last problem) on timeout or exit."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with status {proc.popen.returncode} before it was ready")
        try:
            status, _ = http_get(host, port, path, timeout=1.0, context=context)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    scheme = "http" if context is None else "https"
    raise RuntimeError(
        f"GET {scheme}://{host}:{port}{path} did not answer 200 within {timeout:.0f} s ({last})"
    )
