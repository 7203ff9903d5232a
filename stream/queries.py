"""Read-only ClickHouse queries shared by the HTTP API, the CLI (direct mode) and the report.

All user input reaches ClickHouse as bound parameters (`{name:Type}`), never as SQL text.
Alerts are read with `FINAL` so each id appears once, at its latest version.

>>> alert_filters({"kind": "key_theft", "limit": "5"})
(['kind = {kind:String}'], {'kind': 'key_theft'}, 5)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

import orjson

from keywatch.models.alerts import Alert
from keywatch.models.events import format_ts, parse_ts

ALERT_SELECT = ("alert_id, kind, provider, key_id, project, started_at, detected_at, updated_at, severity, score, "
                "reasons, cost_impact_usd, status, version, details")
MAX_LIMIT = 1000
_FILTERS = {"kind": "kind", "severity": "severity", "status": "status", "provider": "provider",
            "key": "ifNull(key_id, '')", "project": "ifNull(project, '')"}


class QueryError(ValueError):
    """A bad filter value (the API answers 400)."""


def ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # ClickHouse returns naive datetimes for UTC columns in some clients
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def alert_filters(params: Mapping[str, str]) -> tuple[list[str], dict[str, Any], int]:
    where, bound = [], {}
    for name, column in _FILTERS.items():
        if params.get(name):
            where.append(f"{column} = {{{name}:String}}")
            bound[name] = str(params[name])
    if params.get("since"):
        raw = params["since"]
        try:
            bound["since_ms"] = parse_ts(int(raw) if str(raw).isdigit() else str(raw))
        except ValueError as exc:
            raise QueryError(f"since: {exc}") from None
        where.append("detected_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
    return where, bound, parse_limit(params)


def parse_limit(params: Mapping[str, str], default: int = 100, most: int = MAX_LIMIT) -> int:
    """`limit` query parameter: an integer within 1..most (a clear 400 otherwise)."""
    try:
        limit = int(params.get("limit") or default)
    except ValueError:
        raise QueryError("limit must be an integer") from None
    if not 1 <= limit <= most:
        raise QueryError(f"limit must be within 1..{most}")
    return limit


def _alert_dict(row: tuple) -> dict[str, Any]:
    (aid, kind, provider, key_id, project, started, detected, updated, severity, score, reasons, cost, status,
     version, details) = row
    try:
        det = orjson.loads(details or "{}")
    except orjson.JSONDecodeError:
        det = {"raw": details}
    s, d, u = ms(started), ms(detected), ms(updated)
    return {"alert_id": aid, "kind": kind, "provider": provider, "key_id": key_id, "project": project,
            "started_at": format_ts(s), "detected_at": format_ts(d), "severity": severity, "score": float(score),
            "reasons": list(reasons), "cost_impact_usd": float(cost), "status": status, "version": int(version),
            "updated_at": format_ts(u), "started_at_ms": s, "detected_at_ms": d, "updated_at_ms": u, "details": det}


def list_alerts(client, db: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
    """Latest version of each alert matching the filters, newest detection first."""
    where, bound, limit = alert_filters(params)
    sql = (f"SELECT {ALERT_SELECT} FROM {db}.alerts FINAL {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY detected_at DESC, alert_id LIMIT {limit}")
    return [_alert_dict(r) for r in client.query(sql, parameters=bound).result_rows]


def get_alert(client, db: str, alert_id: str) -> dict[str, Any] | None:
    rows = client.query(f"SELECT {ALERT_SELECT} FROM {db}.alerts FINAL WHERE alert_id = {{id:String}}",
                        parameters={"id": alert_id}).result_rows
    return _alert_dict(rows[0]) if rows else None


def to_alert(d: dict[str, Any]) -> Alert:
    """An `Alert` struct from `get_alert`'s dict (to write a new version of a stored alert)."""
    return Alert(**{k: d[k] for k in Alert.__struct_fields__ if k in d})


def alert_actions(client, db: str, alert_id: str) -> list[dict[str, Any]]:
    rows = client.query(f"SELECT at, action, label, until, actor, note, alert_version FROM {db}.alert_actions "
                        "WHERE alert_id = {id:String} ORDER BY at", parameters={"id": alert_id}).result_rows
    return [{"at": format_ts(ms(r[0])), "action": r[1], "label": r[2], "until": format_ts(ms(r[3])) if r[3] else None,
             "actor": r[4], "note": r[5], "alert_version": r[6]} for r in rows]


def key_usage(client, db: str, key_id: str, hours: int = 24) -> dict[str, Any]:
    """Hourly activity of a key over the `hours` before its latest event (event time, so replays work)."""
    if not 1 <= hours <= 24 * 90:
        raise QueryError("hours must be within 1..2160")
    p = {"k": key_id, "h": hours}
    hourly = client.query(
        f"""SELECT toStartOfHour(ts) AS hour, sum(requests), round(sum(cost_usd), 4), uniqExact(source_ip),
                   groupUniqArray(10)(country), groupUniqArray(5)(model), countIf(status >= 400 OR error_code != '')
            FROM {db}.usage_events
            WHERE key_id = {{k:String}}
              AND ts >= (SELECT max(ts) FROM {db}.usage_events WHERE key_id = {{k:String}}) - INTERVAL {{h:UInt32}} HOUR
            GROUP BY hour ORDER BY hour""", parameters=p).result_rows
    recent = client.query(
        f"""SELECT ts, provider, project, model, requests, cost_usd, source_ip, country, user_agent, status
            FROM {db}.usage_events WHERE key_id = {{k:String}} ORDER BY ts DESC LIMIT 20""", parameters=p).result_rows
    return {
        "hourly": [{"hour": format_ts(ms(r[0])), "requests": int(r[1]), "cost_usd": float(r[2]), "ips": int(r[3]),
                    "countries": sorted(c for c in r[4] if c), "models": sorted(r[5]), "errors": int(r[6])} for r in hourly],
        "recent": [{"ts": format_ts(ms(r[0])), "provider": r[1], "project": r[2], "model": r[3], "requests": int(r[4]),
                    "cost_usd": float(r[5]), "source_ip": r[6], "country": r[7], "user_agent": r[8], "status": int(r[9])}
                   for r in recent],
    }
