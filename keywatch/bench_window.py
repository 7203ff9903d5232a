"""How much the cost-spike scorer's sliding-window maxima hold per spend series, over time.

Each of a scorer's 10 records keeps the maximum of its smoothed surprise over the previous
`memory` (5,000) rows (models/univariate.py `_Record`). `CostSpikeDetector` keeps them for every
project and provider spend series in `UnivariateBank`'s pool (models/univariate_window.py), 12
bytes an entry. Until session 28 a record kept a monotone deque of rows: on a noisy series a few
entries, but while a smoothed surprise falls steadily, as it does for days on a series that
repeats itself, nearly every row, up to `memory` a record: 600 KB for one series. Since then it
keeps one entry per block of `BLOCK` (32) rows: at most ⌈memory / BLOCK⌉ + 1 a record, ≤ 19 KB.

This runs fresh scorers over series of one value a minute and prints the entries held (all 10
records) and their bytes in the bank's pool, at 2.5 hours (`keywatch bench`'s busy keys), one
day, 3.5 days (`memory` minutes) and a week, with blocks and, in the same run, with a block a
row (`block=1`: the exact window of session 27) as the baseline:

* `constant`: the same spend every minute (a scheduled job with a fixed prompt): no surprise
  at all, one entry a record;
* `alternating`: two values in turn (the busy bench's key alone in its project): the surprise
  falls steadily for days, and the exact window keeps nearly every row until it settles;
* `noisy`: 10 % Gaussian noise around a daily cycle;
* with `--nab DIR`, every NAB series too (at their own length): the largest and the median of
  each series' peak.

`python -m keywatch.bench_window [--nab ../shared/datasets/nab]` prints JSON (≈ 6 s with NAB).

>>> grows = held(alternating(400), marks=(150, 400), block=1)
>>> grows[150]["entries"] > 500, grows[400]["entries"] > 2 * grows[150]["entries"]
(True, True)
>>> held(alternating(400), marks=(400,))[400]["entries"] < 200, held(constant(400), marks=(400,), block=1)[400]["entries"]
(True, 10)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
from pathlib import Path

from keywatch.models.univariate import BLOCK, UnivariateAnomalyScorer
from keywatch.models.univariate_window import ROW_DTYPE

ENTRY_BYTES = 8 + ROW_DTYPE(0).itemsize  # a float64 value and its row number
MARKS = {"2.5 hours": 150, "1 day": 1440, "3.5 days": 5000, "1 week": 10_080}
MINUTE_MS = 60_000


def constant(minutes: int) -> list[float]:
    return [0.5] * minutes


def alternating(minutes: int) -> list[float]:
    return [0.5 if m % 2 else 0.7 for m in range(minutes)]


def noisy(minutes: int, seed: int = 3) -> list[float]:
    rnd = random.Random(seed)
    return [(1.0 + 0.5 * math.sin(2 * math.pi * m / 1440)) * (1 + rnd.gauss(0, 0.1)) for m in range(minutes)]


def held(values: list[float], marks=tuple(MARKS.values()), ts_ms: list[int] | None = None,
         block: int = BLOCK) -> dict[int, dict]:
    """Entries held by a fresh scorer's 10 deques after each of `marks` rows, and the largest
    number at any row up to it."""
    det, out, peak, want = UnivariateAnomalyScorer(block=block), {}, 0, set(marks)
    for i, v in enumerate(values, 1):
        det.update(ts_ms[i - 1] if ts_ms else i * MINUTE_MS, v)
        n = sum(len(c.top) for c in det.cal)
        peak = max(peak, n)
        if i in want:
            out[i] = {"entries": n, "peak_entries": peak, "pool_kb": round(n * ENTRY_BYTES / 1000, 1)}
    return out


def nab_peaks(root: Path, block: int = BLOCK) -> dict:
    """Each NAB series' peak of entries held (at its own length and sampling)."""
    from datetime import datetime, timezone

    peaks = {}
    for path in sorted((root / "data").glob("*/*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        ts = [int(datetime.fromisoformat(r[0]).replace(tzinfo=timezone.utc).timestamp() * 1000) for r in rows]
        got = held([float(r[1]) for r in rows], marks=(len(rows),), ts_ms=ts, block=block)
        peaks[f"{path.parent.name}/{path.name}"] = got[len(rows)]["peak_entries"]
    top = max(peaks, key=peaks.get)
    return {"series": len(peaks), "median_peak_entries": statistics.median(peaks.values()),
            "largest_peak_entries": peaks[top], "largest": top,
            "largest_peak_pool_kb": round(peaks[top] * ENTRY_BYTES / 1000, 1)}


def window_report(nab: Path | None = None) -> dict:
    """The three synthetic series at each of `MARKS`, and NAB's peaks if `nab` is given, with
    blocks (`BLOCK`) and with a block a row (`exact`, the baseline)."""
    last, memory = max(MARKS.values()), UnivariateAnomalyScorer().cal[0].memory
    out = {"entry_bytes": ENTRY_BYTES, "block": BLOCK,  # at most: 10 records × their entries
           "worst_case_pool_kb": round(10 * (-(-memory // BLOCK) + 1) * ENTRY_BYTES / 1000, 1),
           "exact_worst_case_pool_kb": round(10 * memory * ENTRY_BYTES / 1000, 1)}
    for name, make in (("constant", constant), ("alternating", alternating), ("noisy", noisy)):
        values = make(last)
        for key, block in ((name, BLOCK), (f"{name}_exact", 1)):
            got = held(values, block=block)
            out[key] = {label: got[m] for label, m in MARKS.items()}
    if nab:
        out["nab"], out["nab_exact"] = nab_peaks(nab), nab_peaks(nab, block=1)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nab", type=Path, help="NAB folder (data/*/*.csv)")
    out = window_report(ap.parse_args(argv).nab)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
