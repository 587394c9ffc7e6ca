"""Process metrics, computed at scrape time from the kernel (Linux `/proc/self`; no psutil).

Theory of operation: `register_process_metrics` declares the families and one collector. At each scrape the
collector reads CPU time (`os.times`, the same utime+stime `/proc/self/stat` holds), resident memory
(`/proc/self/statm` pages x page size) and open descriptors (entries of `/proc/self/fd`). The start time is
fixed, so it is computed once: boot time (`btime` in `/proc/stat`) plus the process's start in clock ticks
since boot (field 22 of `/proc/self/stat`). Where `/proc` is missing (not Linux) memory and fds read 0 and
the start time is the registration time, so the set of series never changes shape.

Names follow the Prometheus client libraries' `process_*` metrics with the `pillion_` prefix, so the usual
dashboards need only the prefix changed.
"""

from __future__ import annotations

import os
import time

from pillion import __version__
from pillion.telemetry.stats import Registry

__all__ = ["register_process_metrics", "resident_bytes"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def register_process_metrics(registry: Registry, version: str = __version__) -> None:
    cpu = registry.counter("pillion_process_cpu_seconds_total", "User and system CPU time spent, in seconds.")
    rss = registry.gauge("pillion_process_resident_memory_bytes", "Resident memory size in bytes.")
    fds = registry.gauge("pillion_process_open_fds", "Number of open file descriptors.")
    start = registry.gauge(
        "pillion_process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds."
    )
    info = registry.gauge(
        "pillion_build_info", "Always 1; the labels describe the running build.", labels=("version",)
    )
    info.labels(version).set(1)
    start.labels().set(_start_time())
    cpu_child, rss_child, fds_child = cpu.labels(), rss.labels(), fds.labels()

    def collect() -> None:
        t = os.times()
        # A counter set from the kernel's own monotonic total, not incremented: assigning is the point.
        cpu_child.value = t.user + t.system
        rss_child.value = resident_bytes()
        fds_child.value = _open_fds()

    registry.collector(collect)


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _open_fds() -> int:
    try:
        # listdir itself holds one descriptor open on the directory while it reads; do not count it.
        return max(len(os.listdir("/proc/self/fd")) - 1, 0)
    except OSError:
        return 0


def _start_time() -> float:
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) is in parentheses and may contain spaces or ')'; fields after the last
        # ')' start at field 3, so field 22 (starttime) is index 19 there.
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
