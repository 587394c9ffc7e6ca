"""glibc's allocator set up for TLS reads, so that each one does not cost three system calls.

Theory of operation. uvloop's TLS transport reads decrypted data with `SSLObject.read(256 KiB)`: CPython
allocates a 256 KiB bytes object and shrinks it to what was read. 256 KiB is over glibc's default
mmap threshold (128 KiB), so every read is an `mmap`, a page fault, an `mremap` to shrink and later a
`munmap`: measured on a TLS-terminating sidecar at 1000 req/s, one of each per request and about a
quarter of its CPU time. glibc raises the threshold by itself only after freeing a large mmapped block,
which this pattern never does (the block is shrunk first). `tune_for_tls()` sets the threshold to 1 MiB,
so the read buffer comes from the heap and is reused, and the trim threshold to twice that (the ratio
glibc's own adjustment keeps), so the heap's top is not given back and refaulted on every read. The cost
is at most 2 MiB of heap kept mapped, in a process that loads OpenSSL anyway. Only a process that uses
TLS calls it (ctypes alone is 0.7 MiB); on a libc without `mallopt` it does nothing.
"""

from __future__ import annotations

MMAP_THRESHOLD = 1 << 20  # bytes; above SSLObject.read's 256 KiB
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


def tune_for_tls() -> bool:
    """Raise glibc's mmap and trim thresholds; True if the C library accepted both."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no dynamic symbol table): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success and 0 on error.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
