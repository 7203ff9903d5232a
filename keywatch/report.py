"""Incident report data: one alert with its evidence, activity timeline, response and deliveries.

`collect(client, db, alert_id)` reads ClickHouse (the worker's API calls it in embedded mode, the
CLI calls it directly when a server DSN is set or the worker is stopped); `report_html.render`
turns the dict into a self-contained page. The dict is JSON-able so it can cross the API.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from keywatch.models.events import format_ts
from keywatch.stream import queries

MAX_BUCKETS = 120
NICE_BUCKETS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def _tables(client, db: str) -> set[str]:
    return {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = {db:String}",
                                       parameters={"db": db}).result_rows}


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return format_ts(queries.ms(v))
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _rows_for_alert(client, db: str, table: str, alert_id: str, order: str, final: bool) -> list[dict[str, Any]]:
    """Every row of another area's table about this alert, whatever its columns are."""
    res = client.query(f"SELECT * FROM {db}.{table} {'FINAL' if final else ''} WHERE alert_id = {{id:String}} "
                       f"ORDER BY {order} LIMIT 200", parameters={"id": alert_id})
    return [{c: _plain(v) for c, v in zip(res.column_names, row)} for row in res.result_rows]


def _timeline(client, db: str, alert: dict[str, Any]) -> dict[str, Any]:
    """Per-bucket activity of the key (or project) from well before the anomaly to its last update."""
    start, end = alert["started_at_ms"], max(alert["updated_at_ms"], alert["detected_at_ms"])
    span = max(end - start, 3_600_000)
    lo, hi = start - 3 * span, end + span // 4  # enough history to see the baseline
    need = (hi - lo) // 1000 // MAX_BUCKETS
    bucket_s = next((b for b in NICE_BUCKETS_S if b >= need), NICE_BUCKETS_S[-1])  # readable: "per 5 min"
    if alert["key_id"]:
        who, p = "key_id = {k:String}", {"k": alert["key_id"]}
    else:
        who, p = "provider = {prov:String} AND project = {proj:String}", {"prov": alert["provider"], "proj": alert["project"] or ""}
    rows = client.query(
        f"""SELECT toUnixTimestamp(toStartOfInterval(ts, INTERVAL {bucket_s} SECOND)) * 1000 AS t,
                   sum(requests), sum(cost_usd), uniqExact(source_ip), uniqExact(country)
            FROM {db}.usage_events
            WHERE {who} AND ts >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC') AND ts <= fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
            GROUP BY t ORDER BY t""", parameters={**p, "lo": lo, "hi": hi}).result_rows
    return {"bucket_s": bucket_s, "from_ms": lo, "to_ms": hi,
            "points": [{"t": int(r[0]), "requests": int(r[1]), "cost_usd": round(float(r[2]), 6), "ips": int(r[3]),
                        "countries": int(r[4])} for r in rows]}


def collect(client, db: str, alert_id: str) -> dict[str, Any] | None:
    """The report's data, or None when the alert does not exist."""
    alert = queries.get_alert(client, db, alert_id)
    if alert is None:
        return None
    tables = _tables(client, db)
    data: dict[str, Any] = {
        "alert": alert,
        "timeline": _timeline(client, db, alert),
        "actions": queries.alert_actions(client, db, alert_id) if "alert_actions" in tables else [],
        "revocations": _rows_for_alert(client, db, "revocations", alert_id, "requested_at", True) if "revocations" in tables else [],
        "deliveries": [],
    }
    for name in ("alert_deliveries", "deliveries"):  # 0006 (alert channels)
        if name in tables:
            cols = {r[0] for r in client.query("SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}",
                                               parameters={"d": db, "t": name}).result_rows}
            if "alert_id" in cols:
                order = next((c for c in ("attempted_at", "sent_at", "ts", "at", "created_at") if c in cols), "alert_id")
                data["deliveries"] = _rows_for_alert(client, db, name, alert_id, order, False)
            break
    return data
