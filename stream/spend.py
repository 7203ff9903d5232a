"""Spend endpoints for finance: projections and budget status, live from the worker or from ClickHouse.

`GET /spend/projection` — projected end-of-day and end-of-month spend per project and provider:
from the live cost-spike detectors' `describe()` (summed across detection cores, since each
core sees a disjoint share of the events; in the worker only the global core projects), else the latest `spend_projection` rows.
`GET /budgets` — each configured budget's spend in its current period (the UTC day or month
of the latest usage event: event time, so replays work), % used, last step alerted; spend comes
from the live budget detectors when the worker runs, else from `usage_events`.

>>> merge_projections([[{"ts": 60, "level": "project", "provider": "openai", "project": "p", "day_spent_usd": 1.0,
...   "eod_projected_usd": 2.0, "month_spent_usd": 3.0, "eom_projected_usd": 4.0}]] * 2)[0]["eom_projected_usd"]
8.0
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from keywatch.models.events import format_ts
from keywatch.stream.queries import QueryError, ms

USD = ("day_spent_usd", "eod_projected_usd", "month_spent_usd", "eom_projected_usd")
LEVELS = ("project", "provider")


def detectors(core: Any, name: str) -> list[Any]:
    """Detector `name` of every detection core behind `core` (one core, or a per-partition facade)."""
    cores = core.all_cores() if hasattr(core, "all_cores") else getattr(core, "cores", None)
    if isinstance(cores, Mapping):
        cores = list(cores.values())
    found = []
    for c in cores if cores is not None else [core]:
        det = c.detector(name) if hasattr(c, "detector") else None
        if det is not None:
            found.append(det)
    return found


def projection_filters(params: Mapping[str, str]) -> dict[str, str]:
    f = {k: str(params[k]) for k in ("level", "provider", "project") if params.get(k)}
    if f.get("level") and f["level"] not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}")
    return f


def _finish(rows: Iterable[dict], f: Mapping[str, str]) -> list[dict]:
    out = [r for r in rows if all(r.get(k) == v for k, v in f.items())]
    for r in out:
        r["at"] = format_ts(int(r["ts"]) * 1000)
    return sorted(out, key=lambda r: (r["level"], -r["eom_projected_usd"], r["provider"], r["project"]))


def merge_projections(per_core: Iterable[list[dict]]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for rows in per_core:
        for r in rows:
            k = (r["level"], r["provider"], r.get("project") or "")
            m = merged.get(k)
            if m is None:
                merged[k] = {**r, "project": k[2]}
            else:
                m["ts"] = max(m["ts"], r["ts"])
                for c in USD:
                    m[c] = round(m[c] + r[c], 6)
    return list(merged.values())


def live_projections(core: Any, f: Mapping[str, str]) -> list[dict] | None:
    """From the detectors' `describe()["projections"]` (call under the runtime's core lock); None if
    no core has projected yet (fresh worker: the stored rows are better than nothing)."""
    rows = merge_projections(d.describe().get("projections") or [] for d in detectors(core, "cost_spike"))
    return _finish(rows, f) if rows else None


def stored_projections(client, db: str, f: Mapping[str, str]) -> list[dict]:
    """The latest `spend_projection` row per level, provider and project."""
    where = " AND ".join(f"{k} = {{{k}:String}}" for k in f) or "1"
    rows = client.query(
        f"""SELECT level, provider, project, max(ts), argMax(day_spent_usd, ts), argMax(eod_projected_usd, ts),
                   argMax(month_spent_usd, ts), argMax(eom_projected_usd, ts)
            FROM {db}.spend_projection WHERE {where} GROUP BY level, provider, project LIMIT 1000""",
        parameters=dict(f)).result_rows
    return _finish(({"level": r[0], "provider": r[1], "project": r[2], "ts": ms(r[3]) // 1000,
                     **{c: round(float(v), 6) for c, v in zip(USD, r[4:])}} for r in rows), f)


def projection_body(rows: list[dict], source: str) -> dict:
    totals = {c: round(sum(r[c] for r in rows if r["level"] == "provider"), 2) for c in USD}
    return {"source": source, "projections": rows, "count": len(rows), "totals": totals}


def budget_config(settings) -> list[dict]:
    """The configured budgets, normalised and validated by the budget detector itself."""
    from keywatch.models.budgets import BudgetDetector

    return BudgetDetector.from_settings(settings).budgets


def live_budget_spend(core: Any) -> dict[str, float] | None:
    """budget id → spend in its period, summed across cores; None without a budget detector."""
    dets = detectors(core, "budget")
    if not dets:
        return None
    spent: dict[str, float] = {}
    for d in dets:
        for bid, info in d.describe().items():
            spent[bid] = spent.get(bid, 0.0) + float(info.get("spent_usd", 0.0))
    return spent


def budget_status(client, db: str, budgets: list[dict], live: dict[str, float] | None = None) -> list[dict]:
    """One row per budget: period, spend, % used, last step alerted (from `budget_status`)."""
    from keywatch.models.budgets import period_bounds

    latest = client.query(f"SELECT max(ts) FROM {db}.usage_events").result_rows
    anchor = ms(latest[0][0]) if latest and latest[0][0] and ms(latest[0][0]) > 0 else None
    out = []
    for b in budgets:
        if anchor is None:
            start = end = None
            spent, step = 0.0, None
        else:
            start, end = period_bounds(anchor, b["period"])
            p = {"s": start, "e": end, "v": b["key_id"] or b["project"], "pr": b["provider"] or ""}
            col = "key_id" if b["key_id"] else "project"
            spent = float(client.query(
                f"""SELECT sum(cost_usd) FROM {db}.usage_events
                    WHERE ts >= fromUnixTimestamp64Milli({{s:Int64}}, 'UTC') AND ts < fromUnixTimestamp64Milli({{e:Int64}}, 'UTC')
                      AND {col} = {{v:String}} AND ({{pr:String}} = '' OR provider = {{pr:String}})""",
                parameters=p).result_rows[0][0] or 0.0)
            step = client.query(
                f"""SELECT max(step_pct) FROM {db}.budget_status WHERE budget_id = {{id:String}}
                    AND period_start = toDateTime(intDiv({{s:Int64}}, 1000), 'UTC')""",
                parameters={"id": b["id"], "s": start}).result_rows[0][0]
        source = "clickhouse"
        if live is not None and b["id"] in live:
            spent, source = live[b["id"]], "core"
        pct = 100 * spent / b["amount"]
        steps = [s for s in b["steps"] if s <= pct]
        out.append({"budget_id": b["id"], "scope": "key" if b["key_id"] else "project", "key_id": b["key_id"],
                    "project": b["project"], "provider": b["provider"], "period": b["period"],
                    "period_start": format_ts(start) if start is not None else None,
                    "period_end": format_ts(end) if end is not None else None,
                    "amount_usd": b["amount"], "spent_usd": round(spent, 4), "used_pct": round(pct, 1),
                    "remaining_usd": round(b["amount"] - spent, 4), "steps_pct": b["steps"],
                    "step_crossed_pct": max(steps) if steps else None,
                    "last_step_alerted_pct": float(step) if step else None,
                    "state": "over" if pct >= 100 else "warning" if steps else "ok", "source": source})
    return sorted(out, key=lambda r: -r["used_pct"])
