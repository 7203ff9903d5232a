"""Cost-spike findings: which series runs raise a `cost_spike`, explicit resolves, and feedback.

Mixed into `keywatch.models.costspike.CostSpikeDetector` (it owns the state this reads:
`bank`, `rq`, `rc`, `uni`, `series`, `level`, `incidents`, `suppress`, `last_spike`). A run of
`min_minutes` minutes above the band whose excess is at least `min_usd` (or a relative spike,
see `_relative`) and `min_pct` % of expected is a finding on key and project series; an incident
normal for `RESOLVE_AFTER_MIN` minutes is resolved explicitly.

>>> sorted(n for n in vars(SpikeFindings) if n.startswith("_") and not n.startswith("__"))
['_candidates', '_findings', '_relative', '_resolve']
"""

from __future__ import annotations

import math

import numpy as np

from keywatch.models.alerts import Finding
from keywatch.models.core import Context
from keywatch.models.events import format_ts
from keywatch.models.rootcause import summary

RESOLVE_AFTER_MIN = 30  # explicit resolve after this many normal minutes
REL_MINUTES, REL_RATIO, REL_PEAK, REL_MIN_RPM = 3, 3.0, 5.0, 3.0  # relative spikes (see `_relative`)


class SpikeFindings:
    """`cost_spike` finding construction, resolution and feedback for `CostSpikeDetector` (a mixin)."""

    def _candidates(self, x, exp, upper) -> np.ndarray:
        """Rows whose run raises a finding this minute, bar level and suppression. Most minutes
        no series has a long enough run: the other conditions are tested on those that do, and
        the costlier relative-spike test only where the dollar test fails."""
        b = self.bank
        c = np.nonzero(b.run_len[: b.n] >= self.min_minutes)[0]
        if len(c):
            ex = b.run_excess[c]
            ok = (ex * 100 >= self.min_pct * b.run_expected[c]) & (b.age[c] >= b.warmup)
            weak = ok & ~(ex >= self.min_usd)
            if np.count_nonzero(weak):
                ok[weak] = self._relative(x, exp, upper, c[weak])
            c = c[ok]
        return c

    def _findings(self, t, ts_ms, c, calib, upper, ctx: Context) -> None:
        """Findings of candidate rows `c` (`_candidates`), `calib`: their calibrated scores."""
        b = self.bank
        for r, cal_r in zip(c.tolist(), calib.tolist()):
            skey = self.series[r]
            if skey[0] not in ("key", "project") or self.suppress.get(r, -1) > t:
                continue
            excess, expected = float(b.run_excess[r]), float(b.run_expected[r])
            start, length = int(b.run_start[r]), int(b.run_len[r])
            pct = 100 * excess / expected if expected > 0 else math.inf
            key = skey[3] if skey[0] == "key" else None
            rc = self.rc.explain((skey[1], skey[2]), start, t, expected, key=key)
            impact = 1 - 0.5 ** (excess / max(self.min_usd, 0.01) / 2)
            ur = int(self.uni_row[r])
            uni = self.uni.recent_peak(ur) if ur >= 0 else 0.0
            score = 0.3 + 0.7 * impact * (0.5 + 0.5 * max(cal_r, uni))
            pct_txt = f"+{pct:.0f}%" if math.isfinite(pct) else "from ~$0"
            reasons = [f"spend ${excess + expected:.2f} vs expected ${expected:.2f} over {length} min: "
                       f"+${excess:.2f} ({pct_txt}) above the forecast band"] + summary(rc)
            alert = ctx.report(Finding(
                kind="cost_spike", provider=skey[1], key_id=key, project=skey[2], ts_ms=ts_ms,
                started_at_ms=start * 60000, score=score, reasons=reasons, cost_impact_usd=excess,
                details={"series": "|".join(str(s) for s in skey), "level": skey[0], "root_cause": rc,
                         "expected_usd": round(expected, 4), "actual_usd": round(excess + expected, 4),
                         "excess_pct": round(pct, 1) if math.isfinite(pct) else None, "minutes": length,
                         "anomaly_score": round(uni, 4),
                         "last_minute": format_ts(t * 60000), "upper_usd_per_min": round(float(upper[r]), 4)}))
            aid = alert.alert_id if alert is not None else self.incidents.get(r, ("", 0))[0]
            if aid:
                self.incidents[r] = (aid, 0)
                self.last_spike = {"series": skey, "alert_id": aid, "minute": t}
        for r, (aid, quiet) in list(self.incidents.items()):
            if b.run_len[r] > 0:
                self.incidents[r] = (aid, 0)
            elif quiet + 1 >= RESOLVE_AFTER_MIN:
                del self.incidents[r]
                self._resolve(aid, ts_ms, ctx)
            else:
                self.incidents[r] = (aid, quiet + 1)

    def _relative(self, x, exp, upper, rows: np.ndarray) -> np.ndarray:
        """Key spikes cheap in dollars but huge in calls (≥ REL_PEAK × the busiest hour's rate):
        runaway loops. One flag per row of `rows`."""
        b, rq = self.bank, self.rq
        run = b.run_len[rows]
        ok = ((run >= max(self.min_minutes, REL_MINUTES)) & (x[rows] > upper[rows]) & (b.run_excess[rows] > 0)
              & (b.run_excess[rows] >= REL_RATIO * b.run_expected[rows]) & (self.level[rows] == 0)
              & (rq.run[rows] >= np.maximum(REL_PEAK * rq.peak[rows], REL_MIN_RPM) * run) & (b.age[rows] >= 1440))
        if np.count_nonzero(ok):  # and a whole day seen (every hour-of-day bin): the peak is known
            ok[ok] = b.hod_n[rows[ok]].min(axis=1) > 0
        return ok

    @staticmethod
    def _resolve(alert_id: str, ts_ms: int, ctx: Context) -> None:
        """Spend is back to normal: resolve explicitly (the book would only after its quiet time)."""
        book = ctx.book
        for k, a in list(book.open.items()):
            if a.alert_id == alert_id:
                done = book.set_status(alert_id, "resolved", ts_ms)
                book.open.pop(k, None)
                book.last_seen_ms.pop(k, None)
                ctx.alerts.append(done)

    def on_feedback(self, alert, label: str, until_ms: int | None) -> None:
        if alert.kind != "cost_spike":
            return
        skey = _series_key(alert.details.get("series", ""))
        r = self.rows.get(skey)
        if r is None and skey[0] == "key" and (skey[1], skey[-1]) in self.cold:
            r = self._row(skey)
        if r is None:
            return
        self.incidents.pop(r, None)
        self.bank.run_len[r] = 0
        now = int(self.cur_minute or 0)
        if label == "planned_activity":  # suppress, and keep the planned load out of the baseline
            self.suppress[r] = self.nolearn[r] = (until_ms // 60000) if until_ms else now + 240
        elif label == "not_anomaly":  # this level is normal: learn it as is, no repeat today
            self.accept[r] = now + 180
            self.suppress[r] = now + 180


def _series_key(text: str) -> tuple:
    parts = tuple(None if p == "None" else p for p in text.split("|"))
    return parts
