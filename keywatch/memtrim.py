"""Return freed heap memory to the OS, every `KEYWATCH_MEMORY_TRIM_S` (the worker).

Python hands allocations over 512 bytes (list and dict tables, large strings, numpy buffers)
to the C library's malloc. glibc keeps what is freed in its heap for reuse and gives back to
the OS only free memory at the heap's top: one long-lived allocation made high in the heap
during a busy batch keeps every page below it that is freed later. The worker's resident set
then carries its transients' high-water mark, not its state. `malloc_trim(0)` returns free
pages wherever they lie (glibc ≥ 2.8). Measured (keywatch/bench_memory.py, fresh processes):
per busy key 16.2 → 14.4 KB resident, per gateway-fronted key 24.1 → 18.1 KB, per mostly idle
key 3.86 → 3.61 KB; one call took 1–3 ms with 100k keys' state. Dask's workers trim for the
same reason ("unmanaged memory"). Where there is no glibc (musl, macOS) it does nothing.

>>> t = HeapTrimmer(every_s=600.0)
>>> t.maybe(now=0.0) is None, t.maybe(now=300.0) is None  # the first interval starts at 0
(True, True)
>>> released = t.maybe(now=600.0); t.trims == (1 if available() else 0)
True
>>> HeapTrimmer(every_s=0.0).maybe(now=1e9) is None  # 0: never
True
"""

from __future__ import annotations

import ctypes
import functools
import os
import time


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:  # the process's own symbols, as keywatch/procs.py finds prctl: libc's where it is glibc
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def available() -> bool:
    return _malloc_trim() is not None


def resident_bytes() -> int | None:
    """This process's resident set (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def trim() -> int | None:
    """Give free heap pages back to the OS now; bytes the resident set shrank by (≥ 0), or None
    where malloc_trim is not available. ctypes drops the GIL for the call."""
    fn = _malloc_trim()
    if fn is None:
        return None
    before = resident_bytes()
    fn(0)
    after = resident_bytes()
    return max(0, before - after) if before is not None and after is not None else 0


class HeapTrimmer:
    """`trim()` at most every `every_s` seconds (0: never), called from a periodic timer."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.next_at: float | None = None
        self.trims = 0  # the bytes returned go to keywatch_memory_trimmed_bytes_total (the worker)

    def maybe(self, now: float | None = None) -> int | None:
        """Trim if due; the bytes released, or None when nothing was done."""
        if self.every_s <= 0:
            return None
        now = time.monotonic() if now is None else now
        if self.next_at is None:
            self.next_at = now + self.every_s
            return None
        if now < self.next_at:
            return None
        self.next_at = now + self.every_s
        out = trim()
        if out is not None:
            self.trims += 1
        return out
