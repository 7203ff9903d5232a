"""Finance dashboard "Spend": where the money goes, against forecast and budget.

Tables: spend_minute_by_project and usage_minute (0001 rollups), alerts (kind cost_spike),
spend_forecast, spend_projection and budget_status (0004, cost detection).

>>> build("keywatch")["uid"]
'keywatch-spend'
"""

from __future__ import annotations

from keywatch.dashboards.panels import Grid, ch_panel, dashboard, flt
from keywatch.dashboards.soc import variables

UID = "keywatch-spend"
F_PROJ = flt("provider", "project")
F_KEY = flt("provider", "project", "key_id")


def _spend_by(column: str, table: str, where: str) -> str:
    return f"""
SELECT $__timeInterval(minute) AS time, {column}, sum(cost_usd) AS cost_usd
FROM ${{db}}.{table}
WHERE $__timeFilter(minute) AND {where}
GROUP BY time, {column}
ORDER BY time"""


def build(db: str) -> dict:
    g = Grid()
    g.row("Spend")
    g.place(ch_panel("Spend in range", f"""
SELECT round(sum(cost_usd), 2) AS spend_usd FROM ${{db}}.spend_minute_by_project
WHERE $__timeFilter(minute) AND {F_PROJ}""", kind="stat", unit="currencyUSD"), w=6, h=5)
    g.place(ch_panel("Projected month-end", PROJECTION_SQL, kind="stat", unit="currencyUSD",
                     description="The cost detector's end-of-month projection (spend so far + forecast), at the range's end.",
                     options={"reduceOptions": {"values": False, "calcs": ["lastNotNull"],
                                                "fields": "/^(month_to_date_usd|projected_month_end_usd)$/"}}), w=6, h=5)
    g.place(ch_panel("Cost spikes in range", f"""
SELECT count() AS spikes, round(sum(cost_impact_usd), 2) AS impact_usd
FROM ${{db}}.alerts FINAL
WHERE kind = 'cost_spike' AND $__timeFilter(detected_at) AND {flt('provider', "ifNull(project, '')", "ifNull(key_id, '')")}""",
        kind="stat", unit="currencyUSD"), w=6, h=5)
    g.place(ch_panel("Top model", f"""
SELECT model, round(sum(cost_usd), 2) AS cost_usd FROM ${{db}}.usage_minute
WHERE $__timeFilter(minute) AND {F_KEY}
GROUP BY model ORDER BY cost_usd DESC LIMIT 1""", kind="stat", unit="currencyUSD"), w=6, h=5)
    g.place(ch_panel("Spend by provider", _spend_by("provider", "spend_minute_by_project", F_PROJ),
                     unit="currencyUSD"), w=12, h=8)
    g.place(ch_panel("Spend by project", _spend_by("project", "spend_minute_by_project", F_PROJ),
                     unit="currencyUSD"), w=12, h=8)
    g.place(ch_panel("Spend by model", _spend_by("model", "usage_minute", F_KEY), unit="currencyUSD"), w=12, h=8)
    g.place(ch_panel("Top keys by spend", f"""
SELECT key_id, provider, project, round(sum(cost_usd), 2) AS cost_usd, sum(requests) AS requests,
       sum(input_tokens + output_tokens) AS tokens, sum(errors) AS errors
FROM ${{db}}.usage_minute
WHERE $__timeFilter(minute) AND {F_KEY}
GROUP BY key_id, provider, project ORDER BY cost_usd DESC LIMIT 50""", kind="table"), w=12, h=8)
    g.row("Forecast, spikes and budgets")
    g.place(ch_panel("Actual vs forecast band", FORECAST_SQL, unit="currencyUSD",
                     description="Actual spend per interval against the cost detector's band [expected, upper].",
                     fieldConfig={"defaults": {"custom": {"fillOpacity": 0}}, "overrides": [
                         {"matcher": {"id": "byName", "options": "upper"},
                          "properties": [{"id": "custom.fillBelowTo", "value": "expected"}, {"id": "custom.fillOpacity", "value": 20},
                                         {"id": "custom.lineWidth", "value": 0}]},
                         {"matcher": {"id": "byName", "options": "expected"},
                          "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}}]}]}), w=24, h=9)
    g.place(ch_panel("Cost spikes and root cause", f"""
SELECT detected_at, alert_id, provider, ifNull(project, '') AS project, ifNull(key_id, '') AS key_id,
       severity, round(cost_impact_usd, 2) AS cost_impact_usd, status,
       {ROOT_CAUSE_EXPR} AS root_cause,
       arrayStringConcat(reasons, '; ') AS reasons
FROM ${{db}}.alerts FINAL
WHERE kind = 'cost_spike' AND $__timeFilter(detected_at) AND {flt('provider', "ifNull(project, '')", "ifNull(key_id, '')")}
ORDER BY detected_at DESC LIMIT 200""", kind="table"), w=14, h=9)
    g.place(ch_panel("Budgets", BUDGETS_SQL, kind="table"), w=10, h=9)
    return dashboard(UID, "Spend", g, variables(db), tags=["finance", "cost"], refresh="1m", time_from="now-24h")


# --- tables owned by cost detection (migration 0004) --------------------------------------------
def _top(dim: str, label: str) -> str:
    path = f"details, 'root_cause', '{dim}', 1"
    return (f"if(JSONExtractString({path}, 'value') = '', '', concat('{label} ', JSONExtractString({path}, 'value'), ' ', "
            f"toString(round(JSONExtractFloat({path}, 'pct'))), '%'))")


# The cost detector's ranked root cause (details.root_cause.{keys,models,regions}[0]), one line.
ROOT_CAUSE_EXPR = ("arrayStringConcat(arrayFilter(x -> x != '', ["
                   + ", ".join(_top(d, lbl) for d, lbl in (("keys", "key"), ("models", "model"), ("regions", "region")))
                   + "]), ' · ')")

# Project-level rows exist for every project each minute (key rows are optional), so the band is
# summed from them; the band is [expected, upper] (the detector alerts above `upper`).
FORECAST_SQL = f"""
SELECT $__timeInterval(minute) AS time, sum(actual_usd) AS actual, sum(expected_usd) AS expected, sum(upper_usd) AS upper
FROM ${{db}}.spend_forecast
WHERE level = 'project' AND $__timeFilter(minute) AND {F_PROJ}
GROUP BY time ORDER BY time"""

# Latest projection per project at the range's end, from the cost detector (0004 spend_projection).
PROJECTION_SQL = f"""
SELECT round(sum(month_spent), 2) AS month_to_date_usd, round(sum(eom), 2) AS projected_month_end_usd,
       round(sum(eod), 2) AS projected_end_of_day_usd
FROM (
  SELECT provider, project, argMax(month_spent_usd, ts) AS month_spent, argMax(eom_projected_usd, ts) AS eom,
         argMax(eod_projected_usd, ts) AS eod
  FROM ${{db}}.spend_projection
  WHERE level = 'project' AND ts <= $__toTime AND ts >= toStartOfMonth($__toTime) AND {F_PROJ}
  GROUP BY provider, project
)"""

# Budgets are defined in the budgets file (not per provider/project columns): latest state each.
BUDGETS_SQL = """
SELECT budget_id, max(period_start) AS period_start, argMax(spent_usd, ts) AS spent_usd, argMax(amount_usd, ts) AS amount_usd,
       round(100 * spent_usd / greatest(amount_usd, 0.01), 1) AS used_pct, max(step_pct) AS last_step_pct, max(ts) AS last_crossed
FROM ${db}.budget_status
WHERE ts <= $__toTime
GROUP BY budget_id ORDER BY used_pct DESC"""
