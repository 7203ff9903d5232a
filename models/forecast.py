"""Online seasonal forecaster for many series at once (numpy, one row per series).

Each series keeps an hour-of-day profile (24 bins) and an hour-of-week profile (168 bins) of
exponentially weighted means and mean absolute deviations, plus an all-hours level for the
first hours of life. One `step` advances every series by one time unit (a minute for spend):
it scores first (expected value, robust spread, upper band = expected + k·spread), then learns
with the value winsorised at the band, so a spike never inflates its own baseline. Rows whose
`learn` flag is off (an incident is open) do not learn at all. Memory: ~1.8 KB per series (counts are one byte per bin).

`TailCalibrator` is the calibration layer: it turns raw deviations into [0, 1] scores by how
rare a short-term average of them is against their own long-run distribution (in the spirit of
Numenta's anomaly likelihood), so noisy series do not score high all the time.

>>> import numpy as np
>>> bank = SeasonalBank(k=4.0)
>>> r = bank.add()
>>> for m in range(3 * 1440):                     # three days of $1/min with a daily bump
...     _ = bank.step(m, np.array([1.0 + (m // 60 % 24 == 12)]))
>>> exp, up = bank.step(3 * 1440 + 12 * 60, np.array([2.0]))[:2]
>>> bool(1.8 < exp[0] < 2.1 and up[0] >= exp[0])
True
"""

from __future__ import annotations

import numpy as np

from keywatch.models.rowbank import RowBank

HOW_OFFSET = 72  # 1970-01-01 was a Thursday: hour-of-week 0 = Monday 00:00 UTC


class SeasonalBank(RowBank):
    def __init__(self, k: float = 4.0, unit_s: float = 60.0, day_memory: float = 3.0, week_memory: float = 3.0,
                 level_memory_h: float = 12.0, warmup_units: int = 360, capacity: int = 16) -> None:
        self.k = k
        self.per_hour = 3600.0 / unit_s
        # Minimum learning rates: each hour bin is visited `per_hour` times a day (or a week).
        self.a_hod = 1.0 / (self.per_hour * day_memory)
        self.a_how = 1.0 / (self.per_hour * week_memory)
        self.a_lvl = 1.0 / (self.per_hour * level_memory_h)
        self.warmup = warmup_units
        # Visit counts per hour bin only matter up to where the weights and learning rates stop
        # changing (3 visits' worth of units: 180 for minutes), so they are capped there and fit
        # one byte per bin — the same forecasts as uncapped counts, 192 bytes less per series.
        sat = int(self.per_hour * max(3.0, day_memory, week_memory)) + 1
        self.n_cap = sat if sat <= 255 else 60000
        self.n = 0
        self._alloc(capacity)
        self.free: list[int] = []

    def _alloc(self, cap: int) -> None:
        grow = self._grow
        for name, cols in (("hod_mu", 24), ("hod_dev", 24), ("how_mu", 168), ("how_dev", 168)):
            grow(name, (cap, cols), np.float32)
        ndt = np.uint8 if getattr(self, "n_cap", 60000) <= 255 else np.uint16
        grow("hod_n", (cap, 24), ndt)
        grow("how_n", (cap, 168), ndt)
        for name in ("lvl_mu", "lvl_dev", "run_excess", "run_expected"):
            grow(name, (cap,), np.float64)
        for name in ("age", "run_len", "run_start", "last_active"):
            grow(name, (cap,), np.int64)
        grow("used", (cap,), np.bool_)
        self.cap = cap

    def add(self) -> int:
        """A new (zeroed) series row."""
        r = self._take_row()
        for name in ("hod_mu", "hod_dev", "how_mu", "how_dev", "hod_n", "how_n", "lvl_mu", "lvl_dev",
                     "run_excess", "run_expected", "age", "run_len", "run_start", "last_active"):
            getattr(self, name)[r] = 0
        self.used[r] = True
        return r

    def remove(self, r: int) -> None:
        self.used[r] = False
        self.free.append(r)

    def forecast(self, t: int, rows=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Expected value and robust spread at time unit `t` (no learning)."""
        hour = int(t // self.per_hour)
        return self._forecast(rows, hour % 24, (hour + HOW_OFFSET) % 168)

    def forecast_many(self, ts: list[int], rows: np.ndarray) -> np.ndarray:
        """Expected values of `rows` at each time unit of `ts`: (len(ts), rows), line i what
        `forecast(ts[i], rows)` gives, in one numpy pass."""
        h = np.array([int(t // self.per_hour) for t in ts])[:, None]
        return self._forecast(np.asarray(rows)[None, :], h % 24, (h + HOW_OFFSET) % 168)[0]

    def _forecast(self, rows, hod, how) -> tuple[np.ndarray, np.ndarray]:
        w_day = np.minimum(self.hod_n[rows, hod] / self.per_hour, 1.0)
        # np.clip's dispatch costs more than the two ufuncs it stands for here.
        w_week = 0.6 * np.minimum(np.maximum((self.how_n[rows, how] - self.per_hour) / (2 * self.per_hour), 0.0), 1.0)
        w1 = 1 - w_week
        mu = w1 * self.hod_mu[rows, hod] + w_week * self.how_mu[rows, how]
        dev = w1 * self.hod_dev[rows, hod] + w_week * self.how_dev[rows, how]
        w1 = 1 - w_day
        exp = w1 * self.lvl_mu[rows] + w_day * mu
        dev = w1 * self.lvl_dev[rows] + w_day * dev
        # Mean absolute deviation → σ (×1.25); a floor of 5 % of the level keeps flat series sane.
        spread = np.maximum(1.25 * dev, 0.05 * np.abs(exp))
        return exp, spread

    def step(self, t: int, x: np.ndarray, learn: np.ndarray | None = None, accept: np.ndarray | None = None):
        """Score then learn one time unit for rows 0..n-1. Returns (expected, upper, spread).

        `learn` False: the row does not learn; `accept` True: learn the raw value (analyst said
        the new level is normal), not the winsorised one."""
        n = self.n
        exp, spread = self.forecast(t, slice(0, n))
        upper = exp + self.k * spread
        # Run bookkeeping: a run starts above the band and continues while above half the band.
        run = self.run_len[:n]
        on = (x > upper) | ((run > 0) & (x > exp + 0.5 * (upper - exp)))
        self.run_start[:n][on & (run == 0)] = t
        np.multiply(run + 1, on, out=run)  # run + 1 where on, else 0
        self.run_excess[:n] = np.where(on, self.run_excess[:n] + (x - exp), 0.0)
        self.run_expected[:n] = np.where(on, self.run_expected[:n] + exp, 0.0)
        # Learn: winsorised at the band once warmed up; not at all where `learn` is False.
        warm = self.age[:n] >= self.warmup
        if accept is not None:
            warm = warm & ~accept
        xl = np.where(warm, np.minimum(x, upper), x)
        mask = self.used[:n] if learn is None else (self.used[:n] & learn)
        self._learn(t, xl, mask)
        return exp, upper, spread

    def _learn(self, t: int, x: np.ndarray, mask: np.ndarray) -> None:
        hour = int(t // self.per_hour)
        hod, how = hour % 24, (hour + HOW_OFFSET) % 168
        idx = np.nonzero(mask)[0]
        if not len(idx):
            return
        if len(idx) == len(mask):  # every row learns: slices, not gathers and scatters
            idx = slice(0, len(mask))
        x = x[idx]
        age = self.age[idx] + 1
        self.age[idx] = age
        # Each difference is computed once and reused (the same numbers as spelling it twice).
        for mu_a, dev_a, n_a, col, amin in ((self.hod_mu, self.hod_dev, self.hod_n, hod, self.a_hod),
                                            (self.how_mu, self.how_dev, self.how_n, how, self.a_how)):
            cnt = n_a[idx, col].astype(np.float64)
            c1 = cnt + 1.0
            a = np.maximum(1.0 / c1, amin)
            dx = x - mu_a[idx, col]
            mu_a[idx, col] += a * dx
            d = np.abs(dx) if cnt.min() > 0 else np.where(cnt > 0, np.abs(dx), 0.0)
            dev = dev_a[idx, col]
            dev_a[idx, col] = dev + a * (d - dev)
            n_a[idx, col] = np.minimum(c1, self.n_cap)
        a = np.maximum(1.0 / (age + 0.0), self.a_lvl)
        dx = x - self.lvl_mu[idx]
        dev = self.lvl_dev[idx]
        self.lvl_dev[idx] = dev + a * (np.where(age > 1, np.abs(dx), 0.0) - dev)
        self.lvl_mu[idx] += a * dx

    _ARRAYS = ("hod_mu", "hod_dev", "how_mu", "how_dev", "hod_n", "how_n", "lvl_mu", "lvl_dev", "run_excess",
               "run_expected", "age", "run_len", "run_start", "last_active", "used")

    def __getstate__(self) -> dict:
        """Rows in use only (not the spare capacity), zlib-compressed: an hour-of-week profile
        is mostly zeros during a series' first week, and idle rows are all zeros."""
        import zlib

        st = {k: v for k, v in vars(self).items() if k not in self._ARRAYS}
        st["_packed"] = {k: (getattr(self, k).dtype.str, getattr(self, k).shape[1:],
                             zlib.compress(np.ascontiguousarray(getattr(self, k)[: self.n]).tobytes(), 1))
                         for k in self._ARRAYS}
        return st

    def __setstate__(self, st: dict) -> None:
        import zlib

        packed = st.pop("_packed", None)
        self.__dict__.update(st)
        self.__dict__.setdefault("n_cap", 60000)  # older pickles: uint16 counts, capped at 60000
        if packed is None:  # older pickles hold the arrays themselves
            return
        for k, (dtype, shape, blob) in packed.items():
            arr = np.zeros((self.cap, *shape), dtype)
            arr[: self.n] = np.frombuffer(zlib.decompress(blob), dtype).reshape((self.n, *shape))
            setattr(self, k, arr)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


class TailCalibrator:
    """Raw deviation z (≥ 0) → [0, 1]: how unusual its short average is against its history.

    >>> import numpy as np
    >>> cal = TailCalibrator(); rng = np.random.default_rng(0)
    >>> s = [cal.step(np.array([abs(v)]))[0] for v in rng.normal(size=2000)]
    >>> int(sum(v > 0.999 for v in s[500:])) < 10, bool(cal.step(np.array([12.0]))[0] > 0.99)
    (True, True)
    """

    def __init__(self, long_n: float = 1000.0, short_n: float = 3.0, capacity: int = 1) -> None:
        self.a_long, self.a_short = 1.0 / long_n, 1.0 / short_n
        self.mu = np.zeros(capacity)
        self.var = np.ones(capacity)
        self.short = np.zeros(capacity)
        self.cnt = np.zeros(capacity)

    def step(self, z: np.ndarray) -> np.ndarray:
        """Score = 1 − tail probability of the short-term average (0 until 20 values seen)."""
        return self._step(z, False)

    def step_log(self, z: np.ndarray) -> np.ndarray:
        """Like `step` but −log10(tail), so the rarest values stay ranked (no saturation at 1)."""
        return self._step(z, True)

    def _step(self, z: np.ndarray, log: bool) -> np.ndarray:
        n = len(z)
        if n > len(self.mu):
            for name, fill in (("mu", 0.0), ("var", 1.0), ("short", 0.0), ("cnt", 0.0)):
                arr = np.full(max(n, 2 * len(self.mu)), fill)
                arr[: len(getattr(self, name))] = getattr(self, name)
                setattr(self, name, arr)
        mu, var, short, cnt = self.mu[:n], self.var[:n], self.short[:n], self.cnt[:n]
        short += self.a_short * (z - short)
        sd = np.sqrt(np.maximum(var, 1e-12))
        tail = 0.5 * _erfc((short - mu) / (sd * _SQRT2))
        score = np.where(cnt > 20, -np.log10(np.maximum(tail, 1e-300)) if log else 1.0 - tail, 0.0)
        a = np.maximum(1.0 / (cnt + 1.0), self.a_long)
        d = short - mu
        mu += a * d
        var += a * (d * d - var)
        cnt += 1
        return score


_SQRT2 = np.sqrt(2.0)


def _erfc(x: np.ndarray) -> np.ndarray:
    # numpy has no erfc; Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7) is plenty for a score.
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * ax)
    y = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * np.exp(-ax * ax)
    return np.where(x >= 0, y, 2.0 - y)  # sign(x) ≥ 0 exactly when x ≥ 0 (±0 included, NaN not)
