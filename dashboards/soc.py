"""SOC dashboard "Key theft — live": what an analyst watches while a key is being abused.

Tables: alerts (0001), scores (0001), usage_events (0001), audit_events (0001),
revocations (0005). Every query filters on the provider/project/key variables.

>>> d = build("keywatch")
>>> d["uid"], len([p for p in d["panels"] if p["type"] != "row"]) >= 8
('keywatch-soc', True)
"""

from __future__ import annotations

from keywatch.dashboards.panels import Grid, ch_panel, constant_var, dashboard, flt, geomap_options, query_var

UID = "keywatch-soc"

# A value is "new" for a key when it was not seen in this many days before the time range.
LOOKBACK_DAYS = 30

_SEVERITY_ORDER = "indexOf(['critical','high','medium','low'], severity)"
_ALERT_FLT = flt("provider", "ifNull(project, '')", "ifNull(key_id, '')")


def variables(db: str) -> list[dict]:
    return [
        constant_var("db", db, "ClickHouse database"),
        query_var("provider", "Provider", "SELECT DISTINCT provider FROM ${db}.usage_minute ORDER BY provider"),
        query_var("project", "Project",
                  f"SELECT DISTINCT project FROM ${{db}}.usage_minute WHERE {flt('provider')} ORDER BY project"),
        query_var("key", "Key",
                  f"SELECT DISTINCT key_id FROM ${{db}}.usage_minute WHERE {flt('provider', 'project')} ORDER BY key_id"),
    ]


def _new_values_sql(expr: str, dimension: str) -> str:
    # First sighting per (key, value) over the lookback; keep those first seen inside the range.
    return f"""
SELECT key_id, '{dimension}' AS dimension, {expr} AS value, min(ts) AS first_seen,
       count() AS events, sum(requests) AS requests, round(sum(cost_usd), 4) AS cost_usd
FROM ${{db}}.usage_events
WHERE ts >= $__fromTime - INTERVAL {LOOKBACK_DAYS} DAY AND ts <= $__toTime
  AND {flt('provider', 'project', 'key_id')} AND {expr} != ''
GROUP BY key_id, value
HAVING first_seen >= $__fromTime"""


# /24 for IPv4, /48 for IPv6: a "network" rather than a single address (NAT pools, DHCP churn).
NETWORK_EXPR = ("multiIf(isIPv4String(source_ip), IPv4NumToStringClassC(toIPv4OrZero(source_ip)), "
                "isIPv6String(source_ip), cutIPv6(toIPv6OrZero(source_ip), 10, 0), '')")


def build(db: str) -> dict:
    g = Grid()
    g.row("Alerts")
    g.place(ch_panel("Open alerts by severity", f"""
SELECT severity, count() AS alerts
FROM ${{db}}.alerts FINAL
WHERE status != 'resolved' AND {_ALERT_FLT}
GROUP BY severity ORDER BY {_SEVERITY_ORDER}""", kind="bargauge",
        description="Open or acknowledged incidents (latest alert version), all kinds.",
        options={"orientation": "horizontal", "displayMode": "basic",
                 "reduceOptions": {"values": True, "calcs": [], "fields": "/^alerts$/"}}), w=8, h=7)
    g.place(ch_panel("Open alerts", f"""
SELECT detected_at, alert_id, kind, provider, ifNull(key_id, '') AS key_id, severity, score,
       round(cost_impact_usd, 2) AS cost_impact_usd, status, arrayStringConcat(reasons, '; ') AS reasons
FROM ${{db}}.alerts FINAL
WHERE status != 'resolved' AND {_ALERT_FLT}
ORDER BY {_SEVERITY_ORDER}, detected_at DESC
LIMIT 200""", kind="table", description="Newest first within severity; reasons are the detector's evidence."),
        w=16, h=7)
    g.row("Risk")
    g.place(ch_panel("Risk score per key", f"""
SELECT $__timeInterval(ts) AS time, key_id, max(score) AS risk
FROM ${{db}}.scores
WHERE $__timeFilter(ts) AND {flt('provider', 'project', 'key_id')}
GROUP BY time, key_id
ORDER BY time""", description="Highest detector score per key and interval (0 normal … 1 certain abuse).",
        fieldConfig={"defaults": {"min": 0, "max": 1, "unit": "percentunit"}, "overrides": []}), w=16, h=8)
    g.place(ch_panel("Source countries", f"""
SELECT country, sum(requests) AS requests, uniqExact(key_id) AS keys, round(sum(cost_usd), 2) AS cost_usd
FROM ${{db}}.usage_events
WHERE $__timeFilter(ts) AND {flt('provider', 'project', 'key_id')} AND country != ''
GROUP BY country ORDER BY requests DESC""", kind="geomap", options=geomap_options("country", "requests")),
        w=8, h=8)
    g.row("New behaviour per key")
    g.place(ch_panel("New networks, countries and user agents", " UNION ALL ".join([
        _new_values_sql(NETWORK_EXPR, "network"), _new_values_sql("country", "country"),
        _new_values_sql("user_agent", "user_agent")]) + "\nORDER BY first_seen DESC LIMIT 500",
        kind="table", description=f"Values a key had not used in the {LOOKBACK_DAYS} days before the range."),
        w=14, h=9)
    g.place(ch_panel("New values per interval", f"""
SELECT $__timeInterval(first_seen) AS time, dimension, count() AS new_values
FROM ({' UNION ALL '.join([_new_values_sql(NETWORK_EXPR, 'network'), _new_values_sql('country', 'country'),
                           _new_values_sql('user_agent', 'user_agent')])})
GROUP BY time, dimension ORDER BY time""", kind="timeseries",
        fieldConfig={"defaults": {"custom": {"drawStyle": "bars"}}, "overrides": []}), w=10, h=9)
    g.row("Kill chain and response")
    g.place(ch_panel("Audit kill-chain timeline", f"""
SELECT ts, provider, key_id, principal, action, source_ip, country, user_agent, error_code
FROM ${{db}}.audit_events
WHERE $__timeFilter(ts) AND {flt('provider', 'project', 'key_id')}
ORDER BY ts DESC
LIMIT 500""", kind="table",
        description="Control-plane actions in time order: discovery (List*, Get*), then evasion (Delete*Logging*)."),
        w=12, h=9)
    g.place(ch_panel("Revocations", f"""
SELECT requested_at, completed_at, key_id, provider, adapter, action, outcome, actor,
       dry_run, reversible, alert_id, reason, error
FROM ${{db}}.revocations FINAL
WHERE $__timeFilter(requested_at) AND {flt('provider', 'project', 'key_id')}
ORDER BY requested_at DESC
LIMIT 200""", kind="table", description="Current state of each revocation decision (executed, failed, pending …)."),
        w=12, h=9)
    return dashboard(UID, "Key theft — live", g, variables(db), tags=["soc", "key-theft"], refresh="10s",
                     time_from="now-3h")
