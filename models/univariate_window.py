"""The older part of `UnivariateBank`'s sliding-window maxima: one flat pool of monotone deques.

Each (row, record) pair of the bank owns a monotone deque — the (last row, max) entries of
complete blocks that the scorer's `_Record.top` would hold, values decreasing — stored as the
segment `dq_start`..`dq_start + dq_len` of the flat arrays `dq_rows`, `dq_vals`. Its front (the
max and its row) is mirrored in the bank's `rec[:, FV]`, `rec[:, FR]`, so a step never reads the
pool. Everything here is numpy over all pairs at once, no Python per pair:

- `_expire`: fronts that left the window advance their segment start (rare);
- `_fold`: every `block` steps each pair's completed block (`rec[:, PV]`, `rec[:, PR]`, if any)
  is pushed into its deque, all pairs together, and the pool is rebuilt compact (dead entries
  dropped): a deque keeps its entries that beat the block's max (a prefix: values decrease),
  then that max — what the scorer's push (pop all ≤ v, append v) leaves.

>>> import numpy as np
>>> from keywatch.models.univariate import UnivariateAnomalyScorer
>>> from keywatch.models.univariate_bank import UnivariateBank
>>> bank, sc = UnivariateBank(memory=50, block=4), UnivariateAnomalyScorer(memory=50, block=4)
>>> r = bank.add()
>>> for i, v in enumerate([5.0, 3.0, 4.0, 1.0, 2.0, 9.0, 0.5, 0.25, 0.1, 0.05, 0.02]):
...     _ = bank.step(np.array([r]), i * 60_000, np.array([v])), sc.update(i * 60_000, v)
>>> int(bank.dq_len[r].sum()) > 0  # two folds so far: the older blocks are in the pool
True
>>> all(list(zip(*bank._merged(r, j))) == list(sc.cal[j].top) for j in range(10))
True
"""

from __future__ import annotations

import numpy as np

# A deque entry's row number: a scorer's step count, far below 2**31 (4,000 years of minutes);
# 12 bytes an entry with its value instead of 16.
ROW_DTYPE = np.int32


class WindowPool:
    """Deque pool and its numpy operations, mixed into `UnivariateBank`."""

    def _pool_init(self) -> None:
        self.dq_rows = np.zeros(0, ROW_DTYPE)
        self.dq_vals = np.zeros(0)

    def _expire(self, rix: np.ndarray, lim: np.ndarray, gone: np.ndarray, R: np.ndarray) -> None:
        """Drop the fronts (mirrored in R, this step's record matrix) that left the window."""
        from keywatch.models.univariate_bank import FR, FV

        k, j = np.nonzero(gone)
        while len(k):
            r = rix[k]
            self.dq_start[r, j] += 1
            ln = self.dq_len[r, j] - 1
            self.dq_len[r, j] = ln
            fr, fv = np.full(len(k), np.inf), np.full(len(k), -np.inf)  # empty: never expires
            has = ln > 0
            at = self.dq_start[r[has], j[has]]
            fr[has], fv[has] = self.dq_rows[at], self.dq_vals[at]
            R[k, FR, j], R[k, FV, j] = fr, fv
            more = fr <= lim[k]  # rows increase along a deque: the next one may be gone too
            k, j = k[more], j[more]

    def _folded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair's deque with its completed block pushed in: (rows, values, lengths
        (n, 10)), the pool compact in pair order. Reads the state only."""
        from keywatch.models.univariate_bank import PR, PV

        n = self.n
        P = n * 10
        pv, pr = self.rec[:n, PV].ravel(), self.rec[:n, PR].ravel()
        has = pv > -np.inf
        ln = self.dq_len[:n].ravel()
        pair = np.repeat(np.arange(P), ln)
        first = np.cumsum(ln) - ln
        offs = np.arange(len(pair)) - first[pair]  # position inside its deque
        src = self.dq_start[:n].ravel()[pair] + offs
        ov, orow = self.dq_vals[src], self.dq_rows[src]
        keep_o = ov > pv[pair]  # beats the block's max (−inf: no block, all kept)
        cut = np.bincount(pair[keep_o], minlength=P)
        new_len = cut + has
        new_start = np.cumsum(new_len) - new_len
        out_rows, out_vals = np.empty(new_len.sum(), ROW_DTYPE), np.empty(new_len.sum())
        at = new_start[pair[keep_o]] + offs[keep_o]
        out_rows[at], out_vals[at] = orow[keep_o], ov[keep_o]
        at = new_start[has] + cut[has]
        out_rows[at], out_vals[at] = pr[has], pv[has]
        return out_rows, out_vals, new_len.reshape(n, 10)

    def _set_pool(self, rows: np.ndarray, vals: np.ndarray, lens: np.ndarray) -> None:
        """Install a compact pool (pair order) for rows 0..n-1; no block pending, fronts mirrored."""
        from keywatch.models.univariate_bank import FR, FV, PR, PV

        n = self.n
        self.dq_rows, self.dq_vals = rows.astype(ROW_DTYPE, copy=False), vals
        self.dq_len[:n] = lens
        start = (np.cumsum(lens.ravel()) - lens.ravel()).reshape(n, 10)
        self.dq_start[:n] = start
        has = lens > 0
        fr, fv = np.full((n, 10), np.inf), np.full((n, 10), -np.inf)
        fr[has], fv[has] = rows[start[has]], vals[start[has]]
        self.rec[:n, FR], self.rec[:n, FV] = fr, fv
        self.rec[:n, PV], self.rec[:n, PR] = -np.inf, np.inf

    def _fold(self) -> None:
        """Push every block into its deque (the pool is rebuilt compact)."""
        self._set_pool(*self._folded())

    def _merged(self, r: int, j: int) -> tuple[list, list]:
        """Row r, record j's deque with its completed block pushed in: (rows, values), what the
        scorer holds."""
        from keywatch.models.univariate_bank import PR, PV

        s, m = int(self.dq_start[r, j]), int(self.dq_len[r, j])
        rows, vals = self.dq_rows[s:s + m].tolist(), self.dq_vals[s:s + m].tolist()
        v = float(self.rec[r, PV, j])
        if v > -np.inf:
            while vals and vals[-1] <= v:
                rows.pop()
                vals.pop()
            rows.append(int(self.rec[r, PR, j]))
            vals.append(v)
        return rows, vals
