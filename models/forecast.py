"""Online seasonal forecaster for many series at once (numpy, one row per series).

Each series keeps an hour-of-day profile (24 bins) and an hour-of-week profile (168 bins) of
exponentially weighted means and mean absolute deviations, plus an all-hours level for the
first hours of life. One `step` advances every series by one time unit (a minute for spend):
it scores first (expected value, robust spread, upper band = expected + k·spread), then learns
with the value winsorised at the band, so a spike never inflates its own baseline. Rows whose
`learn` flag is off (an incident is open) do not learn at all. Memory: ≈ 0.3 KB per series and
0.2 KB per weekday it has learnt on, ≈ 1.8 KB with a week of history (counts are one byte per
bin; models/forecast_store.py).

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

from keywatch.models.forecast_store import SeasonalStore

HOW_OFFSET = 72  # 1970-01-01 was a Thursday: hour-of-week 0 = Monday 00:00 UTC


class SeasonalBank(SeasonalStore):
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
        how_mu, how_dev, how_n = self.week_bins(rows, how)
        w_week = 0.6 * np.minimum(np.maximum((how_n - self.per_hour) / (2 * self.per_hour), 0.0), 1.0)
        w1 = 1 - w_week
        mu = w1 * self.hod_mu[rows, hod] + w_week * how_mu
        dev = w1 * self.hod_dev[rows, hod] + w_week * how_dev
        w1 = 1 - w_day
        exp = w1 * self.lvl_mu[rows] + w_day * mu
        dev = w1 * self.lvl_dev[rows] + w_day * dev
        # Mean absolute deviation → σ (×1.25); a floor of 5 % of the level keeps flat series sane.
        spread = np.maximum(1.25 * dev, 0.05 * np.abs(exp))
        return exp, spread

    def step(self, t: int, x: np.ndarray, learn: np.ndarray | None = None, accept: np.ndarray | None = None):
        """Score then learn one time unit for rows 0..n-1. Returns (expected, upper, spread).

        `learn` False: the row does not learn; `accept` True: learn the raw value (analyst said
        the new level is normal), not the winsorised one. The same numbers as `forecast` and a
        learning step row by row, on contiguous float64 copies of this unit's bins."""
        n = self.n
        hour = int(t // self.per_hour)
        hod, dow = hour % 24, (hour + HOW_OFFSET) % 168 // 24
        slots = self.wslot[dow, :n]  # this weekday's day table of each row (0: none yet, zeros)
        G = np.empty((2, 2, n))  # [table (hour of day, hour of week), (mu, dev), row], exact
        G[0] = self.hod[hod, :, :n]
        G[1] = self.week[hod].take(slots, axis=1)  # `take`: ≈ 2–5× faster than fancy indexing here
        Cn = np.empty((2, n), self.hod_c.dtype)  # the two bins' visit counts
        Cn[0] = self.hod_c[hod, :n]
        Cn[1] = self.week_c[hod].take(slots)
        tab = self.__dict__.get("_tab") or self._tables()
        w_week, w1 = tab[2][Cn[1]], tab[3][Cn[1]]
        mu = w1 * G[0, 0] + w_week * G[1, 0]
        dev = w1 * G[0, 1] + w_week * G[1, 1]
        w_day, w1 = tab[0][Cn[0]], tab[1][Cn[0]]
        exp = w1 * self.lvl_mu[:n] + w_day * mu
        dev = w1 * self.lvl_dev[:n] + w_day * dev
        # Mean absolute deviation → σ (×1.25); a floor of 5 % of the level keeps flat series sane.
        spread = np.maximum(1.25 * dev, 0.05 * np.abs(exp))
        upper = exp + self.k * spread
        # Run bookkeeping: a run starts above the band and continues while above half the band.
        run = self.run_len[:n]
        hi = x > upper
        if np.count_nonzero(hi) or np.count_nonzero(run):
            on = hi | ((run > 0) & (x > exp + 0.5 * (upper - exp)))
            self.run_start[:n][on & (run == 0)] = t
            np.multiply(run + 1, on, out=run)  # run + 1 where on, else 0
            self.run_excess[:n] = np.where(on, self.run_excess[:n] + (x - exp), 0.0)
            self.run_expected[:n] = np.where(on, self.run_expected[:n] + exp, 0.0)
        else:  # no row is (or gets) in a run: what the general case gives
            self.run_excess[:n] = 0.0
            self.run_expected[:n] = 0.0
        # Learn: winsorised at the band once warmed up; not at all where `learn` is False.
        age0 = self.age[:n]
        lo = int(np.minimum.reduce(age0)) if n else 0
        if lo >= self.warmup and accept is None:  # every row warm
            xl = np.minimum(x, upper)
        else:
            warm = age0 >= self.warmup
            if accept is not None:
                warm = warm & ~accept
            xl = np.where(warm, np.minimum(x, upper), x)
        mask = self.used[:n] if learn is None else (self.used[:n] & learn)
        self._learn(xl, mask, (hod, dow, slots), G, Cn, tab, lo + 1)
        return exp, upper, spread

    def _learn(self, x: np.ndarray, mask: np.ndarray, at: tuple, G: np.ndarray, Cn: np.ndarray, tab: tuple,
               age_lo: int) -> None:
        """One learning step of the rows in `mask`. `at`: (hour of day, weekday, the rows' day
        tables), G: this unit's bins as float64, Cn: their counts, `tab`: `_tables()`, `age_lo`
        ≤ every row's new age. Computed for every row (elementwise: a learning row gets the
        numbers it would alone), the profiles' two bins in the same calls, and written back
        where `mask` is set (a row learning on a weekday for the first time takes a table)."""
        n = len(mask)
        k = np.count_nonzero(mask)
        if not k:
            return
        hod, dow, slots = at
        new_day = mask & (slots == 0)
        if np.count_nonzero(new_day):
            rows = np.nonzero(new_day)[0]
            slots = slots.copy()
            slots[rows] = self.wslot[dow, rows] = self._take_slots(len(rows))
        a = np.empty(G.shape[::2])
        np.take(tab[4], Cn[0], out=a[0])
        np.take(tab[5], Cn[1], out=a[1])
        mu, dev = G[:, 0], G[:, 1]
        dx = x - mu
        d = np.abs(dx) if np.count_nonzero(Cn) == 2 * n else np.where(Cn > 0, np.abs(dx), 0.0)
        new = np.empty_like(G)
        np.add(mu, a * dx, out=new[:, 0])
        np.add(dev, a * (d - dev), out=new[:, 1])
        new_c = tab[6][Cn]
        age = self.age[:n] + 1
        lmu, ldev = self.lvl_mu[:n], self.lvl_dev[:n]
        dx = x - lmu
        if age_lo > 1 and 1.0 / age_lo <= self.a_lvl:  # every row past its first values (1/age falls)
            a = self.a_lvl
            new_ldev = ldev + a * (np.abs(dx) - ldev)
        else:
            a = np.maximum(1.0 / (age + 0.0), self.a_lvl)
            new_ldev = ldev + a * (np.where(age > 1, np.abs(dx), 0.0) - ldev)
        new_lmu = lmu + a * dx
        # float64 → float32 on the way back: the rounding of the old in-place update.
        if k == n:
            self.hod[hod, :, :n], self.hod_c[hod, :n] = new[0], new_c[0]
            w = self.week[hod]  # one field at a time: ≈ 2.5× faster than `w[:, slots]` for 100k rows
            w[0, slots], w[1, slots], self.week_c[hod, slots] = new[1, 0], new[1, 1], new_c[1]
            ldev[:], lmu[:], self.age[:n] = new_ldev, new_lmu, age
            return
        np.copyto(self.hod[hod, :, :n], new[0], where=mask)
        np.copyto(self.hod_c[hod, :n], new_c[0], where=mask)
        s = slots[mask]
        w = self.week[hod]
        w[0, s], w[1, s], self.week_c[hod, s] = new[1, 0][mask], new[1, 1][mask], new_c[1][mask]
        np.copyto(ldev, new_ldev, where=mask)
        np.copyto(lmu, new_lmu, where=mask)
        np.copyto(self.age[:n], age, where=mask)


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

    def reset(self, r: int) -> None:
        """Row `r` starts from nothing (a new series; a freed row's history is not its own)."""
        self._grow(r + 1)
        self.mu[r], self.var[r], self.short[r], self.cnt[r] = 0.0, 1.0, 0.0, 0.0

    def step(self, z: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Score = 1 − tail probability of the short-term average (0 until 20 values seen).
        Every row's state moves; with `rows`, only those rows are scored (scores aligned with
        `rows`): the detector needs the scores of its few candidate rows only."""
        return self._step(z, False, rows)

    def step_log(self, z: np.ndarray) -> np.ndarray:
        """Like `step` but −log10(tail), so the rarest values stay ranked (no saturation at 1)."""
        return self._step(z, True)

    def _step(self, z: np.ndarray, log: bool, rows: np.ndarray | None = None) -> np.ndarray:
        n = len(z)
        self._grow(n)
        mu, var, short, cnt = self.mu[:n], self.var[:n], self.short[:n], self.cnt[:n]
        short += self.a_short * (z - short)
        if rows is None:
            score = self._score(short, mu, var, cnt, log)
        else:  # elementwise: the same numbers as scoring every row and picking these
            score = self._score(short[rows], mu[rows], var[rows], cnt[rows], log) if len(rows) else np.zeros(0)
        # Once the youngest row's rate is down to `a_long`, every row's is (a reused row starts
        # again from nothing: `reset`, so the youngest is not always the last).
        a = self.a_long if n and 1.0 / (np.minimum.reduce(cnt) + 1.0) <= self.a_long else np.maximum(1.0 / (cnt + 1.0), self.a_long)
        d = short - mu
        mu += a * d
        var += a * (d * d - var)
        cnt += 1
        return score

    def _grow(self, n: int) -> None:
        if n > len(self.mu):
            for name, fill in (("mu", 0.0), ("var", 1.0), ("short", 0.0), ("cnt", 0.0)):
                arr = np.full(max(n, 2 * len(self.mu)), fill)
                arr[: len(getattr(self, name))] = getattr(self, name)
                setattr(self, name, arr)

    @staticmethod
    def _score(short: np.ndarray, mu: np.ndarray, var: np.ndarray, cnt: np.ndarray, log: bool) -> np.ndarray:
        sd = np.sqrt(np.maximum(var, 1e-12))
        tail = 0.5 * _erfc((short - mu) / (sd * _SQRT2))
        return np.where(cnt > 20, -np.log10(np.maximum(tail, 1e-300)) if log else 1.0 - tail, 0.0)


_SQRT2 = np.sqrt(2.0)


def _erfc(x: np.ndarray) -> np.ndarray:
    # numpy has no erfc; Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7) is plenty for a score.
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * ax)
    y = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * np.exp(-ax * ax)
    return np.where(x >= 0, y, 2.0 - y)  # sign(x) ≥ 0 exactly when x ≥ 0 (±0 included, NaN not)
