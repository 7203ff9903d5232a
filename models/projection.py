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
        self.day: dict[int, float] = {}  # row → spend today
        self.month: dict[int, float] = {}
        self.cur_day = -1
        self.cur_month = -1
        self.last: dict[tuple, dict] = {}

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

    def observe(self, det, t: int, x: np.ndarray, ctx) -> None:
        """Add minute `t`'s spend; every EVERY_MIN minutes emit projections."""
        day = self.day_start(t)
        m0, m1 = self.month_bounds(t)
        if day != self.cur_day:
            self.day, self.cur_day = {}, day
        if m0 != self.cur_month:
            self.month, self.cur_month = {}, m0
        n = det.bank.n
        lv = det.level[:n]
        rows = np.nonzero(((lv == 1) | (lv == 2)) & det.bank.used[:n])[0]
        for r in rows[x[rows] != 0].tolist():
            self.day[r] = self.day.get(r, 0.0) + float(x[r])
            self.month[r] = self.month.get(r, 0.0) + float(x[r])
        rows = rows.tolist()
        if (t + 1) % EVERY_MIN or not rows:
            return
        bank = det.bank
        idx = np.array(rows)
        # Expected spend per hour for the next 24 hours (one forecast per hour bucket).
        hours = [(t + 1 + h * 60) for h in range(24)]
        per_hour = np.stack([bank.forecast(u, idx)[0] * 60 for u in hours])  # (24, rows)
        left_today = day + 1440 - (t + 1)
        full_h, part = divmod(left_today, 60)
        rest_day = per_hour[:full_h].sum(axis=0) + (per_hour[full_h] * part / 60 if full_h < 24 else 0)
        daily = per_hour.sum(axis=0)
        days_after = max(0, (m1 - day - 1440) // 1440)
        for j, r in enumerate(rows):
            sk = det.series[r]
            d, mo = self.day.get(r, 0.0), self.month.get(r, 0.0)
            row = {"ts": (t + 1) * 60, "level": sk[0], "provider": sk[1],
                   "project": (sk[2] or "") if sk[0] == "project" else "",
                   "day_spent_usd": round(d, 6), "eod_projected_usd": round(d + float(rest_day[j]), 6),
                   "month_spent_usd": round(mo, 6),
                   "eom_projected_usd": round(mo + float(rest_day[j]) + days_after * float(daily[j]), 6)}
            ctx.emit("spend_projection", row)
            self.last[sk] = row

    def latest(self) -> list[dict]:
        return list(self.last.values())[:200]
