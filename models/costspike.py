"""`cost_spike` detector: minute spend series per key, project, provider and model.

Usage events are summed per minute into series (`key`, `project`, `provider`, `model` levels).
When event time passes a minute, every series steps once in a `SeasonalBank` (score, then learn):
a run of `cost_spike_min_minutes` minutes above the upper band whose excess is at least
`cost_spike_min_usd` and `cost_spike_min_pct` % of expected raises a `cost_spike` (key level:
`key_id` set; project level: `key_id` null) with a ranked root cause. Project and provider
series also run the `UnivariateAnomalyScorer` (the detector benchmarked by `keywatch eval nab`; all
series in one `UnivariateBank`, the same values in one numpy step per minute); its calibrated
score is extra evidence on project findings (`details["anomaly_score"]`, score). Forecast rows feed
`spend_forecast`; projections feed `spend_projection`. Unknown models raise `unknown_model`.
Finding construction, explicit resolves and feedback live in `costspike_findings`; series rows
(routes, `spend_forecast` rows, idle expiry, snapshots) in `costspike_rows`; idle key rows,
packed out of the bank until needed, in `costspike_cold` (all three mixed in).

>>> from keywatch.models.events import UsageEvent
>>> from keywatch.models.core import DetectionCore
>>> det = CostSpikeDetector(min_usd=5, min_pct=50, warmup_min=60)
>>> core = DetectionCore([det])
>>> t0 = 1795622400000
>>> evs = [UsageEvent(event_id=f"e{m}", ts=t0 + m * 60000, provider="openai", key_id="k1", project="p",
...                   model="gpt-4o", cost_usd=1.0 if m < 600 or m > 605 else 20.0) for m in range(700)]
>>> alerts = core.process(evs).alerts
>>> [(a.kind, a.key_id, a.details["root_cause"]["keys"][0]["value"]) for a in alerts][:2]
[('cost_spike', 'k1', 'k1'), ('cost_spike', None, 'k1')]
"""

from __future__ import annotations

import numpy as np

from keywatch.models.alerts import Finding
from keywatch.models.core import Batch, Context
from keywatch.models.costspike_cold import ColdKeyRows, cold_rows
from keywatch.models.costspike_findings import (  # noqa: F401  (re-exported)
    REL_MIN_RPM, REL_MINUTES, REL_PEAK, REL_RATIO, RESOLVE_AFTER_MIN, SpikeFindings)
from keywatch.models.costspike_rows import LEVELS, RowMap, SeriesRows, as_tuple
from keywatch.models.forecast import SeasonalBank, TailCalibrator
from keywatch.models.projection import Projector
from keywatch.models.reqrate import RequestRates
from keywatch.models.rootcause import RootCause
from keywatch.models.univariate_bank import UnivariateBank

MAX_GAP_MIN = 14 * 1440  # longer silences are skipped, not stepped minute by minute
# Idle key rows are looked for every 10 minutes (every hour until session 21): a row idle for
# `cold_after_min` is packed within 10 more minutes, not within 60 (0.5–2 KB a row meanwhile).
COLD_SWEEP_MIN = 10


class CostSpikeDetector(SpikeFindings, SeriesRows, ColdKeyRows):
    name = "cost_spike"

    def __init__(self, min_usd: float = 5.0, min_pct: float = 50.0, k: float = 4.0, min_minutes: int = 2,
                 warmup_min: int = 360, key_rows: bool = False, idle_expire_min: int = 7 * 1440,
                 levels: tuple[str, ...] = LEVELS, cold_after_min: int = 60) -> None:
        self.min_usd, self.min_pct, self.min_minutes = min_usd, min_pct, min_minutes
        # Series levels this instance keeps (the streaming worker splits them: "key" in the
        # per-partition cores, the rest in its global core; see models/registry.py `build_core`).
        self.levels = tuple(lv for lv in LEVELS if lv in levels)
        self.key_level_rows, self.idle_expire_min = key_rows, idle_expire_min
        # Idle key rows are packed (models/costspike_cold.py), but when every key row is a
        # `spend_forecast` row each minute.
        self.cold_after_min = 0 if key_rows else cold_after_min
        self.cold = cold_rows()  # (provider, key_id) → packed rows (models/costspike_cold.py)
        self.cold_skips: list[tuple[int, int]] = []
        self.bank = SeasonalBank(k=k, warmup_units=warmup_min)
        self.cal = TailCalibrator(long_n=1440.0, short_n=2.0)
        self.rows: dict[tuple, int] = {}
        self.level = np.zeros(16, np.int8)  # row → LEVELS index
        self.key_rows: dict[tuple[str, str], int | tuple[int, ...]] = {}  # (provider, key_id) → key-level rows (`as_tuple`)
        self.series: dict[int, tuple] = {}
        self.cur_minute: int | None = None
        self.cur: dict[int, float] = {}
        self.rc = RootCause()
        self.proj = Projector()
        self.incidents: dict[int, tuple[str, int]] = {}  # row → (alert_id, minutes normal since run)
        self.suppress: dict[int, int] = {}  # row → until minute (analyst feedback)
        self.accept: dict[int, int] = {}  # row → until minute: learn raw values (not_anomaly)
        self.nolearn: dict[int, int] = {}  # row → until minute: planned activity stays out of the baseline
        self.unknown: dict[tuple[str, str], int] = {}
        self.last_spike: dict | None = None
        self.rq = RequestRates()  # requests per row: run size and busiest-hour rate (relative spikes)
        # Project/provider rows run a `UnivariateAnomalyScorer` each, all in one bank (its own
        # rows: key rows never need one); `uni_row`: series row → bank row, −1 until first used.
        self.uni = UnivariateBank()
        self.uni_row = RowMap()
        self._routes: dict | None = None  # event → series rows cache (not pickled)
        self._routes_levels: tuple | None = None
        self._tags: dict | None = None  # row → `spend_forecast` row template (a cache, not pickled)
        self._lvmask: tuple | None = None  # `_level_masks` (a cache, not pickled)

    @classmethod
    def from_settings(cls, s, levels: tuple[str, ...] = LEVELS) -> "CostSpikeDetector":
        return cls(s.cost_spike_min_usd, s.cost_spike_min_pct, s.cost_spike_band_k, s.cost_spike_min_minutes,
                   int(s.cost_spike_warmup_s // 60), s.cost_forecast_key_rows, int(s.key_idle_expire_s // 60),
                   levels=levels, cold_after_min=-(-int(s.key_cold_after_s) // 60))

    def process(self, batch: Batch, ctx: Context) -> None:
        # Cached routes instead of four series tuples and dict lookups per event: one per
        # (provider, project, key) — key None without the key level — and one per (provider,
        # model) for the model level. Per key, not per key and model: a route costs ≈ 0.3 KB.
        # The caches are dropped whenever rows are freed or levels change.
        routes = self._routes
        if routes is None or self._routes_levels is not self.levels:
            routes = self._routes = ({}, {})
            self._routes_levels = self.levels
        routes, mroutes = routes
        by_key, by_model = "key" in self.levels, "model" in self.levels
        cur, rc_minute = self.cur, self.rc.minute
        rc_per = None  # this minute's root-cause spend (`RootCause.add` inlined), got at its first event
        rq_cur = self.rq.cur
        report_unknown = "project" in self.levels  # reported once, by the project level
        cur_minute = self.cur_minute
        for e in batch.usage:
            ts = e.ts_ms
            m = ts // 60000
            if cur_minute is None:
                cur_minute = self.cur_minute = m
            elif m > cur_minute:
                self._advance(m, ts, ctx)
                cur_minute = m
                cur, rq_cur, rc_per = self.cur, self.rq.cur, None
                if self._routes is None:  # rows were freed
                    self._routes = (routes, mroutes) = ({}, {})
            usd = e.cost_usd or 0.0
            if report_unknown and e.price_source == "unknown":
                self._unknown(e, ctx)
            rk = (e.provider, e.project, e.key_id if by_key else None)
            rt = routes.get(rk)
            if rt is None:
                rt = routes[rk] = self._route(rk)
            for r in rt[0]:
                cur[r] = cur.get(r, 0.0) + usd
            if by_model:
                mk = (e.provider, e.model)
                r = mroutes.get(mk)
                if r is None:
                    r = mroutes[mk] = self._row(("model", *mk))
                cur[r] = cur.get(r, 0.0) + usd
            if rc_per is None:
                rc_per = rc_minute(cur_minute)
            g = rc_per.get(rt[2])
            if g is None:
                g = rc_per[rt[2]] = {}
            c = (e.key_id, e.model, e.region)
            g[c] = g.get(c, 0.0) + usd
            kr = rt[1]
            if kr >= 0:
                rq_cur[kr] = rq_cur.get(kr, 0.0) + e.requests

    def _unknown(self, e, ctx: Context) -> None:
        k = (e.provider, e.model)
        n = self.unknown[k] = self.unknown.get(k, 0) + 1
        if n == 1:
            ctx.report(Finding(kind="unknown_model", provider=e.provider, key_id=None, project=e.project,
                               ts_ms=e.ts_ms, started_at_ms=e.ts_ms, score=0.3, severity="low", incident_key=e.model[:128],
                               reasons=[f"model {e.model!r} is not in the price table: its spend is counted as $0 (price_source=unknown)"],
                               details={"model": e.model}))

    def _advance(self, m: int, ts_ms: int, ctx: Context) -> None:
        """Close minutes cur_minute … m−1 (empty ones are zero spend), then open minute m.

        A minute's findings are stamped with the minute's end, not with the event that happened
        to close it: that event depends on which keys a core sees (one partition's, a worker's,
        or all of them in replay) and on how partitions interleave, and the stamp is part of the
        alert id. The end of the minute is the same everywhere.
        """
        last = self.cur_minute
        self._close(last, (last + 1) * 60000, ctx)
        gap_end = m if m - last <= MAX_GAP_MIN else last + 1
        for t in range(last + 1, gap_end):
            self._close(t, (t + 1) * 60000, ctx)
        if gap_end != m:
            self.bank.run_len[:] = 0
            if self.cold:
                self.cold_skips.append((gap_end, m))
        if m // 60 != last // 60:  # each hour the route cache starts again: idle keys' routes go
            self._routes = None
        self.cur_minute = m

    def _close(self, t: int, ts_ms: int, ctx: Context) -> None:
        # Runs every minute for every series: numpy per-call overhead is most of its cost, so
        # the all-rows-learn case passes None masks, and levels absent from this instance (a
        # partition core has key rows only) skip their work altogether.
        # Keys other detectors have an incident open on at the end of minute t (asked in event
        # time: the book may already hold findings from later in this batch) stop learning.
        open_keys = ctx.book.open_keys_at(t * 60000 + 59999)
        if self.cold and open_keys:
            self._wake_incidents(t, open_keys)
        bank, n = self.bank, self.bank.n
        x = np.zeros(n)
        if self.cur:
            x[np.fromiter(self.cur.keys(), np.int64, len(self.cur))] = np.fromiter(self.cur.values(), np.float64, len(self.cur))
        self.cur = {}
        learn, accept = self._learn_masks(t, n, open_keys)
        exp, upper, spread = bank.step(t, x, learn, accept)
        if self.rq.cur or not self.rq.idle:
            self.rq.step(t, n, bank.run_len[:n] > 0, learn)
        cands = self._candidates(x, exp, upper)
        calib = self.cal.step(np.maximum(0.0, x - exp) / np.maximum(spread, 1e-6), cands)  # scores of cands
        active = x != 0
        bank.last_active[:n][active] = t
        shared, lv1 = self._level_masks(n)  # project/provider rows, project rows (None: none)
        live = active | (exp > 1e-6) if shared is not None or self.key_level_rows else None
        if shared is not None:
            sel = np.nonzero(shared & live)[0]
            if len(sel):
                ur = self.uni_row.a[sel]
                if np.count_nonzero(ur < 0):  # a series' first value: its scorer starts
                    for k in np.nonzero(ur < 0)[0].tolist():
                        ur[k] = self.uni_row[sel[k]] = self.uni.add()
                self.uni.step(ur, t * 60000, x[sel], None if learn is None else learn[sel], scores=False)  # findings read `recent_peak`
            grp = active & lv1 if learn is None else active & learn & lv1
            group_of = self._lvmask[3]  # project row → its root-cause group
            self.rc.learn_many(t, [group_of[r] for r in np.nonzero(grp)[0].tolist()])
        elif "project" not in self.levels:
            # A partition core has no project rows to learn root-cause shares from, so its
            # key-level spikes would count a key's whole spend as excess. It learns each group
            # its key rows show spend in — what one core's project rows learn, except while a
            # project-level spike (which only the worker-wide core knows of) stops those.
            series = self.series
            self.rc.learn_many(t, list(dict.fromkeys(series[r][1:3] for r in np.nonzero(active)[0].tolist() if r in series)))
        self._findings(t, ts_ms, cands, calib, upper, ctx)
        if ctx.want_rows:  # False: the caller drops table rows (`keywatch replay`), build none
            if self.key_level_rows:
                self._emit(t, x, exp, upper, ctx, bank.used[:n] & live)
            elif shared is not None:
                self._emit(t, x, exp, upper, ctx, shared & live)
        if shared is not None:
            # Without project/provider rows it would add zeros and emit nothing (it resets its
            # day and month totals at its next call all the same).
            self.proj.observe(self, t, x, ctx, shared & bank.used[:n])
        if t % 1440 == 0:
            self._expire_idle(t)
        if t % COLD_SWEEP_MIN == COLD_SWEEP_MIN - 1 and self.cold_after_min and "key" in self.levels:
            self._pack_idle(t, ctx)

    def _learn_masks(self, t: int, n: int, open_keys: list) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(learn, accept) of minute t: rows that learn (None: all) and rows that learn their raw
        value (None: none); `open_keys`: keys with another detector's incident open (they do not
        learn either). Expired `nolearn`/`accept` entries are dropped."""
        off = list(self.incidents)
        for k in open_keys:
            off.extend(as_tuple(self.key_rows.get((k[1], k[2]), ())))
        for r, until in list(self.nolearn.items()):
            if until > t:
                off.append(r)
            else:
                del self.nolearn[r]
        on = []
        for r, until in list(self.accept.items()):
            if until > t:
                on.append(r)
            else:
                del self.accept[r]
        if not off and not on:
            return None, None
        learn = np.ones(n, bool)
        learn[off] = False
        accept = None
        if on:
            accept = np.zeros(n, bool)
            accept[on] = True
            learn[on] = True
        return learn, accept

    def _level_masks(self, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(project or provider rows, project rows) of rows 0..n-1, None when there are none;
        cached until a row is (re)assigned or freed (`_row`, `_expire_idle` drop the cache). The
        cache also holds each project row's root-cause group, (provider, project), by row."""
        c = self._lvmask
        if c is None or c[0] != n:
            lv = self.level[:n]
            lv1 = lv == 1
            shared = lv1 | (lv == 2)
            if shared.any():
                series = self.series
                groups = [series[r][1:3] if is1 and r in series else None for r, is1 in enumerate(lv1.tolist())]
                c = self._lvmask = (n, shared, lv1, groups)
            else:
                c = self._lvmask = (n, None, None, None)
        return c[1], c[2]

    def describe(self) -> dict:
        return {"series": len(self.rows), "packed_key_series": self.packed_count(),
                "bank_bytes": self.bank.nbytes(), "open_spikes": len(self.incidents),
                "unknown_models": [{"provider": p, "model": m, "events": n} for (p, m), n in self.unknown.items()],
                "projections": self.proj.latest()}

