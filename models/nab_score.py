"""A NAB-compatible scorer, written from the published description of the benchmark.

Per file: anomaly windows from `labels/combined_windows.json`; the first 15 % of rows (at most
750) are a probationary period and are not scored. A detection is a row whose score is ≥ the
threshold. Inside a window only the earliest detection counts, weighted A_TP·σ(pos)/σ(−1), with
σ(x) = 2/(1+e^{5x}) − 1 and pos = −(right − i + 1)/width ∈ [−1, 0) (earlier = better; the first
row earns exactly A_TP, as in NAB's sweeper). A window with no detection costs −A_FN. A detection
outside every window costs A_FP·σ(pos) with pos = |i − prev_right|/(prev_width − 1), its distance
past the previous window's end (σ ≥ 3 → −1; −A_FP when no window precedes it), so detections just
after a window cost almost nothing. A window none of whose rows is scored (all probationary) is
left out of the raw score, as in NAB. One threshold per profile is chosen over the whole corpus
(rows with equal scores are detected together). Normalisation as NAB's runner: 100·(raw − null)/
(perfect − null), null = the no-detection raw score (−A_FN per scored window) and perfect =
A_TP × number of labelled windows.

>>> f = {"ts": list(range(100)), "windows": [(40, 49)]}
>>> perfect = [1.0 if i == 40 else 0.0 for i in range(100)]
>>> round(score_corpus({"a": dict(f, scores=perfect)})["standard"]["score"], 3)
100.0
>>> round(score_corpus({"a": dict(f, scores=[0.0] * 100)})["standard"]["score"], 3)
0.0
"""

from __future__ import annotations

import math

import numpy as np

PROFILES = {
    "standard": {"A_TP": 1.0, "A_FP": 0.11, "A_FN": 1.0},
    "reward_low_FP": {"A_TP": 1.0, "A_FP": 0.22, "A_FN": 1.0},
    "reward_low_FN": {"A_TP": 1.0, "A_FP": 0.11, "A_FN": 2.0},
}


def scaled_sigmoid(pos: float) -> float:
    return -1.0 if pos >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation(n: int) -> int:
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


def file_weights(n: int, windows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: weight before A_TP/A_FP (σ/σ(−1) in a window, σ after one, −1 before any) and
    window number (−1 outside any window)."""
    sig = np.empty(n)
    win = np.full(n, -1, dtype=np.int64)
    prev_right, prev_width = None, None
    wins = sorted(windows)
    j = 0
    i = 0
    while i < n:
        if j < len(wins) and i == wins[j][0]:
            left, right = wins[j]
            width = right - left + 1
            for k in range(left, min(right, n - 1) + 1):
                sig[k] = scaled_sigmoid(-(right - k + 1) / width) / MAX_TP
                win[k] = j
            prev_right, prev_width = right, width
            i, j = right + 1, j + 1
            continue
        sig[i] = -1.0 if prev_right is None else scaled_sigmoid(abs(i - prev_right) / max(prev_width - 1, 1))
        i += 1
    return sig, win


def window_rows(ts: np.ndarray, windows: list[tuple]) -> list[tuple[int, int]]:
    """Window (start, end) timestamps → (first row ≥ start, last row ≤ end)."""
    out = []
    for a, b in windows:
        left = int(np.searchsorted(ts, a, side="left"))
        right = int(np.searchsorted(ts, b, side="right")) - 1
        if right >= left:
            out.append((left, right))
    return out


def score_corpus(files: dict[str, dict], profiles: dict = PROFILES) -> dict:
    """`files`: name → {"ts": sorted times, "scores": [0, 1], "windows": [(start, end) times]}."""
    scores, sigs, wins, n_windows, n_labelled, off = [], [], [], 0, 0, 0
    for f in files.values():
        ts = np.asarray(f["ts"])
        s = np.asarray(f["scores"], dtype=np.float64)
        rows = window_rows(ts, f["windows"])
        sig, win = file_weights(len(ts), rows)
        keep = np.arange(len(ts)) >= probation(len(ts))
        n_labelled += len(f["windows"])
        n_windows += len(set(win[keep & (win >= 0)].tolist()))
        win = np.where(win >= 0, win + off, -1)
        off += len(rows)
        scores.append(s[keep]); sigs.append(sig[keep]); wins.append(win[keep])
    s, sig, win = np.concatenate(scores), np.concatenate(sigs), np.concatenate(wins)
    order = np.argsort(-s, kind="stable")
    s, sig, win = s[order], sig[order], win[order]
    out = {}
    for name, p in profiles.items():
        null = -p["A_FN"] * n_windows
        perfect = p["A_TP"] * n_labelled
        raw, thr, fp, tp = _sweep(s, sig, win, n_windows, p)
        out[name] = {"score": float(100.0 * (raw - null)) / (perfect - null) if perfect != null else 0.0,
                     "raw": float(raw), "threshold": thr, "fp": fp, "tp": tp, "windows": n_windows}
    return out


def _sweep(s, sig, win, n_windows, p) -> tuple[float, float, int, int]:
    """Lower the threshold through every distinct score; keep the best total."""
    a_tp, a_fp, a_fn = p["A_TP"], p["A_FP"], p["A_FN"]
    total = -a_fn * n_windows
    best = (total, 1.0 + 1e-9, 0, 0)
    got: dict[int, float] = {}
    fp = 0
    n = len(s)
    for i in range(n):
        w = win[i]
        if w < 0:
            total += a_fp * sig[i]
            fp += 1
        else:
            v = a_tp * sig[i]
            cur = got.get(w)  # only the window's best (= earliest) detection counts
            if cur is None:
                got[w] = v
                total += v + a_fn
            elif v > cur:
                got[w] = v
                total += v - cur
        if (i + 1 == n or s[i + 1] != s[i]) and total > best[0]:
            best = (total, float(s[i]), fp, len(got))
    return best
