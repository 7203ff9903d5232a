"""Snapshot and conversion side of `UnivariateBank` (mixed in): compact pickling, and moving a
row to or from a single `UnivariateAnomalyScorer` (old detector snapshots held one scorer per
series; tests compare rows with scorers).

Pickles hold rows in use only, zlib-compressed, and each record's deque with its completed block
pushed in, as (age, value) pairs (ages are below `memory` + `block`, so 4 bytes): what the
scorer's own deques take, and no spare capacity. The record planes are stored up to the current
block's max (`STORED_PLANES`), the layout of session 27's snapshots, which load here (their
deques hold an entry per row, which the window reads as one-row blocks), as these load there.

>>> import pickle
>>> import numpy as np
>>> from keywatch.models.univariate_bank import UnivariateBank
>>> bank = UnivariateBank(memory=50, block=8, warmup=5)
>>> r = bank.add()
>>> for i in range(100):
...     _ = bank.step(np.array([r]), i * 60_000, np.array([float(i % 7)]))
>>> sc = bank.to_scorer(r)
>>> back = pickle.loads(pickle.dumps(bank))
>>> [float(back.step(np.array([r]), 100 * 60_000, np.array([30.0]))[0]) == sc.update(100 * 60_000, 30.0)]
[True]
"""

from __future__ import annotations

import zlib
from collections import deque

import numpy as np

from keywatch.models.univariate import UnivariateAnomalyScorer

_ARRAYS = ("f", "rec", "tod")
_POOL = ("dq_start", "dq_len", "dq_rows", "dq_vals")
_PARAMS = ("a_level", "a_step", "short_n", "memory", "refractory", "warmup", "a_tod", "min_sigma", "long_n", "block")


def _pack(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a)
    return a.dtype.str, a.shape, zlib.compress(a.tobytes(), 1)


def _unpack(p: tuple) -> np.ndarray:
    dtype, shape, blob = p
    return np.frombuffer(zlib.decompress(blob), dtype).reshape(shape).copy()


class BankState:
    """Pickling and scorer conversion for `UnivariateBank` (a mixin)."""

    def params(self) -> dict:
        """The scorer parameters (as `UnivariateAnomalyScorer` takes them)."""
        return {k: getattr(self, k) for k in _PARAMS} | {"tod_bins": self.nb}

    def __getstate__(self) -> dict:
        """Completed blocks are pushed into the deques on the way out: a snapshot holds none
        pending, and the current block's max (`BMAX`) as it is."""
        from keywatch.models.univariate_bank import N, STORED_PLANES

        n = self.n
        st = {k: v for k, v in vars(self).items() if k not in _ARRAYS + _POOL}
        st["_packed"] = {k: _pack(getattr(self, k)[:n, :STORED_PLANES] if k == "rec" else getattr(self, k)[:n])
                         for k in _ARRAYS}
        st["_bmax_kept"] = True  # session 27's snapshots pushed the current block into the deques
        rows, vals, lens = self._folded()
        now = np.repeat(self.f[:n, N].astype(np.int64), lens.sum(axis=1))
        st["_pool"] = (_pack(lens.astype(np.int32)), _pack((now - rows).astype(np.int32)), _pack(vals))
        return st

    def __setstate__(self, st: dict) -> None:
        from keywatch.models.univariate_bank import BLOCK, BMAX, N, STORED_PLANES, block_size

        packed, (lens, ages, vals) = st.pop("_packed"), st.pop("_pool")
        kept = st.pop("_bmax_kept", False)
        self.__dict__.update(st)
        # Older snapshots' 128-value blocks load as today's (`BLOCK`).
        self.block = block_size(min(self.block, BLOCK), self.memory)
        n, cap = self.n, self.cap
        self._pool_init()
        self._alloc(cap)
        for k, p in packed.items():
            if k == "rec":
                self.rec[:n, :STORED_PLANES] = _unpack(p)
                if not kept:  # session 27's: its block's values are in the deques already
                    self.rec[:n, BMAX] = -np.inf
            else:
                getattr(self, k)[:n] = _unpack(p)
        lens = _unpack(lens).astype(np.int64)
        now = np.repeat(self.f[:n, N].astype(np.int64), lens.sum(axis=1))
        self._set_pool(now - _unpack(ages), _unpack(vals), lens)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def load_scorer(self, r: int, sc: UnivariateAnomalyScorer) -> None:
        """Row r (fresh from `add`) takes over scorer `sc`'s state (`sc` must have this bank's
        parameters)."""
        from keywatch.models.univariate_bank import (BMAX, EVID, FR, FV, HAS_SLOW, LAST_PEAK, MEAN, MU, PEAK, PREV,
                                                     SDEV, SHORT, SLOW, TCNT, TDEV, TMU, VAR, VOL, DEV, N)

        if (sc.a_level, sc.a_step, sc.a_tod, sc.refractory, sc.nb) != (self.a_level, self.a_step, self.a_tod,
                                                                        self.refractory, self.nb):
            raise ValueError("the scorer's parameters are not the bank's")
        self.f[r, [PREV, MEAN, DEV, SDEV, VOL, SLOW, PEAK, EVID, N, LAST_PEAK, HAS_SLOW]] = (
            sc.prev, sc.mean, sc.dev, sc.step_dev, sc.vol, sc.slow or 0.0, sc.peak, sc.evidence, sc.n,
            sc.last_peak, sc.slow is not None)
        self.tod[r, TMU], self.tod[r, TDEV], self.tod[r, TCNT] = sc.tod_mu, sc.tod_dev, sc.tod_n
        lens = []
        for j, c in enumerate(sc.cal):
            if (c.n, c.memory, c.warmup, c.min_sigma, c.a_short) != (sc.n, self.memory, self.warmup, self.min_sigma,
                                                                     self.a_short[j]):
                raise ValueError("the scorer's records are not the bank's (parameters or row count)")
            self.rec[r, [SHORT, MU, VAR, BMAX], j] = (c.short, c.mu, c.var, c.bmax)
            lens.append(len(c.top))
            if c.top:
                self.rec[r, [FR, FV], j] = c.top[0]
        # Its deques go at the end of the pool (the next fold compacts the pool anyway).
        lens = np.array(lens, np.int64)
        self.dq_start[r] = len(self.dq_vals) + np.cumsum(lens) - lens
        self.dq_len[r] = lens
        self.dq_rows = np.concatenate([self.dq_rows, np.array([row for c in sc.cal for row, _ in c.top], self.dq_rows.dtype)])
        self.dq_vals = np.concatenate([self.dq_vals, np.array([v for c in sc.cal for _, v in c.top], np.float64)])

    def to_scorer(self, r: int) -> UnivariateAnomalyScorer:
        """An independent scorer in row r's state (its deque: the pool's part, then the
        completed block pushed in)."""
        from keywatch.models.univariate_bank import (BMAX, DEV, EVID, HAS_SLOW, LAST_PEAK, MEAN, MU, PEAK, PREV,
                                                     SDEV, SHORT, SLOW, TCNT, TDEV, TMU, VAR, VOL, N)

        sc = UnivariateAnomalyScorer(**self.params())
        f = self.f[r].tolist()
        sc.prev, sc.mean, sc.dev, sc.step_dev, sc.vol = f[PREV], f[MEAN], f[DEV], f[SDEV], f[VOL]
        sc.slow = f[SLOW] if f[HAS_SLOW] else None
        sc.peak, sc.evidence, sc.n, sc.last_peak = f[PEAK], f[EVID], int(f[N]), int(f[LAST_PEAK])
        sc.tod_mu, sc.tod_dev = self.tod[r, TMU].tolist(), self.tod[r, TDEV].tolist()
        sc.tod_n = [int(c) for c in self.tod[r, TCNT].tolist()]
        for j, c in enumerate(sc.cal):
            c.short, c.mu, c.var, c.bmax = (float(self.rec[r, p, j]) for p in (SHORT, MU, VAR, BMAX))
            c.n = sc.n
            c.top = deque(zip(*self._merged(r, j)))
        return sc
