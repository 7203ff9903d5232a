"""End-of-day and end-of-month spend projections per project and provider.

Projection = spend so far in the (UTC) day or month + the forecaster's expected spend for the
rest of it (the seasonal profile, hour by hour). Rows go to `spend_projection` every 15
minutes of event time; `latest()` serves `describe`.

>>> p = Projector(); p.day_start(0), p.month_bounds(0)
(0, (0, 44640))
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone

import numpy as np

EVERY_MIN = 15


class Projector:
    def __init__(self) -> None:
        # Spend today and this month per series row (numpy: one add per minute for all rows).
        self.day = np.zeros(0)
        self.month = np.zeros(0)
        self.cur_day = -1
        self.cur_month = -1
        self.last: dict[tuple, dict] = {}
        self._month: tuple[int, int] | None = None  # month bounds of `cur_day`

    def __getstate__(self) -> dict:
        # {row: spend} of the rows with spend: the arrays span every series row, keys included.
        st = dict(self.__dict__)
        for name in ("day", "month"):
            v = st[name]
            if isinstance(v, np.ndarray):
                rows = np.nonzero(v)[0]
                st[name] = dict(zip(rows.tolist(), v[rows].tolist()))
        return st

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        self.__dict__.setdefault("_month", None)
        for name in ("day", "month"):  # pickles hold {row: spend}
            v = getattr(self, name)
            if isinstance(v, dict):
                arr = np.zeros(max(v, default=-1) + 1)
                arr[list(v)] = list(v.values())
                setattr(self, name, arr)

    def reset(self, r: int) -> None:
        """Row `r` starts a new series: spend counted so far is another's (a freed row's)."""
        for arr in (self.day, self.month):
            if r < len(arr):
                arr[r] = 0.0

    @staticmethod
    def day_start(t: int) -> int:
        return t - t % 1440

    @staticmethod
    def month_bounds(t: int) -> tuple[int, int]:
        d = datetime.fromtimestamp(t * 60, tz=timezone.utc)
        start = datetime(d.year, d.month, 1, tzinfo=timezone.utc)
        days = calendar.monthrange(d.year, d.month)[1]
        s = int(start.timestamp()) // 60
        return s, s + days * 1440

    def observe(self, det, t: int, x: np.ndarray, ctx, want: np.ndarray | None = None) -> None:
        """Add minute `t`'s spend; every EVERY_MIN minutes emit projections. `want`: the rows in
        use at project and provider level (the detector has it at hand)."""
        n = det.bank.n
        day = self.day_start(t)
        if day != self.cur_day:
            self.day, self.cur_day = np.zeros(n), day
            self._month = self.month_bounds(t)  # the same all day
        if self._month is None:  # unpickled mid-day from before the cache
            self._month = self.month_bounds(t)
        m0, m1 = self._month
        if m0 != self.cur_month:
            self.month, self.cur_month = np.zeros(n), m0
        if len(self.day) < n:
            self.day = np.concatenate([self.day, np.zeros(n - len(self.day))])
        if len(self.month) < n:
            self.month = np.concatenate([self.month, np.zeros(n - len(self.month))])
        if want is None:
            lv = det.level[:n]
            want = ((lv == 1) | (lv == 2)) & det.bank.used[:n]
        # Adding 0.0 changes no total (they are sums of non-zero spend, never −0.0): one add for all.
        xs = np.where(want, x, 0.0)
        self.day[:n] += xs
        self.month[:n] += xs
        if (t + 1) % EVERY_MIN:
            return
        rows = np.nonzero(want)[0]
        if not len(rows):
            return
        # Expected spend per hour for the next 24 hours (one forecast per hour bucket).
        per_hour = det.bank.forecast_many([t + 1 + h * 60 for h in range(24)], rows) * 60  # (24, rows)
        left_today = day + 1440 - (t + 1)
        full_h, part = divmod(left_today, 60)
        rest_day = per_hour[:full_h].sum(axis=0) + (per_hour[full_h] * part / 60 if full_h < 24 else 0)
        daily = per_hour.sum(axis=0)
        days_after = max(0, (m1 - day - 1440) // 1440)
        for r, d, mo, rest, daily_j in zip(rows.tolist(), self.day[rows].tolist(), self.month[rows].tolist(),
                                           rest_day.tolist(), daily.tolist()):
            sk = det.series[r]
            row = {"ts": (t + 1) * 60, "level": sk[0], "provider": sk[1],
                   "project": (sk[2] or "") if sk[0] == "project" else "",
                   "day_spent_usd": round(d, 6), "eod_projected_usd": round(d + rest, 6),
                   "month_spent_usd": round(mo, 6),
                   "eom_projected_usd": round(mo + rest + days_after * daily_j, 6)}
            ctx.emit("spend_projection", row)
            self.last[sk] = row

    def latest(self) -> list[dict]:
        return list(self.last.values())[:200]
