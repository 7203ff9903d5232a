"""The worker's HTTP API as plain functions: `handler(runtime, ...) -> Reply`. No faust here.

`stream/web.py` adapts these to faust views; tests call them directly against chDB. Reads go
to ClickHouse (`alerts FINAL`); mutations (ack, feedback) go through the live detection core
under `runtime.core_lock`, then write the alert's new version and an `alert_actions` row.
Mutations need `Authorization: Bearer <KEYWATCH_API_TOKEN>`; with no token set they are refused.
Spend (`spend_projection`, `budgets`) lives in `keywatch.stream.spend`, revocations in
`keywatch.stream.api_revoke`.

>>> check_auth(None, "Bearer x").status
403
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keywatch.models.alerts import Alert
from keywatch.models.events import format_ts
from keywatch.sinks.clickhouse import ALERT_COLUMNS, alert_row, dt
from keywatch.stream import queries, spend
from keywatch.stream.runtime import WorkerRuntime

FEEDBACK_LABELS = ("not_anomaly", "planned_activity", "confirmed")
MAX_WINDOW_S = 90 * 86400


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able, or str for text replies
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


def check_auth(token: str | None, header: str | None) -> Reply | None:
    """None when authorised, else the error reply. Constant-time compare: no timing oracle."""
    if not token:
        return error(403, "mutating endpoints are disabled: set KEYWATCH_API_TOKEN")
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Reply(401, {"error": "missing or wrong bearer token"}, headers={"WWW-Authenticate": "Bearer"})
    return None


def _db(rt: WorkerRuntime) -> tuple[Any, str]:
    # Queries run on the event loop: chDB connections are not safe to share across threads, and
    # every query here is bounded (LIMIT, one key, one alert).
    return rt.sink.client, rt.sink.db


def health(rt: WorkerRuntime) -> Reply:
    return Reply(200, {"status": "ok"})


def ready(rt: WorkerRuntime) -> Reply:
    return Reply(200 if rt.ready else 503, {"ready": rt.ready})


def metrics(rt: WorkerRuntime) -> Reply:
    return Reply(200, generate_latest(rt.metrics.registry).decode(), CONTENT_TYPE_LATEST)


def list_alerts(rt: WorkerRuntime, params: Mapping[str, str]) -> Reply:
    try:
        alerts = queries.list_alerts(*_db(rt), params)
    except queries.QueryError as exc:
        return error(400, str(exc))
    return Reply(200, {"alerts": alerts, "count": len(alerts)})


def get_alert(rt: WorkerRuntime, alert_id: str) -> Reply:
    client, db = _db(rt)
    alert = queries.get_alert(client, db, alert_id)
    if alert is None:
        return error(404, f"no alert {alert_id}")
    alert["actions"] = queries.alert_actions(client, db, alert_id)
    return Reply(200, alert)


def report_data(rt: WorkerRuntime, alert_id: str) -> Reply:
    """Everything the incident report needs, so `keywatch report` works in embedded mode."""
    from keywatch.report import collect

    data = collect(*_db(rt), alert_id)
    return Reply(200, data) if data else error(404, f"no alert {alert_id}")


def _record(rt: WorkerRuntime, alert: Alert | None, alert_id: str, action: str, now_ms: int, *, label: str = "",
            until_ms: int | None = None, actor: str = "", note: str = "", in_core: bool = False) -> None:
    if alert is not None:
        rt.sink.insert("alerts", [alert_row(alert)], ALERT_COLUMNS)
    rt.sink.insert_dicts("alert_actions", [{
        "at": dt(now_ms), "alert_id": alert_id, "action": action, "label": label,
        "until": dt(until_ms) if until_ms else None, "actor": actor[:200], "note": note[:2000],
        "alert_version": alert.version if alert is not None else 0, "in_core": int(in_core)}])


def _stored(rt: WorkerRuntime, alert_id: str, status: str, now_ms: int, **details: Any) -> Alert | None:
    """A new version of an alert the core no longer holds (closed, or before a restart)."""
    d = queries.get_alert(*_db(rt), alert_id)
    if d is None:
        return None
    a = queries.to_alert(d)
    return msgspec.structs.replace(a, status=status, version=a.version + 1, updated_at_ms=now_ms,
                                   updated_at=format_ts(now_ms),
                                   details={**a.details, **details})


async def ack(rt: WorkerRuntime, alert_id: str, auth: str | None, body: Mapping[str, Any]) -> Reply:
    if (denied := check_auth(rt.settings.secret("api_token"), auth)) is not None:
        return denied
    now_ms = int(time.time() * 1000)
    async with rt.core_lock:
        alert = rt.core.book.set_status(alert_id, "acknowledged", now_ms)
    in_core = alert is not None
    if alert is None:
        alert = _stored(rt, alert_id, "acknowledged", now_ms)
        if alert is None:
            return error(404, f"no alert {alert_id}")
    _record(rt, alert, alert_id, "ack", now_ms, actor=str(body.get("actor", "")), note=str(body.get("note", "")),
            in_core=in_core)
    return Reply(200, alert.to_contract())


async def feedback(rt: WorkerRuntime, alert_id: str, auth: str | None, body: Mapping[str, Any]) -> Reply:
    """Label an alert; `window_s` (optional) is how long detectors should accept the behaviour."""
    if (denied := check_auth(rt.settings.secret("api_token"), auth)) is not None:
        return denied
    label = body.get("label")
    if label not in FEEDBACK_LABELS:
        return error(400, f"label must be one of {', '.join(FEEDBACK_LABELS)}")
    window = body.get("window_s")
    if window is not None and (not isinstance(window, (int, float)) or not 0 < window <= MAX_WINDOW_S):
        return error(400, f"window_s must be a number of seconds in (0, {MAX_WINDOW_S}]")
    now_ms = int(time.time() * 1000)
    until_ms = now_ms + int(window * 1000) if window else None
    async with rt.core_lock:
        before = next((a.version for a in rt.core.book.open.values() if a.alert_id == alert_id), None)
        alert = rt.core.feedback(alert_id, label, now_ms, until_ms)
    in_core = alert is not None
    if alert is not None and alert.version == before:
        alert = None  # `confirmed` leaves the alert as it is: no new version to store
    elif alert is None:
        status = "resolved" if label != "confirmed" else None
        alert = _stored(rt, alert_id, status, now_ms, feedback=label) if status else None
        if queries.get_alert(*_db(rt), alert_id) is None:
            return error(404, f"no alert {alert_id}")
    _record(rt, alert, alert_id, "feedback", now_ms, label=label, until_ms=until_ms,
            actor=str(body.get("actor", "")), note=str(body.get("note", "")), in_core=in_core)
    current = alert.to_contract() if alert is not None else queries.get_alert(*_db(rt), alert_id)
    return Reply(200, {"alert": current, "label": label, "until_ms": until_ms, "in_core": in_core})


async def describe_key(rt: WorkerRuntime, key_id: str, params: Mapping[str, str]) -> Reply:
    try:
        hours = int(params.get("hours") or 24)
        usage = queries.key_usage(*_db(rt), key_id, hours)
    except (ValueError, queries.QueryError) as exc:
        return error(400, str(exc))
    async with rt.core_lock:
        info = rt.core.describe_key(key_id)
    if not usage["hourly"] and not usage["recent"] and not info.get("open_alerts") and len(info) <= 2:
        return error(404, f"no activity for key {key_id}")
    return Reply(200, {**info, "usage": usage})


async def spend_projection(rt: WorkerRuntime, params: Mapping[str, str]) -> Reply:
    """Projected end-of-day / end-of-month spend per project and provider (filters: level, provider, project)."""
    try:
        f = spend.projection_filters(params)
    except queries.QueryError as exc:
        return error(400, str(exc))
    async with rt.core_lock:
        rows = spend.live_projections(rt.core, f)
    if rows is not None:
        return Reply(200, spend.projection_body(rows, "core"))
    return Reply(200, spend.projection_body(spend.stored_projections(*_db(rt), f), "clickhouse"))


async def budgets(rt: WorkerRuntime) -> Reply:
    """Every configured budget: period, spend so far, % used, steps crossed and alerted."""
    try:
        config = spend.budget_config(rt.settings)
    except (OSError, ValueError) as exc:
        return error(500, f"cannot read the budgets file: {exc}")
    async with rt.core_lock:
        live = spend.live_budget_spend(rt.core)
    rows = spend.budget_status(*_db(rt), config, live)
    return Reply(200, {"budgets": rows, "count": len(rows)})
