"""`UnivariateBank`: many `UnivariateAnomalyScorer`s stepped together with numpy.

`CostSpikeDetector` scores every project and provider spend series once per minute; one Python
`update` call per series was most of its per-minute cost. The bank holds the same state as N
scorers in arrays indexed by row and advances any subset of rows by one value in one numpy step,
with exactly the scorer's float arithmetic (same operations in the same order, elementwise, and
`math.log`/`math.log1p`/`math.exp` where the scorer calls them: numpy's SIMD versions differ in
the last bit), so every row gives bit-identical values to an independent scorer on its series.

The sliding-window maximum of each record (the max of its smoothed surprise over the blocks of
`block` rows with a row among the previous `memory`: the scorer's `_Record`) is kept in three
parts, so that a step is a few elementwise operations:

- the current block's running max (`BMAX`), pushed at the block's last row (by the row's own
  count, as the scorer does) into
- `PV`, `PR`: that completed block's (max, last row), until the next fold, every `block` calls
  (a row completes at most one block meanwhile), pushes it into
- its deque of older blocks, kept as the scorer's monotone deque keeps them (the same (last row,
  max) entries), in a flat pool (`univariate_window`), with each deque's front (`FV`, `FR`)
  mirrored beside the record.

The window max is max(front, PV, BMAX). The pool is touched only when a front leaves the window
(rare) and at the folds, one numpy pass each. Memory is what the deques hold: at most
⌈memory / block⌉ + 1 entries a record. Snapshots and conversions to and from single scorers:
`univariate_state`.
"""

from __future__ import annotations

import math

import numpy as np

from keywatch.models.rowbank import RowBank
from keywatch.models.univariate import BLOCK, block_size
from keywatch.models.univariate_state import BankState
from keywatch.models.univariate_window import WindowPool

DAY_MS = 86_400_000
# Columns of the per-row matrix `f` (one gather and one scatter per step). Counts and row numbers
# are kept as float64 too: exact below 2**53, and `1.0 / (n + 1)` is the same number either way.
PREV, MEAN, DEV, SDEV, VOL, SLOW, PEAK, EVID, N, LAST_PEAK, HAS_SLOW = range(11)
# Planes of the per-record matrix `rec` (rows × planes × 10 records): EWMA, running mean and
# variance, the deque's front value and row, the current block's running max, and the last
# complete block's (max, last row) until the next fold pushes it into the deque (−inf, inf: none).
SHORT, MU, VAR, FV, FR, BMAX, PV, PR = range(8)
STORED_PLANES = 6  # SHORT … BMAX: what a snapshot holds (it folds the pending block first)
# Planes of the time-of-day profile `tod` (rows × planes × bins).
TMU, TDEV, TCNT = range(3)


class UnivariateBank(BankState, WindowPool, RowBank):
    """N `UnivariateAnomalyScorer`s (same parameters) in arrays: `add` a row per series, `step`
    any set of rows by one value each, `recent_peak` of a row; `remove` frees a row for reuse.

    >>> import random
    >>> from keywatch.models.univariate import UnivariateAnomalyScorer
    >>> rnd = random.Random(2)
    >>> bank, solo = UnivariateBank(), [UnivariateAnomalyScorer() for _ in range(3)]
    >>> rows = np.array([bank.add() for _ in range(3)])
    >>> same = True
    >>> for i in range(400):  # series 1 spikes at row 350
    ...     x = [10 + rnd.gauss(0, 1) + (30 if i == 350 and j == 1 else 0) for j in range(3)]
    ...     got = bank.step(rows, i * 60_000, np.array(x))
    ...     same &= got.tolist() == [s.update(i * 60_000, v) for s, v in zip(solo, x)]
    >>> same, bank.recent_peak(1) > 0.3, bank.recent_peak(0)
    (True, True, 0.0)
    """

    def __init__(self, a_level: float = 0.001, a_step: float = 0.01, short_n: float = 5.0, memory: int = 5000,
                 refractory: int = 120, warmup: int = 100, tod_bins: int = 48, a_tod: float = 0.05,
                 min_sigma: float = 3.2, long_n: float = 15.0, block: int = BLOCK, capacity: int = 16) -> None:
        self.a_level, self.a_step, self.a_tod, self.refractory = a_level, a_step, a_tod, refractory
        self.memory, self.warmup, self.nb = memory, warmup, tod_bins
        self.min_sigma, self.short_n, self.long_n = min_sigma, short_n, long_n
        # Records 0-4 smooth the five features over `short_n` rows, 5-9 over `long_n` (as the
        # scorer's `cal` list); 1.0 / n exactly as `_Record` computes it.
        self.a_short = np.array([1.0 / short_n] * 5 + [1.0 / long_n] * 5)
        self._rates = np.array([a_level, a_step])  # minimum learning rates of level and step size
        self.block = block_size(block, memory)  # the scorer's, and the period of the folds
        self.n = 0  # rows allocated (high-water mark)
        self.clock = 0  # step calls (blocks are folded every `block` calls)
        self.free: list[int] = []
        self._pool_init()
        self._alloc(capacity)

    def _alloc(self, cap: int) -> None:
        for name, shape in (("f", (11,)), ("rec", (8, 10)), ("tod", (3, self.nb))):
            self._grow(name, (cap, *shape))
        for name in ("dq_start", "dq_len"):  # each (row, record)'s deque segment in the pool
            self._grow(name, (cap, 10), np.int64)
        self.cap = cap

    def add(self) -> int:
        """A fresh row (the state of a new scorer)."""
        r = self._take_row()
        self.f[r] = 0.0
        self.f[r, LAST_PEAK] = -(10 ** 9)
        self.rec[r] = 0.0
        self.rec[r, [FV, BMAX, PV]] = -np.inf  # nothing seen yet
        self.rec[r, [FR, PR]] = np.inf  # an empty deque never expires
        self.tod[r] = 0.0
        self.dq_len[r] = 0
        return r

    def remove(self, r: int) -> None:
        self.dq_len[r] = 0  # nothing to fold: its pool entries go at the next fold
        self.rec[r, PV] = -np.inf
        self.free.append(r)

    def recent_peak(self, r: int) -> float:
        """`UnivariateAnomalyScorer.recent_peak` of row r."""
        f = self.f[r].tolist()
        return 1.0 - math.exp(-3.0 * f[PEAK]) if f[N] - 1 - f[LAST_PEAK] <= self.refractory else 0.0

    def step(self, idx: np.ndarray, ts_ms: int, x: np.ndarray, learn: np.ndarray | None = None,
             scores: bool = True) -> np.ndarray | None:
        """`UnivariateAnomalyScorer.update(ts_ms, x[k], learn[k])` for each row idx[k] (distinct
        rows, all at the same time); returns the scores (None with `scores=False`, for callers
        that only read `recent_peak`).

        Each `np.where` of the scorer's branches is skipped when every row takes the same side
        (all learn, all past the first values): the same numbers, fewer numpy calls."""
        idx = np.asarray(idx, np.intp)
        m = len(idx)
        if not m:
            return np.zeros(0) if scores else None
        if learn is not None:
            learn = np.asarray(learn, bool)
        every = learn is None or np.count_nonzero(learn) == m
        perm, rows = None, idx
        if m == self.n:  # every row (the usual minute): slices in row order, no gathers/scatters
            perm, idx, rows = idx, slice(0, m), np.arange(m)
            xs = np.empty(m)
            xs[perm] = x
            x = xs
            if not every:
                ls = np.empty(m, bool)
                ls[perm] = learn
                learn = ls
        else:
            x = np.asarray(x, np.float64)
        # The step works on row-last copies (features × rows): each column is then contiguous,
        # and a ufunc on contiguous rows costs about half one on a strided column.
        F = np.ascontiguousarray(self.f[idx].T)
        n = F[N]
        nl = n.tolist()
        n_lo, n_hi = min(nl), max(nl)
        if n_lo == 0:  # the scorer starts its level and previous value at the first value
            first = n == 0
            F[PREV, first] = F[MEAN, first] = x[first]
        b = int((ts_ms % DAY_MS) * self.nb // DAY_MS)
        T = np.ascontiguousarray(self.tod[idx, :, b].T)
        z, inv = self._features(F, T, x, n, n_lo, None if every else learn)
        self.tod[idx, :, b] = T.T
        r5 = np.fromiter(map(math.log1p, z.ravel().tolist()), np.float64, 5 * m)
        r10 = np.concatenate((r5, r5)).reshape(10, m)  # the input of both record halves
        e = self._records(idx, rows, n, n_lo, n_hi, inv, r10)
        out = None
        if np.count_nonzero(e):  # evidence somewhere (e ≥ 0): refractory filter and peaks
            last, peak = F[LAST_PEAK], F[PEAK]
            recent = n - last <= self.refractory
            if scores:  # before `peak` (a view) moves
                out = np.where(recent & (e <= peak), 0.0, e)
            new_peak = (e > 0) & ((e > peak) | ~recent)
            F[PEAK] = np.where(new_peak, e, peak)
            F[LAST_PEAK] = np.where(new_peak, n, last)
        F[EVID] = e
        F[N] = n + 1
        self.f[idx] = F.T
        # Every `block` calls the complete blocks are pushed into the deques together (a row
        # steps at most once a call, so it completes at most one block meanwhile): one numpy
        # pass per `block` calls.
        self.clock += 1
        if self.clock % self.block == 0:
            self._fold()
        if not scores:
            return None
        score = np.zeros(m)
        hit = np.nonzero(out)[0] if out is not None else ()
        if len(hit):  # exp(−0) = 1 exactly, so only detections need math.exp
            score[hit] = [1.0 - math.exp(-3.0 * v) for v in out[hit].tolist()]
        return score if perm is None else score[perm]

    def _features(self, F, T, x, n, n_lo, L) -> tuple[np.ndarray, np.ndarray]:
        """Score the five features, then learn (F: features × rows, T: time-of-day bin planes ×
        rows, updated in place; `L`: which rows learn, None for all). Returns (features × rows,
        1 / (n + 1)).

        Pairs of columns are computed together — (prev, mean) → (dx, dev); the two spreads →
        the two denominators, caps and learning rates — the same numbers in half the calls. Every
        value is read before its column is written. When all rows learn, the new values go
        straight into F and T; otherwise into `new` first, then where(L, new, old)."""
        m = len(x)
        PM, SD = F[PREV:MEAN + 1], F[DEV:SDEV + 1]
        mean, s, ds, vol0, slow0 = F[MEAN], F[DEV], F[SDEV], F[VOL], F[SLOW]
        new = F[PREV:SLOW + 1] if L is None else np.empty((6, m))
        floor = 1e-3 * np.abs(mean) + 1e-9
        D = np.abs(x - PM)  # (dx, dev)
        dx = D[0]
        dens = np.maximum(1.25 * SD, floor)  # (max(1.25 dev, floor), max(1.25 step_dev, floor))
        z = np.empty((5, m))
        np.divide(D[::-1], dens, out=z[:2])
        tmu, tdev, cnt = T[TMU], T[TDEV], T[TCNT]
        cnt_lo = min(cnt.tolist())
        xt = x - tmu
        axt = np.abs(xt)
        np.divide(axt, np.maximum(np.maximum(1.25 * tdev, 0.2 * s), floor), out=z[2])
        if cnt_lo < 3:
            z[2] = np.where(cnt >= 3, z[2], 0.0)
        old = None if L is None else np.stack([x, mean, s, ds, vol0, slow0])  # the first value sets mean even so
        vol = np.add(vol0, 0.1 * (dx - vol0), out=new[4])
        z[3] = np.fromiter(map(math.log, ((vol + floor) / (ds + floor)).tolist()), np.float64, m)
        np.abs(z[3], out=z[3])
        if n_lo <= 30:
            z[3] = np.where(n > 30, z[3], 0.0)
        slow = np.add(slow0, 0.05 * (x - slow0), out=new[5])
        if np.count_nonzero(F[HAS_SLOW]) != m:
            slow[:] = np.where(F[HAS_SLOW] != 0, slow, x)
            F[HAS_SLOW] = 1.0 if L is None else np.where(L, 1.0, F[HAS_SLOW])
        np.divide(np.abs(slow - mean), dens[0], out=z[4])
        # Learn (rows with `learn` off keep their baselines; the calibration still moves).
        inv = 1.0 / (n + 1)
        A = np.maximum(inv, self._rates[:, None])  # (a, a_s)
        caps = 6 * SD if n_lo > 30 else np.where(n > 30, 6 * SD, D[::-1])  # (cap, cap_s)
        cap = caps[0]
        np.add(mean, A[0] * (np.minimum(np.maximum(x, mean - cap), mean + cap) - mean), out=new[1])
        np.add(SD, A * (np.minimum(D[::-1], caps) - SD), out=new[2:4])
        new[0] = x
        c1 = cnt + 1
        at = np.maximum(1.0 / c1, self.a_tod)
        d_tod = axt if cnt_lo > 0 else np.where(cnt > 0, axt, 0.0)
        Tn = T if L is None else np.empty_like(T)
        np.add(tdev, at * (d_tod - tdev), out=Tn[TDEV])
        np.add(tmu, at * xt, out=Tn[TMU])
        np.minimum(c1, 1 << 30, out=Tn[TCNT])
        if L is not None:
            F[PREV:SLOW + 1] = np.where(L, new, old)
            T[:] = np.where(L, Tn, T)
        return z, inv

    def _records(self, idx, rows, n, n_lo, n_hi, inv, r10: np.ndarray) -> np.ndarray:
        """The 10 `_Record.step`s of each row: its calibrated evidence (≥ 0). `idx`: the rows (or
        a slice of all of them), `rows`: the same as row numbers; r10: log1p of the 5 features,
        twice (records 0-4 and 5-9 smooth the same features), (10, rows)."""
        B = self.block
        ends = (n + 1) % B == 0  # rows whose block this value completes (n: rows before it)
        any_end = bool(np.count_nonzero(ends))
        if any_end and np.count_nonzero(self.rec[rows[ends], PR, 0] < np.inf):
            self._fold()  # a completed block not yet pushed (not the usual calls): push it first
        R = np.ascontiguousarray(self.rec[idx].transpose(1, 2, 0))  # planes × records × rows
        m = R.shape[2]
        s = R[SHORT]  # updated in place
        s += _rates10(self.a_short, m) * (r10 - s)
        lim = n - self.memory
        gone = R[FR] <= lim
        if np.count_nonzero(gone):
            self._expire(rows, lim, gone.T, R.transpose(2, 0, 1))
        # The window max (−inf: nothing in the window): the deque's front, the completed block
        # not yet in it, the current block.
        top = np.maximum(np.maximum(R[FV], R[PV]), R[BMAX])
        out = s - top
        # With memory ≥ 2 the previous value is always in the window, so once past warmup every
        # row has a max (the scorer's `top` is non-empty) and no row needs masking.
        if not (n_lo > self.warmup and self.memory >= 2):
            out = np.where((n > self.warmup) & (top > -np.inf), out, 0.0)
        mu, var = R[MU], R[VAR]
        d = s - mu
        dd = d * d
        # A record within the usual spread is not evidence (zeroing a non-positive `out` too
        # changes nothing: only the largest positive one counts).
        out = np.where(dd < self.min_sigma * self.min_sigma * var, 0.0, out)
        if n_hi + 1 < self.memory:
            a = inv
        else:
            a = np.where(n + 1 < self.memory, inv, 1.0 / self.memory)
        mu += a * d
        var += a * (dd - var)
        np.maximum(R[BMAX], s, out=R[BMAX])
        if any_end:  # completed blocks wait in PV, PR for the next fold
            R[PV][:, ends], R[PR][:, ends], R[BMAX][:, ends] = R[BMAX][:, ends], n[ends], -np.inf
        self.rec[idx] = R.transpose(2, 0, 1)
        mx = out.max(axis=0)
        return np.where(mx > 0, mx, 0.0)


_RATES10: dict[tuple, np.ndarray] = {}


def _rates10(a_short: np.ndarray, m: int) -> np.ndarray:
    """`a_short` repeated along m rows, (10, m) (cached): same-shape operands take numpy's
    fastest loops, where broadcasting a (10, 1) column does not."""
    key = (a_short.tobytes(), m)
    a = _RATES10.get(key)
    if a is None:
        if len(_RATES10) > 256:
            _RATES10.clear()
        a = _RATES10[key] = np.repeat(a_short[:, None], m, axis=1)
    return a
