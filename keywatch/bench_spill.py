"""How long a change of the idle keys' spill file (models/spill.py) can hold up detection.

A `SpillDict` of `values` packed states (`size` bytes each, as an idle key's two are together)
is churned — random keys replaced, as keys wake and go idle again — until its dead bytes have
set off two compactions. The figure is the longest single change (a replacement), in ms, of
all and of those that started or moved a compaction (the rest is the machine's own noise):
with `COMPACT_STEP` values moved per change (the default), and, in the same run, with all of
them moved at once (`COMPACT_STEP = 0`, the code until session 27) as the baseline. The total
time of the churn is reported beside it: moving in steps should cost no more in all.

>>> r = spill_pause(2_000, size=100, compact_min=50_000)
>>> r["stepped"]["compactions"] >= 2 and r["all_at_once"]["compactions"] >= 2
True
"""

from __future__ import annotations

import random
import tempfile
import time

from keywatch.models import spill


def _churn(values: int, size: int, step: int, compact_min: int, seed: int) -> dict:
    saved = spill.COMPACT_STEP, spill.COMPACT_MIN
    spill.COMPACT_STEP, spill.COMPACT_MIN = step, compact_min
    rng = random.Random(seed)
    blob = rng.randbytes(size)
    try:
        with tempfile.TemporaryDirectory(prefix="kw-bench-spill-") as td:
            d = spill.SpillDict(len, directory=td)
            for k in range(values):
                d[k] = blob
            longest, compacting, changes, clock = 0.0, 0.0, 0, time.perf_counter
            started = clock()
            while d.compactions < 2:
                k = rng.randrange(values)
                before, moving = d.compactions, d.compacting
                t = clock()
                d[k] = blob  # a replacement: a delete (dead bytes), then an append
                took = clock() - t
                longest = took if took > longest else longest
                if moving or d.compactions != before:  # a change that started or moved a compaction
                    compacting = took if took > compacting else compacting
                changes += 1
            total, compactions = clock() - started, d.compactions
            assert all(d[k] == blob for k in range(0, values, max(1, values // 1000)))
    finally:
        spill.COMPACT_STEP, spill.COMPACT_MIN = saved
    return {"compactions": compactions, "changes": changes, "longest_ms": round(longest * 1e3, 2),
            "longest_compacting_ms": round(compacting * 1e3, 2),
            "total_s": round(total, 2), "us_per_change": round(total / changes * 1e6, 2)}


def spill_pause(values: int, size: int = 440, compact_min: int | None = None, seed: int = 1) -> dict:
    """The longest change, moved in steps and all at once, each over two compactions."""
    cmin = spill.COMPACT_MIN if compact_min is None else compact_min
    return {"values": values, "value_bytes": size, "step": spill.COMPACT_STEP,
            "stepped": _churn(values, size, spill.COMPACT_STEP, cmin, seed),
            "all_at_once": _churn(values, size, 0, cmin, seed)}


if __name__ == "__main__":  # python -m keywatch.bench_spill [values]
    import json
    import sys

    print(json.dumps(spill_pause(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
