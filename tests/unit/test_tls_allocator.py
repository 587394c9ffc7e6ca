"""tune_for_tls: a large buffer that is shrunk and freed (what every TLS read does) reuses heap memory.

Each case runs in a fresh interpreter, since mallopt changes the whole process. The untuned control shows
the pattern the tuning removes: an mmap, a page fault per touched page, an mremap and a munmap per read.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# 200 reads the way CPython's SSLObject.read(256 KiB) does them: allocate, fill, shrink, free.
_PROGRAM = """
import sys
def minor_faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
if sys.argv[1] == "tuned":
    from pillion.tls.allocator import tune_for_tls
    assert tune_for_tls(), "mallopt refused"
before = minor_faults()
for _ in range(200):
    buf = bytearray(262144)
    del buf[4096:]
    del buf
print(minor_faults() - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_tuned_reads_reuse_the_heap() -> None:
    untuned, tuned = _faults("untuned"), _faults("tuned")
    assert untuned > 200 * 60  # each read faults its 64 pages in afresh
    assert tuned < 200  # the first read faults them in once; the rest reuse them
