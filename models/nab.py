"""NAB evaluation of the univariate streaming detector behind cost spikes.

The detector is `univariate.UnivariateAnomalyScorer` (the scorer `CostSpikeDetector` runs on
project and provider spend), one fresh instance per file, strictly online: each row is scored,
then learnt, with one set of parameters for every file. `run_nab` streams every NAB file,
writes `<out>/<category>/<file>` CSVs (timestamp,value,anomaly_score; scores rounded to 6
decimals) and scores exactly those rounded values with `nab_score.score_corpus`. Data are read
at run time from the NAB folder, never stored here.

>>> import numpy as np
>>> ts = (np.arange(3000) * 300).astype("datetime64[s]")
>>> v = 10 + np.random.default_rng(1).normal(size=3000); v[2500] = 40
>>> s = detect_file(ts, v)
>>> int(np.argmax(s)) in (2500, 2501), bool(s[2500] > 3 * s[1000:2500].max())
(True, True)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from keywatch.models.nab_score import score_corpus
from keywatch.models.univariate import UnivariateAnomalyScorer


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
    """One file through a fresh scorer, row by row; scores rounded as written to the CSV."""
    det = UnivariateAnomalyScorer(**kw)
    step = det.update
    ms = (ts.astype("datetime64[s]").astype(np.int64) * 1000).tolist()
    return np.round(np.array([step(t, v) for t, v in zip(ms, values.tolist())]), 6)


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
                w.writerows(zip(raw_ts, values.tolist(), scores.tolist()))
        files[name] = {"ts": ts, "scores": scores, "windows": windows[name]}
    result = score_corpus(files)
    result["files"] = len(files)
    return result
