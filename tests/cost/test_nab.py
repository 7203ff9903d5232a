"""NAB scorer: hand-made cases computed from NAB's published rules (sweeper: TP weight
σ(pos)/σ(−1), FP after a window σ(distance), before any window −A_FP; null = −A_FN per window,
perfect = A_TP per window), and the detector on a few real NAB files (if the data is present)."""

import math
from pathlib import Path

import numpy as np
import pytest

from keywatch.models.nab_score import probation, score_corpus

N = 1000
WIN = (400, 449)  # width 50
SIG = lambda x: 2 / (1 + math.exp(5 * x)) - 1  # noqa: E731  NAB's scaled sigmoid
MAX_TP = SIG(-1.0)  # 0.98661


def corpus(scores, windows=(WIN,)):
    return {"f": {"ts": np.arange(N), "scores": scores, "windows": list(windows)}}


def at(*rows, value=1.0):
    s = np.zeros(N)
    s[list(rows)] = value
    return s


def norm(raw, a_fn=1.0, n=1):
    return 100 * (raw + a_fn * n) / (1.0 * n + a_fn * n)


def test_perfect_and_null():
    res = score_corpus(corpus(at(WIN[0])))
    assert all(abs(v["score"] - 100) < 1e-9 for v in res.values())
    res = score_corpus(corpus(np.zeros(N)))
    assert all(abs(v["score"]) < 1e-9 for v in res.values())
    # detecting everything is worse than nothing: the optimiser keeps the null threshold
    res = score_corpus(corpus(np.ones(N)))
    assert all(abs(v["score"]) < 1e-9 for v in res.values())


def test_hand_computed_cases():
    # mid-window detection: pos = −(449 − 425 + 1)/50 = −0.5 → σ = 0.848283, TP = σ/σ(−1) = 0.859794
    r = score_corpus(corpus(at(425)))
    assert r["standard"]["score"] == pytest.approx(norm(0.848283 / 0.986614), abs=1e-3)
    assert r["reward_low_FN"]["score"] == pytest.approx(norm(0.859794, a_fn=2), abs=1e-3)
    assert 0 < score_corpus(corpus(at(445)))["standard"]["score"] < r["standard"]["score"]
    # only the earliest detection of a window counts
    assert score_corpus(corpus(at(400, 425, 440)))["standard"]["score"] == pytest.approx(100)
    # an FP before any window costs A_FP: standard (1 − 0.11 + 1)/2, reward_low_FP (1 − 0.22 + 1)/2
    r = score_corpus(corpus(at(300, 400)))
    assert r["standard"]["score"] == pytest.approx(94.5)
    assert r["reward_low_FP"]["score"] == pytest.approx(89.0)
    assert r["reward_low_FN"]["score"] == pytest.approx(100 * (1 - 0.11 + 2) / 3)
    # an FP 6 rows after the window's end: pos = 6/(50 − 1), σ = −0.296893, cost 0.11·σ
    r = score_corpus(corpus(at(400, 455)))
    assert r["standard"]["score"] == pytest.approx(norm(1 + 0.11 * SIG(6 / 49)), abs=1e-6)
    assert SIG(6 / 49) == pytest.approx(-0.296905, abs=1e-6)
    # ≥ 3 window widths after the end it costs the full A_FP
    assert score_corpus(corpus(at(400, 449 + 3 * 49)))["standard"]["score"] == pytest.approx(94.5)


def test_threshold_sweep_and_ties():
    s = at(400, value=0.9)
    s[300] = 0.5  # the FP scores lower: the best threshold (0.9) leaves it out
    r = score_corpus(corpus(s))["standard"]
    assert r["score"] == pytest.approx(100) and r["threshold"] == pytest.approx(0.9)
    s[300] = 0.9  # a tie: rows with equal scores are detected together, the FP is paid
    assert score_corpus(corpus(s))["standard"]["score"] == pytest.approx(94.5)


def test_probation():
    # detections in the probationary period are ignored
    assert score_corpus(corpus(at(*range(probation(N)))))["standard"]["score"] == pytest.approx(0.0)
    assert probation(N) == 150 and probation(20_000) == 750
    # a window inside the probation is not scored (not a FN), but counts in the perfect score
    r = score_corpus(corpus(at(WIN[0]), windows=[(10, 20), WIN]))["standard"]
    assert r["windows"] == 1 and r["score"] == pytest.approx(100 * (1 + 1) / (2 + 1))


NAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"


@pytest.mark.skipif(not (NAB / "labels" / "combined_windows.json").exists(), reason="NAB data not present")
def test_detector_on_nab_subset(tmp_path):
    from keywatch.models.nab import run_nab

    res = run_nab(NAB, tmp_path, only="artificial")  # 11 files, ~44k rows, a few seconds
    assert res["files"] == 11
    assert res["standard"]["score"] >= 60, res["standard"]
    assert res["reward_low_FP"]["score"] >= 50 and res["reward_low_FN"]["score"] >= 60
    out = tmp_path / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
    head = out.read_text().splitlines()
    assert head[0] == "timestamp,value,anomaly_score" and len(head) == 4033
    assert all(0.0 <= float(line.split(",")[2]) <= 1.0 for line in head[1:])
