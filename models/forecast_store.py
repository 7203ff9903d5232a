"""Storage of `SeasonalBank` (mixed in): its arrays and their layout, rows, snapshots, and tables
of the functions of a visit count.

The profiles are stored row-last, the hour-of-day profile and the 7 days of the hour-of-week
one side by side: `prof[table, hour, (mu, dev), row]` (float32; table 0 = hour of day, 1 + d =
weekday d of the hour of week), `cnt[table, hour, row]` (visit counts). A time unit's bins of
every row are then contiguous, and one copy turns them into float64: mixed-type and strided
ufuncs cost ~3× a plain one on the few hundred rows of a bank. `hod_mu`, `how_n`, … (rows ×
bins, as before) are views of them, and snapshots hold those, in the same format as before.

>>> from keywatch.models.forecast import SeasonalBank
>>> b = SeasonalBank(); r = b.add(); b.how_mu[r, 30] = 2.5
>>> float(b.prof[1 + 30 // 24, 30 % 24, 0, r]), b.hod_n.shape, b.how_n.shape
(2.5, (16, 24), (16, 168))
"""

from __future__ import annotations

import numpy as np

from keywatch.models.rowbank import RowBank


class SeasonalStore(RowBank):
    """Arrays, rows and snapshots of `SeasonalBank` (a mixin: the bank sets `n_cap`, `per_hour`,
    `a_hod`, `a_how`)."""

    def _alloc(self, cap: int, count_dtype=None) -> None:
        """Arrays for `cap` rows (rows in use copied over), the views reset (see the module)."""
        ndt = count_dtype or (self.cnt.dtype if hasattr(self, "cnt") else
                              np.uint8 if getattr(self, "n_cap", 60000) <= 255 else np.uint16)
        for name, lead, dtype in (("prof", (8, 24, 2), np.float32), ("cnt", (8, 24), ndt)):
            new = np.zeros((*lead, cap), dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[..., : old.shape[-1]] = old
            setattr(self, name, new)
        grow = self._grow
        for name in ("lvl_mu", "lvl_dev", "run_excess", "run_expected"):
            grow(name, (cap,), np.float64)
        for name in ("age", "run_len", "run_start", "last_active"):
            grow(name, (cap,), np.int64)
        grow("used", (cap,), np.bool_)
        self.cap = cap
        self._tab = None  # `_tables()`
        p, c = self.prof, self.cnt
        self.hod_mu, self.hod_dev, self.hod_n = p[0, :, 0].T, p[0, :, 1].T, c[0].T
        self.how_mu, self.how_dev = p[1:, :, 0].reshape(168, cap).T, p[1:, :, 1].reshape(168, cap).T
        self.how_n = c[1:].reshape(168, cap).T
        assert np.shares_memory(self.how_mu, p) and np.shares_memory(self.how_n, c)  # views, not copies

    def add(self) -> int:
        """A new (zeroed) series row."""
        r = self._take_row()
        self.prof[..., r] = 0
        self.cnt[..., r] = 0
        for name in ("lvl_mu", "lvl_dev", "run_excess", "run_expected", "age", "run_len", "run_start", "last_active"):
            getattr(self, name)[r] = 0
        self.used[r] = True
        return r

    def remove(self, r: int) -> None:
        self.used[r] = False
        self.free.append(r)

    def _tables(self) -> tuple:
        """Functions of a visit count, tabled for every count its dtype holds (counts stop at
        `n_cap`), each computed as `forecast` and the learning step compute it: w_day, 1 − w_day,
        w_week, 1 − w_week, the day and week learning rates, the next count. A cache (`_alloc`
        drops it: the count dtype is set there)."""
        ph, c = self.per_hour, np.arange(np.iinfo(self.cnt.dtype).max + 1)
        w_day = np.minimum(c / ph, 1.0)
        w_week = 0.6 * np.minimum(np.maximum((c - ph) / (2 * ph), 0.0), 1.0)
        c1 = c + 1.0
        self._tab = (w_day, 1 - w_day, w_week, 1 - w_week, np.maximum(1.0 / c1, self.a_hod),
                     np.maximum(1.0 / c1, self.a_how), np.minimum(c1, self.n_cap).astype(self.cnt.dtype))
        return self._tab

    _ARRAYS = ("hod_mu", "hod_dev", "how_mu", "how_dev", "hod_n", "how_n", "lvl_mu", "lvl_dev", "run_excess",
               "run_expected", "age", "run_len", "run_start", "last_active", "used")
    _STORE = ("prof", "cnt")  # what the views among them are views of
    _VIEWS = _ARRAYS[:6]

    def __getstate__(self) -> dict:
        """Rows in use only (not the spare capacity), zlib-compressed: an hour-of-week profile
        is mostly zeros during a series' first week, and idle rows are all zeros. The format
        is by array name, as before the profiles were stored side by side."""
        import zlib

        st = {k: v for k, v in vars(self).items() if k not in self._ARRAYS and k not in self._STORE and k != "_tab"}
        st["_packed"] = {k: (getattr(self, k).dtype.str, getattr(self, k).shape[1:],
                             zlib.compress(np.ascontiguousarray(getattr(self, k)[: self.n]).tobytes(), 1))
                         for k in self._ARRAYS}
        return st

    def __setstate__(self, st: dict) -> None:
        import zlib

        packed = st.pop("_packed", None)
        if packed is None:  # older pickles hold the arrays themselves
            arrays = {k: st.pop(k) for k in self._ARRAYS if k in st}
        else:
            arrays = {k: np.frombuffer(zlib.decompress(blob), dtype).reshape((-1, *shape))
                      for k, (dtype, shape, blob) in packed.items()}
        self.__dict__.update(st)
        self.__dict__.setdefault("n_cap", 60000)  # older pickles: uint16 counts, capped at 60000
        self._alloc(self.cap, arrays["hod_n"].dtype if "hod_n" in arrays else None)
        for k, arr in arrays.items():
            getattr(self, k)[: len(arr)] = arr

    def nbytes(self) -> int:
        return sum(v.nbytes for k, v in vars(self).items() if isinstance(v, np.ndarray) and k not in self._VIEWS)
