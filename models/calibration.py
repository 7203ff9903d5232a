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

`WindowModel` wraps River's HalfSpaceTrees (see `halfspace`) over per-key normalised window
features and the calibrator (score before learn):

>>> wm = WindowModel(seed=1)
>>> x = dict.fromkeys(FEATURES, 0.5)
>>> for _ in range(300): _ = wm.score_learn(x, learn=True)
>>> 0.0 <= wm.score_learn(dict.fromkeys(FEATURES, 1.0), learn=False)[1] <= 1.0
True
"""

from __future__ import annotations

import math
from array import array

from keywatch.models.halfspace import FlatTrees, LazyHST

FEATURES = ("req", "cost", "expensive", "errors", "novel", "nets", "offhours", "ratio")


class TailCalibrator:
    __slots__ = ("bins", "counts", "weight", "total", "growth")

    def __init__(self, bins: int = 100, half_life: float = 20_000) -> None:
        self.bins = bins
        # A list at run time: `tail` sums a slice on every score, and a list's items are float
        # objects already (an array's would be boxed one by one); pickled as an array, as always.
        self.counts = [0.0] * bins
        self.weight = 1.0  # later observations weigh more: decay without touching every bin
        self.total = 0.0
        self.growth = 2 ** (1.0 / half_life)

    def __getstate__(self):
        return None, {"bins": self.bins, "counts": array("d", self.counts), "weight": self.weight, "total": self.total,
                      "growth": self.growth}

    def __setstate__(self, state) -> None:
        for k, v in state[1].items():
            setattr(self, k, v)
        self.counts = list(self.counts)

    def _bin(self, s: float) -> int:
        i = int(s * self.bins)  # clamped to [0, bins - 1]
        return (i if i > 0 else 0) if i < self.bins - 1 else self.bins - 1

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
        v = (-math.log10(self.tail(s)) - 2.0) / 2.0  # clamped to [0, 1] as `max(0.0, min(1.0, v))` does
        v = v if v < 1.0 else 1.0
        return v if v > 0.0 else 0.0


class WindowModel:
    """One HalfSpaceTrees for all keys (features are per-key normalised) plus its calibrator.

    The trees are River's `HalfSpaceTrees`, built and walked by `halfspace` (the same trees and
    scores, without importing River until state is pickled); snapshots hold River's object.
    """

    def __init__(self, n_trees: int = 10, height: int = 6, window_size: int = 250, seed: int = 42) -> None:
        self.hst = LazyHST(n_trees, height, window_size, seed)
        self.cal = TailCalibrator()
        self.seen = 0
        self._flat: FlatTrees | None | bool = None  # False: River's own walks (masses not from them)

    def __getstate__(self) -> dict:
        hst, flat = self.hst, self._flat
        if isinstance(hst, LazyHST):
            hst = hst.to_river(FEATURES, flat or None)
        elif flat:
            flat.sync()
        return {"hst": hst, "cal": self.cal, "seen": self.seen}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._flat = None  # rebuilt from River's nodes on first use

    def score_learn(self, x: dict[str, float], learn: bool) -> tuple[float, float]:
        """(raw score, calibrated signal) for one key-window; learns from it when `learn`."""
        return self.score_learn_vec(tuple(x[f] for f in FEATURES), learn)

    def score_learn_vec(self, xv: tuple, learn: bool) -> tuple[float, float]:
        """`score_learn` with the features as a tuple in `FEATURES` order."""
        hst = self.hst
        flat = self._flat
        if not flat:
            if flat is None:
                if learn and not hst.trees and isinstance(hst, LazyHST):
                    hst.build(FEATURES)  # River builds its trees on the first learn
                if hst.trees:
                    try:
                        flat = self._flat = FlatTrees(hst, FEATURES)
                    except ValueError:
                        flat = self._flat = False
            if not flat:
                if isinstance(hst, LazyHST):  # nothing learned yet: River scores 0
                    return 0.0, 0.0
                return self._score_learn_river(dict(zip(FEATURES, xv)), learn)
        ws = hst.window_size
        scored = self.seen >= ws
        if scored and not hst._first_window:
            raw = flat.score(xv, learn)  # learns too when `learn`: the same walk
        else:
            raw = 0 if scored else 0.0  # River's `score_one` in its first window: 0
            if learn:
                flat.learn(xv)
        sig = self.cal.signal(raw) if scored else 0.0
        if learn:
            hst.counter += 1
            if hst.counter == ws:  # River's window pivot: the latest window's masses become the reference
                flat.pivot()
                hst._first_window = False
                hst.counter = 0
            self.seen += 1
            if self.seen > ws:
                self.cal.update(raw)
        return raw, sig

    def _score_learn_river(self, x: dict[str, float], learn: bool) -> tuple[float, float]:
        """River's own walks (a River object from a snapshot, before its trees are built)."""
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
