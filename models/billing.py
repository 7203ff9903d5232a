"""`billing_divergence` detector: provider-billed cost vs keywatch's computed spend.

Computed spend is kept per (provider, project, UTC day) for the last 62 days. A `billing`
event covers [ts, period_end) (one day when `period_end` is absent); its amount is compared
with the computed spend of the days it covers (its project, or the whole provider when it
names none). A gap above `billing_divergence_pct` % and `billing_divergence_min_usd` raises
`billing_divergence`: billed > computed means usage keywatch does not see (or prices too low),
billed < computed means stale prices or credits. Every comparison is a `billing_reconciliation` row.

>>> from keywatch.models.events import UsageEvent, BillingEvent
>>> from keywatch.models.core import DetectionCore
>>> core = DetectionCore([BillingDetector(pct=10, min_usd=5)])
>>> day = 1795564800000
>>> use = [UsageEvent(event_id=f"u{i}", ts=day + i * 60000, provider="openai", key_id="k", project="p",
...                   model="m", cost_usd=1.0) for i in range(50)]
>>> bill = BillingEvent(event_id="b1", ts=day, provider="openai", project="p", amount_usd=80.0)
>>> _ = core.process(use)                          # the bill arrives after the day's usage
>>> a = core.process([bill]).alerts[0]; a.kind, a.details["computed_usd"], a.details["billed_usd"]
('billing_divergence', 50.0, 80.0)
"""

from __future__ import annotations

from keywatch.models.alerts import Finding
from keywatch.models.core import Batch, Context
from keywatch.models.events import format_ts

DAY_MS = 86_400_000
KEEP_DAYS = 62


class BillingDetector:
    name = "billing"

    def __init__(self, pct: float = 10.0, min_usd: float = 5.0) -> None:
        self.pct, self.min_usd = pct, min_usd
        self.spend: dict[tuple[str, str | None, int], float] = {}  # (provider, project, day) → $
        self.last_day = 0
        self.checked = 0
        self.now = 0  # event-time clock: the highest event time seen

    @classmethod
    def from_settings(cls, s) -> "BillingDetector":
        return cls(s.billing_divergence_pct, s.billing_divergence_min_usd)

    def process(self, batch: Batch, ctx: Context) -> None:
        # Billing records are judged at their place in event time, against the usage seen up to
        # then (not against the whole batch), so the outcome does not depend on batch cuts.
        spend = self.spend
        get = spend.get
        bills = batch.billing
        bi, nb = 0, len(bills)
        next_bill = bills[0].ts_ms if nb else None
        now, last_day = self.now, self.last_day  # kept in locals; `_check` sees `self.now`
        for e in batch.usage:
            ts = e.ts_ms
            if next_bill is not None and next_bill < ts:
                self.now = now
                while bi < nb and bills[bi].ts_ms < ts:
                    self._check(bills[bi], ctx)
                    bi += 1
                now = self.now
                next_bill = bills[bi].ts_ms if bi < nb else None
            if ts > now:
                now = ts
            day = ts // DAY_MS
            k = (e.provider, e.project, day)
            spend[k] = get(k, 0.0) + (e.cost_usd or 0.0)
            if day > last_day:
                last_day = day
                for k in [k for k in spend if k[2] < day - KEEP_DAYS]:
                    del spend[k]
        self.now, self.last_day = now, last_day
        while bi < nb:
            self._check(bills[bi], ctx)
            bi += 1

    def __setstate__(self, state: dict) -> None:  # snapshots from before the event-time clock
        self.__dict__.update(state)
        self.__dict__.setdefault("now", 0)

    def computed(self, provider: str, project: str | None, first_day: int, last_day: int) -> float:
        return sum(v for (p, proj, d), v in self.spend.items()
                   if p == provider and first_day <= d <= last_day and (project is None or proj == project))

    def _check(self, b, ctx: Context) -> None:
        if b.ts_ms > self.now:
            self.now = b.ts_ms
        end = b.period_end_ms or (b.ts_ms + DAY_MS)
        d0, d1 = b.ts_ms // DAY_MS, (max(end, b.ts_ms + 1) - 1) // DAY_MS
        computed = self.computed(b.provider, b.project, d0, d1)
        billed = float(b.amount_usd)
        diff = billed - computed
        rel = 100 * abs(diff) / max(abs(billed), abs(computed), 1e-9)
        self.checked += 1
        ctx.emit("billing_reconciliation", {
            "day": d0 * 86400, "period_end": end // 1000, "provider": b.provider, "project": b.project or "",
            "billed_usd": billed, "computed_usd": computed, "diff_usd": diff, "diff_pct": rel, "event_id": b.event_id})
        if abs(diff) < self.min_usd or rel < self.pct:
            return
        why = ("usage keywatch does not see (a missing source or an unknown key), or prices below the provider's"
               if diff > 0 else "stale or too-high prices, credits or discounts not in the price table")
        ctx.report(Finding(
            kind="billing_divergence", provider=b.provider, key_id=None, project=b.project, ts_ms=self.now,
            started_at_ms=b.ts_ms, score=min(1.0, 0.3 + rel / 200), cost_impact_usd=max(0.0, diff),
            severity="high" if rel >= 50 else "medium", incident_key=f"{format_ts(b.ts_ms)[:10]}/{b.line_item or ''}",
            reasons=[f"billed ${billed:.2f} vs computed ${computed:.2f} for {format_ts(b.ts_ms)[:10]}"
                     f"{'..' + format_ts(end - 1)[:10] if d1 > d0 else ''} ({'+' if diff > 0 else '-'}{rel:.0f}%): {why}"],
            details={"billed_usd": billed, "computed_usd": round(computed, 4), "diff_usd": round(diff, 4),
                     "diff_pct": round(rel, 1), "period_start": format_ts(b.ts_ms), "period_end": format_ts(end),
                     "scope": b.scope, "line_item": b.line_item}))
