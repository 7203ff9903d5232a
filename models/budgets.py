"""`budget` detector: spend per key or project against budgets with stepped thresholds.

Budgets come from a YAML file (`KEYWATCH_BUDGETS_FILE`)::

    thresholds: [50, 80, 100]          # default steps, % of the amount
    budgets:
      - {project: research, period: month, amount_usd: 2000}
      - {key_id: key_abc, provider: openai, period: day, amount_usd: 50, thresholds: [80, 100]}

Each step alerts once per period (UTC day or month): the incident key is budget/period/step.

>>> from keywatch.models.events import UsageEvent
>>> from keywatch.models.core import DetectionCore
>>> det = BudgetDetector([{"project": "p", "period": "day", "amount_usd": 10}])
>>> core = DetectionCore([det])
>>> evs = [UsageEvent(event_id=f"e{i}", ts=1795622400000 + i * 1000, provider="openai", key_id="k",
...                   project="p", model="m", cost_usd=2.0) for i in range(8)]
>>> [a.details["step_pct"] for a in core.process(evs).alerts]
[50, 80, 100]
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone
from pathlib import Path

import yaml

from keywatch.models.alerts import Finding
from keywatch.models.core import Batch, Context
from keywatch.models.events import format_ts


def period_bounds(ts_ms: int, period: str) -> tuple[int, int]:
    """(start, end) in epoch ms of the UTC day or month holding `ts_ms`.

    >>> period_bounds(1795622400123, "day")
    (1795564800000, 1795651200000)
    """
    if period == "day":
        s = ts_ms - ts_ms % 86_400_000
        return s, s + 86_400_000
    d = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    s = int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    return s, s + calendar.monthrange(d.year, d.month)[1] * 86_400_000


class BudgetDetector:
    name = "budget"

    def __init__(self, budgets: list[dict], thresholds=(50, 80, 100)) -> None:
        self.budgets = []
        for i, b in enumerate(budgets):
            if not (b.get("project") or b.get("key_id")) or float(b.get("amount_usd", 0)) <= 0:
                raise ValueError(f"budget #{i + 1}: needs project or key_id and a positive amount_usd")
            if b.get("period", "month") not in ("day", "month"):
                raise ValueError(f"budget #{i + 1}: period must be day or month")
            self.budgets.append({
                "id": b.get("id") or f"{'key:' + b['key_id'] if b.get('key_id') else 'project:' + b['project']}/{b.get('period', 'month')}",
                "project": b.get("project"), "key_id": b.get("key_id"), "provider": b.get("provider"),
                "period": b.get("period", "month"), "amount": float(b["amount_usd"]),
                "steps": sorted(float(t) for t in b.get("thresholds", thresholds))})
        self.by_key = {}
        self.by_project = {}
        for b in self.budgets:
            (self.by_key.setdefault(b["key_id"], []) if b["key_id"] else self.by_project.setdefault(b["project"], [])).append(b)
        self.state: dict[str, list] = {}  # budget id → [period_start, period_end, spent, next step index]

    @classmethod
    def from_settings(cls, s) -> "BudgetDetector":
        doc = yaml.safe_load(Path(s.budgets_file).read_text()) if s.budgets_file else {}
        doc = doc or {}
        default = [float(x) for x in str(s.budget_thresholds_pct).split(",") if x.strip()]
        return cls(doc.get("budgets") or [], doc.get("thresholds") or default)

    def process(self, batch: Batch, ctx: Context) -> None:
        if not self.budgets:
            return
        for e in batch.usage:
            for b in self.by_key.get(e.key_id, []) + self.by_project.get(e.project, []):
                if b["provider"] and b["provider"] != e.provider:
                    continue
                self._add(b, e, ctx)

    def _add(self, b: dict, e, ctx: Context) -> None:
        st = self.state.get(b["id"])
        if st is None or e.ts_ms >= st[1]:
            s, end = period_bounds(e.ts_ms, b["period"])
            st = self.state[b["id"]] = [s, end, 0.0, 0]
        st[2] += e.cost_usd or 0.0
        pct = 100 * st[2] / b["amount"]
        crossed = None
        while st[3] < len(b["steps"]) and pct >= b["steps"][st[3]]:
            crossed = b["steps"][st[3]]
            st[3] += 1
        if crossed is None:
            return
        # Only the highest step crossed by this event alerts (a jump from 40 % to 120 % is one alert).
        elapsed = max(1, e.ts_ms - st[0]) / (st[1] - st[0])
        step = int(crossed) if crossed == int(crossed) else crossed
        score = min(1.0, 0.3 + 0.6 * crossed / 100)
        ctx.report(Finding(
            kind="budget", provider=e.provider, key_id=b["key_id"], project=b["project"] or e.project,
            ts_ms=e.ts_ms, started_at_ms=st[0], score=score, cost_impact_usd=max(0.0, st[2] - b["amount"]),
            severity="high" if crossed >= 100 else "medium" if crossed >= 80 else "low",
            incident_key=f"{b['id']}/{format_ts(st[0])[:10]}/{step}",
            reasons=[f"{b['period']} budget {b['id']}: ${st[2]:.2f} of ${b['amount']:.2f} ({pct:.0f}%) "
                     f"crossed the {step}% step with {100 * elapsed:.0f}% of the {b['period']} elapsed"],
            details={"budget_id": b["id"], "step_pct": step, "spent_usd": round(st[2], 4), "amount_usd": b["amount"],
                     "period": b["period"], "period_start": format_ts(st[0]),
                     "projected_usd": round(st[2] / elapsed, 2)}))
        ctx.emit("budget_status", {"ts": e.ts_ms // 1000, "budget_id": b["id"], "period_start": st[0] // 1000,
                                   "spent_usd": st[2], "amount_usd": b["amount"], "step_pct": float(crossed)})

    def describe(self) -> dict:
        return {b["id"]: {"amount_usd": b["amount"], "spent_usd": round(self.state.get(b["id"], [0, 0, 0.0])[2], 4)}
                for b in self.budgets}
