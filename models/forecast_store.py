"""Storage of `SeasonalBank` (mixed in): its arrays and their layout, rows, snapshots, and tables
of the functions of a visit count.

The hour-of-day profile is stored row-last: `hod[hour, (mu, dev), row]` (float32) and
`hod_c[hour, row]` (visit counts), so an hour's bins of every row are contiguous and one copy
turns them into float64 (mixed-type and strided ufuncs cost ~3× a plain one on the few hundred
rows of a bank). `hod_mu`, `hod_dev`, `hod_n` (rows × 24) are views of them.

The hour-of-week profile is stored by weekday, in a pool of day tables: `week[hour, (mu, dev),
slot]` and `week_c[hour, slot]`, row r's weekday d in slot `wslot[d, r]`. Slot 0 is all zeros
and never written: a weekday a row has not learnt yet. A row takes a slot when it first learns
on that weekday (`step`) and gives its slots back when it is removed. A key's row lives in the
bank while it has spend (then it is packed: models/costspike_cold.py), so most rows hold one
or two weekdays: ≈ 0.5 KB a row where all seven took 1.7 KB. A row with a week of history
holds 28 bytes more than before (its seven slot numbers).

Snapshots hold the arrays by name (`hod_mu`, `how_mu`, `how_n`, …: rows × bins), in the format
of the bank before the pool (whose code loads them), and the pool is rebuilt on load.

>>> from keywatch.models.forecast import SeasonalBank
>>> b = SeasonalBank(); r = b.add(); b.set_row_profile(r, *_bump(b, 30, 2.5))
>>> p, c = b.row_profile(r)
>>> float(p[1 + 30 // 24, 30 % 24, 0]), b.hod_n.shape, int((b.wslot[:, r] > 0).sum())
(2.5, (16, 24), 1)
>>> b.remove(r); int(b.wslot[:, r].max()), len(b.wfree)
(0, 1)
"""

from __future__ import annotations

import numpy as np

from keywatch.models.rowbank import RowBank


def _bump(bank, bin_: int, value: float):
    """A profile whose hour-of-week bin `bin_` learnt `value` once (for the examples)."""
    prof = np.zeros((8, 24, 2), np.float32)
    cnt = np.zeros((8, 24), bank.hod_c.dtype)
    prof[1 + bin_ // 24, bin_ % 24, 0], cnt[1 + bin_ // 24, bin_ % 24] = value, 1
    return prof, cnt


class SeasonalStore(RowBank):
    """Arrays, rows and snapshots of `SeasonalBank` (a mixin: the bank sets `n_cap`, `per_hour`,
    `a_hod`, `a_how`)."""

    def _alloc(self, cap: int, count_dtype=None) -> None:
        """Arrays for `cap` rows (rows in use copied over), the views reset (see the module)."""
        ndt = count_dtype or (self.hod_c.dtype if hasattr(self, "hod_c") else
                              np.uint8 if getattr(self, "n_cap", 60000) <= 255 else np.uint16)
        for name, lead, dtype in (("hod", (24, 2), np.float32), ("hod_c", (24,), ndt), ("wslot", (7,), np.int32)):
            new = np.zeros((*lead, cap), dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[..., : old.shape[-1]] = old
            setattr(self, name, new)
        if not hasattr(self, "week"):
            self.week, self.week_c = np.zeros((24, 2, 1), np.float32), np.zeros((24, 1), ndt)
            self.wn, self.wfree = 1, []  # slots handed out (slot 0: the zero table), freed slots
        elif self.week_c.dtype != ndt:
            self.week_c = self.week_c.astype(ndt)
        grow = self._grow
        for name in ("lvl_mu", "lvl_dev", "run_excess", "run_expected"):
            grow(name, (cap,), np.float64)
        for name in ("age", "run_len", "run_start", "last_active"):
            grow(name, (cap,), np.int64)
        grow("used", (cap,), np.bool_)
        self.cap = cap
        self._tab = None  # `_tables()`
        p = self.hod
        self.hod_mu, self.hod_dev, self.hod_n = p[:, 0].T, p[:, 1].T, self.hod_c.T
        assert np.shares_memory(self.hod_n, self.hod_c)  # views, not copies

    def _take_slots(self, k: int) -> np.ndarray:
        """`k` zeroed day tables of the pool (freed ones first; it grows as the rows do)."""
        free = self.wfree
        got = [free.pop() for _ in range(min(k, len(free)))]
        more = k - len(got)
        if more:
            cap = self.week.shape[-1]
            if self.wn + more > cap:
                new_cap = max(self.wn + more, cap * 2 if cap < 4096 else cap + cap // 4)
                for name in ("week", "week_c"):
                    old = getattr(self, name)
                    new = np.zeros((*old.shape[:-1], new_cap), old.dtype)
                    new[..., : self.wn] = old[..., : self.wn]
                    setattr(self, name, new)
            got += range(self.wn, self.wn + more)
            self.wn += more
        slots = np.array(got, np.int32)
        self.week[..., slots] = 0
        self.week_c[..., slots] = 0
        return slots

    def _give_slots(self, r: int) -> None:
        taken = self.wslot[:, r]
        self.wfree.extend(taken[taken > 0].tolist())
        taken[:] = 0

    def add(self) -> int:
        """A new (zeroed) series row."""
        r = self._take_row()
        self.hod[..., r] = 0
        self.hod_c[..., r] = 0
        self._give_slots(r)
        for name in ("lvl_mu", "lvl_dev", "run_excess", "run_expected", "age", "run_len", "run_start", "last_active"):
            getattr(self, name)[r] = 0
        self.used[r] = True
        return r

    def remove(self, r: int) -> None:
        self.used[r] = False
        self._give_slots(r)
        self.free.append(r)

    def row_profile(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `r`'s profiles as `[table, hour, (mu, dev)]` float32 and `[table, hour]` counts
        (table 0 = hour of day, 1 + d = weekday d of the hour of week): a packed row's layout."""
        s = self.wslot[:, r]
        prof = np.concatenate([self.hod[None, :, :, r], self.week[:, :, s].transpose(2, 0, 1)])
        cnt = np.concatenate([self.hod_c[None, :, r], self.week_c[:, s].T])
        return prof, cnt

    def set_row_profile(self, r: int, prof: np.ndarray, cnt: np.ndarray) -> None:
        """Row `r`'s profiles from `row_profile`'s layout; a weekday never learnt takes no slot."""
        self.hod[..., r], self.hod_c[..., r] = prof[0], cnt[0]
        self._give_slots(r)
        days = np.nonzero(cnt[1:].any(axis=1) | prof[1:].any(axis=(1, 2)))[0]
        if len(days):
            s = self.wslot[days, r] = self._take_slots(len(days))
            self.week[:, :, s] = prof[1 + days].transpose(1, 2, 0)
            self.week_c[:, s] = cnt[1 + days].T

    def week_bins(self, rows, how) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, dev, count) of hour-of-week bins `how` of `rows` (broadcast as numpy indexes)."""
        how = np.asarray(how)
        s = self.wslot[how // 24, rows]
        h = how % 24
        return self.week[h, 0, s], self.week[h, 1, s], self.week_c[h, s]

    def _tables(self) -> tuple:
        """Functions of a visit count, tabled for every count its dtype holds (counts stop at
        `n_cap`), each computed as `forecast` and the learning step compute it: w_day, 1 − w_day,
        w_week, 1 − w_week, the day and week learning rates, the next count. A cache (`_alloc`
        drops it: the count dtype is set there)."""
        ph, c = self.per_hour, np.arange(np.iinfo(self.hod_c.dtype).max + 1)
        w_day = np.minimum(c / ph, 1.0)
        w_week = 0.6 * np.minimum(np.maximum((c - ph) / (2 * ph), 0.0), 1.0)
        c1 = c + 1.0
        self._tab = (w_day, 1 - w_day, w_week, 1 - w_week, np.maximum(1.0 / c1, self.a_hod),
                     np.maximum(1.0 / c1, self.a_how), np.minimum(c1, self.n_cap).astype(self.hod_c.dtype))
        return self._tab

    _ARRAYS = ("hod_mu", "hod_dev", "how_mu", "how_dev", "hod_n", "how_n", "lvl_mu", "lvl_dev", "run_excess",
               "run_expected", "age", "run_len", "run_start", "last_active", "used")
    _STORE = ("hod", "hod_c", "wslot", "week", "week_c", "wn", "wfree")  # held as `_ARRAYS` in snapshots
    _VIEWS = ("hod_mu", "hod_dev", "hod_n")  # views of `hod`, `hod_c`

    def _week_rows(self, n: int) -> dict:
        """`how_mu`, `how_dev`, `how_n` of rows 0..n-1, rows × 168 (a snapshot's format)."""
        s = self.wslot[:, :n]  # [day, row]
        return {name: np.ascontiguousarray(a[:, s].transpose(2, 1, 0)).reshape(n, 168)
                for name, a in (("how_mu", self.week[:, 0]), ("how_dev", self.week[:, 1]), ("how_n", self.week_c))}

    def __getstate__(self) -> dict:
        """Rows in use only (not the spare capacity), zlib-compressed: an hour-of-week profile
        is mostly zeros during a series' first week, and idle rows are all zeros. The format
        is by array name, as before the profiles were stored side by side."""
        import zlib

        st = {k: v for k, v in vars(self).items() if k not in self._ARRAYS and k not in self._STORE and k != "_tab"}
        week = self._week_rows(self.n)
        arrays = {k: week[k] if k in week else getattr(self, k)[: self.n] for k in self._ARRAYS}
        st["_packed"] = {k: (a.dtype.str, a.shape[1:], zlib.compress(np.ascontiguousarray(a).tobytes(), 1))
                         for k, a in arrays.items()}
        return st

    def __setstate__(self, st: dict) -> None:
        import zlib

        packed = st.pop("_packed", None)
        if packed is None:  # older pickles hold the arrays themselves
            arrays = {k: st.pop(k) for k in self._ARRAYS if k in st}
        else:
            arrays = {k: np.frombuffer(zlib.decompress(blob), dtype).reshape((-1, *shape))
                      for k, (dtype, shape, blob) in packed.items()}
        for k in ("prof", "cnt"):  # a snapshot of the bank before the pool, if any, holds them
            st.pop(k, None)
        self.__dict__.update(st)
        self.__dict__.setdefault("n_cap", 60000)  # older pickles: uint16 counts, capped at 60000
        self._alloc(self.cap, arrays["hod_n"].dtype if "hod_n" in arrays else None)
        week = {k: arrays.pop(k) for k in ("how_mu", "how_dev", "how_n") if k in arrays}
        for k, arr in arrays.items():
            getattr(self, k)[: len(arr)] = arr
        if week:
            n = len(week["how_n"])
            prof = np.stack([week["how_mu"], week["how_dev"]], -1).reshape(n, 7, 24, 2)
            cnt = week["how_n"].reshape(n, 7, 24)
            rows, days = np.nonzero(cnt.any(axis=2) | prof.any(axis=(2, 3)))
            s = self.wslot[days, rows] = self._take_slots(len(rows))
            self.week[:, :, s] = prof[rows, days].transpose(1, 2, 0)
            self.week_c[:, s] = cnt[rows, days].T

    def nbytes(self) -> int:
        return sum(v.nbytes for k, v in vars(self).items() if isinstance(v, np.ndarray) and k not in self._VIEWS)
