"""The worker's periodic heap trim gives freed memory back to the OS (keywatch/memtrim.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keywatch import memtrim

# In a fresh process: 64 MB of 2 KB strings (over pymalloc's 512 bytes: glibc's heap), then one
# long-lived allocation above them, then the strings freed. The heap's top is in use, so glibc
# keeps the freed 64 MB resident until `trim()` returns it.
_PINNED = """
import gc, json
from keywatch import memtrim
chunks = [bytes(2048) + i.to_bytes(4, "little") for i in range(32_000)]
keep = bytes(4096)
r0 = memtrim.resident_bytes()
del chunks; gc.collect()
r1 = memtrim.resident_bytes()
released = memtrim.trim()
print(json.dumps({"before_free": r0, "after_free": r1, "released": released, "after_trim": memtrim.resident_bytes()}))
"""


@pytest.mark.skipif(not memtrim.available(), reason="no glibc malloc_trim here")
def test_trim_returns_freed_heap_memory_that_glibc_kept():
    out = subprocess.run([sys.executable, "-c", _PINNED], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    freed = 32_000 * 2048
    assert r["before_free"] - r["after_free"] < freed / 4, r  # freeing alone gives little back
    assert r["released"] > freed / 2 and r["after_free"] - r["after_trim"] > freed / 2, r


def test_trimmer_runs_at_its_interval_and_zero_turns_it_off():
    t = memtrim.HeapTrimmer(every_s=10.0)
    assert [t.maybe(now=x) for x in (100.0, 105.0)] == [None, None] and t.trims == 0
    t.maybe(now=110.0)
    assert t.trims == (1 if memtrim.available() else 0)
    assert t.maybe(now=115.0) is None and t.next_at == 120.0
    off = memtrim.HeapTrimmer(every_s=0.0)
    assert off.maybe(now=1e9) is None and off.trims == 0
