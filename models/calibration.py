"""Calibrating raw anomaly scores to [0, 1] by an online tail probability ("anomaly likelihood").

A raw detector score (River's HalfSpaceTrees mass score) means nothing on its own: its scale
depends on the data. `TailCalibrator` keeps an exponentially decayed histogram of past raw
scores and reports how rare the current one is: `tail(s)` = P(past score ≥ s), smoothed so that
an unseen extreme is rare but never impossible. `signal(s)` maps the tail to a [0, 1] signal:
0 for the top 1 % of scores, rising to 1 at the top 0.01 %.

>>> cal = TailCalibrator(bins=50, half_life=1000)
>>> for i in range(2000): cal.update((i % 100) / 400)      # scores up to 0.25
>>> round(cal.tail(0.1), 2), cal.tail(0.9) < 0.001, cal.signal(0.05), cal.signal(0.95) > 0.5
(0.61, True, 0.0, True)

`WindowModel` wraps a River HalfSpaceTrees over per-key normalised window features and the
calibrator (score before learn):

>>> wm = WindowModel(seed=1)
>>> x = dict.fromkeys(FEATURES, 0.5)
>>> for _ in range(300): _ = wm.score_learn(x, learn=True)
>>> 0.0 <= wm.score_learn(dict.fromkeys(FEATURES, 1.0), learn=False)[1] <= 1.0
True
"""

from __future__ import annotations

import math
from array import array

from river import anomaly

FEATURES = ("req", "cost", "expensive", "errors", "novel", "nets", "offhours", "ratio")


class TailCalibrator:
    __slots__ = ("bins", "counts", "weight", "total", "growth")

    def __init__(self, bins: int = 100, half_life: float = 20_000) -> None:
        self.bins = bins
        self.counts = array("d", [0.0] * bins)
        self.weight = 1.0  # later observations weigh more: decay without touching every bin
        self.total = 0.0
        self.growth = 2 ** (1.0 / half_life)

    def _bin(self, s: float) -> int:
        return min(self.bins - 1, max(0, int(s * self.bins)))

    def update(self, s: float) -> None:
        self.counts[self._bin(s)] += self.weight
        self.total += self.weight
        self.weight *= self.growth
        if self.weight > 1e12:  # renormalise before floats lose precision
            f = 1.0 / self.weight
            for i in range(self.bins):
                self.counts[i] *= f
            self.total *= f
            self.weight = 1.0

    def tail(self, s: float) -> float:
        """P(score ≥ s) among past scores (Laplace-smoothed, in units of the newest weight)."""
        b = self._bin(s)
        above = sum(self.counts[b:]) / self.weight
        return (above + 0.5) / (self.total / self.weight + 1.0)

    def signal(self, s: float, warm: float = 200.0) -> float:
        if self.total / self.weight < warm:  # too little history to call anything rare
            return 0.0
        p = self.tail(s)
        return max(0.0, min(1.0, (-math.log10(p) - 2.0) / 2.0))


class WindowModel:
    """One HalfSpaceTrees for all keys (features are per-key normalised) plus its calibrator."""

    def __init__(self, n_trees: int = 10, height: int = 6, window_size: int = 250, seed: int = 42) -> None:
        self.hst = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed,
            limits={f: (0.0, 1.0) for f in FEATURES})
        self.cal = TailCalibrator()
        self.seen = 0

    def score_learn(self, x: dict[str, float], learn: bool) -> tuple[float, float]:
        """(raw score, calibrated signal) for one key-window; learns from it when `learn`."""
        raw = self.hst.score_one(x) if self.seen >= self.hst.window_size else 0.0
        sig = self.cal.signal(raw) if self.seen >= self.hst.window_size else 0.0
        if learn:
            self.hst.learn_one(x)
            self.seen += 1
            if self.seen > self.hst.window_size:
                self.cal.update(raw)
        return raw, sig


def squash_log2(ratio: float, span: float = 6.0) -> float:
    """log2(ratio) mapped from [-span/2, +span/2] to [0, 1] (1 ≈ 8× above expected)."""
    if ratio <= 0:
        return 0.0
    return max(0.0, min(1.0, 0.5 + math.log2(ratio) / span))
