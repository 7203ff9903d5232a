"""NAB evaluation of the univariate streaming detector behind cost spikes.

`UnivariateDetector` is the cost-spike engine for one series: the `SeasonalBank` forecaster
(hour-of-day / hour-of-week profiles, robust spread) plus a fast level tracker, whose
deviations go through the `TailCalibrator` calibration layer. It is strictly online: each row
is scored, then learnt. `run_nab` streams every NAB file through a fresh detector, writes
`<out>/<category>/<file>` CSVs (timestamp,value,anomaly_score) and scores them with
`nab_score.score_corpus`. Data are read at run time from the NAB folder, never stored here.

>>> import numpy as np
>>> det = UnivariateDetector(unit_s=300)
>>> rng = np.random.default_rng(1)
>>> s = [det.step(i * 300, 10 + rng.normal()) for i in range(3000)]
>>> s_spike = det.step(3000 * 300, 40.0)
>>> s_spike > max(s[1000:])
True
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from keywatch.models.forecast import SeasonalBank, TailCalibrator
from keywatch.models.nab_score import score_corpus


class UnivariateDetector:
    def __init__(self, unit_s: float = 60.0, k: float = 4.0, fast: float = 0.1, long_n: float = 1000.0, short_n: float = 5.0) -> None:
        self.bank = SeasonalBank(k=k, unit_s=unit_s, warmup_units=100)
        self.bank.add()
        self.cal = TailCalibrator(long_n=long_n, short_n=short_n)
        self.unit_s = unit_s
        self.a = fast
        self.mu = None
        self.dev = 0.0
        self.n = 0

    def step(self, t_s: float, x: float) -> float:
        """Score (in [0, 1]) then learn one observation at epoch seconds `t_s`."""
        t = int(t_s // self.unit_s)
        exp, spread = self.bank.forecast(t, [0])
        z_season = abs(x - float(exp[0])) / max(float(spread[0]), 1e-9)
        if self.mu is None:
            self.mu, z_fast = x, 0.0
        else:
            err = x - self.mu
            z_fast = abs(err) / max(1.25 * self.dev, 1e-9 + 1e-3 * abs(self.mu))
            self.dev += self.a * (min(abs(err), 6 * max(self.dev, 1e-9)) - self.dev) if self.n > 10 else (abs(err) - self.dev) / (self.n + 1)
            self.mu += self.a * err
        self.bank.step(t, np.array([x]))
        self.n += 1
        raw = math.log1p(max(z_season, z_fast) if self.n > 200 else z_fast)
        # Calibrated rarity in "decades" of tail probability → [0, 1) (monotone; NAB thresholds it).
        return 1.0 - math.exp(-float(self.cal.step_log(np.array([raw]))[0]) / 10.0)


def load_windows(root: Path) -> dict[str, list[tuple]]:
    doc = json.loads((root / "labels" / "combined_windows.json").read_text())
    return {k: [(np.datetime64(a.replace(" ", "T")), np.datetime64(b.replace(" ", "T"))) for a, b in v] for k, v in doc.items()}


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    raw_ts = [r[0] for r in rows]
    ts = np.array([np.datetime64(r.replace(" ", "T")) for r in raw_ts], dtype="datetime64[s]")
    return ts, np.array([float(r[1]) for r in rows]), raw_ts


def detect_file(ts: np.ndarray, values: np.ndarray, **kw) -> np.ndarray:
    secs = ts.astype(np.int64)
    unit = float(np.median(np.diff(secs))) if len(secs) > 1 else 60.0
    det = UnivariateDetector(unit_s=max(unit, 1.0), **kw)
    return np.array([det.step(float(t), float(v)) for t, v in zip(secs, values)])


def run_nab(data_root: Path, out: Path | None = None, limit: int | None = None, only: str | None = None, **kw) -> dict:
    """Stream every file (or `limit` files, or names containing `only`), write CSVs, score."""
    data_root = Path(data_root)
    windows = load_windows(data_root)
    names = sorted(windows)
    if only:
        names = [n for n in names if only in n]
    if limit:
        names = names[:limit]
    files = {}
    for name in names:
        ts, values, raw_ts = read_series(data_root / "data" / name)
        scores = detect_file(ts, values, **kw)
        if out is not None:
            dest = Path(out) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["timestamp", "value", "anomaly_score"])
                w.writerows(zip(raw_ts, values.tolist(), np.round(scores, 6).tolist()))
        files[name] = {"ts": ts, "scores": scores, "windows": windows[name]}
    result = score_corpus(files)
    result["files"] = len(files)
    return result
