"""The key-minute model's fast half-space trees give River's results exactly, and its snapshots
stay River's (old ones load and continue the same)."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
from river import anomaly

from keywatch.models.calibration import FEATURES, TailCalibrator, WindowModel


class RiverModel:
    """`WindowModel` as it was: River's own `score_one` / `learn_one`."""

    def __init__(self, n_trees: int, height: int, window_size: int, seed: int) -> None:
        self.hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed,
                                          limits={f: (0.0, 1.0) for f in FEATURES})
        self.cal = TailCalibrator()
        self.seen = 0

    def score_learn(self, x: dict, learn: bool) -> tuple:
        raw = self.hst.score_one(x) if self.seen >= self.hst.window_size else 0.0
        sig = self.cal.signal(raw) if self.seen >= self.hst.window_size else 0.0
        if learn:
            self.hst.learn_one(x)
            self.seen += 1
            if self.seen > self.hst.window_size:
                self.cal.update(raw)
        return raw, sig


def windows(seed: int, n: int):
    rng = random.Random(seed)
    centre = [rng.random() for _ in FEATURES]
    for i in range(n):
        if i % 97 == 0:  # now and then an outlier, exact boundaries, NaN (never below a threshold)
            x = [rng.choice([0.0, 1.0, rng.random(), float("nan"), -0.0]) for _ in FEATURES]
        else:
            x = [min(1.0, max(0.0, c + rng.gauss(0, 0.05))) for c in centre]
        yield dict(zip(FEATURES, x)), rng.random() < 0.85


@pytest.mark.parametrize("seed,size", [(42, (10, 6, 250)), (7, (3, 4, 20)), (1, (5, 8, 40))])
def test_same_scores_and_snapshots_as_river(seed, size):
    n_trees, height, window = size
    ref, fast = RiverModel(n_trees, height, window, seed), WindowModel(n_trees, height, window, seed)
    first = dict.fromkeys(FEATURES, 0.5)
    assert fast.score_learn(first, False) == ref.score_learn(first, False) == (0.0, 0.0)  # before any tree
    for i, (x, learn) in enumerate(windows(seed, 12 * window + 5)):
        got, want = fast.score_learn(x, learn), ref.score_learn(x, learn)
        assert got == want and type(got[0]) is type(want[0]), (i, got, want)
        if i % (3 * window) == window + 1:  # a snapshot: River's object, byte for byte; it loads and goes on
            state = fast.__getstate__()
            assert pickle.dumps(state["hst"]) == pickle.dumps(ref.hst)
            fast = pickle.loads(pickle.dumps(fast))
            assert type(fast.hst) is anomaly.HalfSpaceTrees


def test_old_snapshot_loads_and_continues():
    ref = RiverModel(10, 6, 250, 42)
    data = list(windows(3, 1200))
    for x, learn in data[:700]:
        ref.score_learn(x, learn)
    old = copy.deepcopy(ref)
    model = WindowModel.__new__(WindowModel)
    model.__setstate__({"hst": old.hst, "cal": old.cal, "seen": old.seen})  # what an old snapshot held
    for x, learn in data[700:]:
        assert model.score_learn(x, learn) == ref.score_learn(x, learn)


def test_fresh_model_before_any_tree_pickles():
    model = WindowModel(seed=5)
    back = pickle.loads(pickle.dumps(model))
    ref = RiverModel(10, 6, 250, 5)
    for x, learn in windows(5, 600):
        assert back.score_learn(x, learn) == ref.score_learn(x, learn)
