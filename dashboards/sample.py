"""Deterministic sample data for every table a dashboard, the API or the report reads.

Tests fill a freshly migrated database with it and then run every panel query; demos can use it
to see the dashboards without a simulator. Tables this module does not know (added by other
areas' migrations) get rows from `fill_generic`, which reads their columns from
`system.columns`, so a new table never leaves a panel without data.

The story: three keys over six hours from `START`; key `key_stolen` is used normally, then, in
the last hour, from new networks, countries and a new user agent after a discovery kill chain —
an open key_theft alert; project `proj-b` has a cost spike.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, ScoreRow
from keywatch.models.events import AuditEvent, UsageEvent, format_ts
from keywatch.sinks.clickhouse import ClickHouseSink, dt

START_MS = 1_795_600_800_000  # 2026-11-25T10:00:00Z
HOUR_MS = 3_600_000
END_MS = START_MS + 6 * HOUR_MS
THEFT_MS = END_MS - HOUR_MS
KEYS = [("key_normal", "openai", "proj-a", "gpt-4o"), ("key_stolen", "bedrock", "proj-a", "claude-3-5-sonnet"),
        ("key_batch", "anthropic", "proj-b", "claude-3-haiku")]
THEFT_ALERT_ID = "kw_sample_theft_0001"
SPIKE_ALERT_ID = "kw_sample_spike_0001"


def _usage(rng: random.Random) -> list[UsageEvent]:
    out = []
    for key, provider, project, model in KEYS:
        # Baseline: one history day (before any dashboard range) and the six hours of the story.
        for t in list(range(START_MS - 24 * HOUR_MS, START_MS - 23 * HOUR_MS, 600_000)) + list(range(START_MS, END_MS, 300_000)):
            out.append(UsageEvent(event_id=f"{key}-{t}", ts=t, provider=provider, key_id=key, project=project,
                                  model=model, requests=5, input_tokens=1000, output_tokens=200,
                                  cost_usd=round(0.02 + rng.random() * 0.01, 5), source_ip="10.1.2.3",
                                  user_agent="app/1.0", country="US", status=200, latency_ms=300.0))
    for i, t in enumerate(range(THEFT_MS, END_MS, 60_000)):  # abuse: new IPs, countries, agent
        out.append(UsageEvent(event_id=f"theft-{t}", ts=t, provider="bedrock", key_id="key_stolen", project="proj-a",
                              model="claude-3-opus", requests=40, input_tokens=60_000, output_tokens=20_000,
                              cost_usd=2.5, source_ip=f"185.220.{i % 4}.{i % 250 + 1}", user_agent="python-requests/2.31",
                              country=("RU", "CN", "BR", "VN")[i % 4], status=200, latency_ms=900.0))
    for t in range(END_MS - 2 * HOUR_MS, END_MS - HOUR_MS, 120_000):  # proj-b batch job: a cost spike
        out.append(UsageEvent(event_id=f"spike-{t}", ts=t, provider="anthropic", key_id="key_batch", project="proj-b",
                              model="claude-3-haiku", requests=100, input_tokens=500_000, output_tokens=50_000,
                              cost_usd=1.2, source_ip="10.1.2.4", user_agent="batch/2.0", country="US", status=200))
    return out


def _audit() -> list[AuditEvent]:
    chain = ["GetCallerIdentity", "ListFoundationModels", "GetModelInvocationLoggingConfiguration",
             "DeleteModelInvocationLoggingConfiguration", "InvokeModel"]
    return [AuditEvent(event_id=f"audit-{i}", ts=THEFT_MS - 300_000 + i * 30_000, provider="bedrock", key_id="key_stolen",
                       project="proj-a", action=a, source_ip="185.220.0.1", user_agent="python-requests/2.31",
                       country="RU", region="us-east-1") for i, a in enumerate(chain)]


def _scores() -> list[ScoreRow]:
    rows = []
    for key, provider, project, _ in KEYS:
        for t in range(START_MS, END_MS, 300_000):
            s = 0.95 if (key == "key_stolen" and t >= THEFT_MS) else 0.05
            rows.append(ScoreRow(t, provider, key, project, "key_theft", s, {}))
    return rows


def alerts() -> list[Alert]:
    """Two versions of the theft alert (the second is current) and one cost spike."""
    def alert(aid, kind, provider, key, project, start, det, upd, sev, score, reasons, cost, version, details):
        return Alert(alert_id=aid, kind=kind, provider=provider, key_id=key, project=project,
                     started_at=format_ts(start), detected_at=format_ts(det), severity=sev, score=score,
                     reasons=reasons, cost_impact_usd=cost, version=version, updated_at=format_ts(upd),
                     started_at_ms=start, detected_at_ms=det, updated_at_ms=upd, details=details)
    theft_reasons = ["5 requests from 4 new IPs in 4 new countries", "DeleteModelInvocationLoggingConfiguration after discovery"]
    return [
        alert(THEFT_ALERT_ID, "key_theft", "bedrock", "key_stolen", "proj-a", THEFT_MS, THEFT_MS + 300_000,
              THEFT_MS + 300_000, "high", 0.8, theft_reasons[:1], 12.0, 1, {"signals": ["new_country"]}),
        alert(THEFT_ALERT_ID, "key_theft", "bedrock", "key_stolen", "proj-a", THEFT_MS, THEFT_MS + 300_000,
              THEFT_MS + 1_800_000, "critical", 0.97, theft_reasons, 140.0, 2,
              {"signals": ["new_country", "new_network", "logging_disabled"]}),
        alert(SPIKE_ALERT_ID, "cost_spike", "anthropic", "key_batch", "proj-b", END_MS - 2 * HOUR_MS,
              END_MS - 2 * HOUR_MS + 900_000, END_MS - 2 * HOUR_MS + 900_000, "medium", 0.6,
              ["spend 35x the expected $0.03/min"], 35.0, 1,
              {"level": "project", "root_cause": {
                  "keys": [{"value": "key_batch", "excess_usd": 34.0, "pct": 97.0}],
                  "models": [{"value": "claude-3-haiku", "excess_usd": 34.0, "pct": 97.0}], "regions": []}}),
    ]


class _Dead:
    def __init__(self, i: int) -> None:
        self.received_at_ms, self.reason, self.error = END_MS - i * 600_000, ("invalid_json", "missing_field")[i % 2], "bad"
        self.topic, self.partition, self.offset, self.index = "keywatch.events", 0, i, 0
        self.payload = b"{not json"
        self.payload_size = len(self.payload)


def revocations() -> list[dict[str, Any]]:
    base = dict(decision_id="rev-1", alert_id=THEFT_ALERT_ID, alert_kind="key_theft", severity="critical", score=0.97,
                provider="bedrock", adapter="aws_iam", key_id="key_stolen", project="proj-a", action="deactivate_key",
                reversible=1, rule="critical-key-theft", actor="keywatch", dry_run=0, reason="score 0.97 ≥ 0.9",
                requested_at=dt(THEFT_MS + 1_800_000))
    return [{**base, "version": 1, "outcome": "started"},
            {**base, "version": 2, "outcome": "executed", "completed_at": dt(THEFT_MS + 1_802_000), "duration_ms": 2000.0}]


def fill(client, db: str) -> None:
    """Write the whole story into database `db` (migrated), then fill any other empty table."""
    rng = random.Random(7)
    sink = ClickHouseSink(client, db)
    out = CoreOutput(usage=_usage(rng), audit=_audit(), billing=[], alerts=alerts(), scores=_scores(), rows={})
    sink.write(out, dead_letters=[_Dead(i) for i in range(6)])
    if _has_table(client, db, "revocations"):
        sink.insert_dicts("revocations", [_complete(client, db, "revocations", r) for r in revocations()])
    for table in _tables(client, db):
        if table not in ("schema_migrations",) and not client.query(f"SELECT 1 FROM {db}.`{table}` LIMIT 1").result_rows:
            fill_generic(client, db, table)


def _tables(client, db: str) -> list[str]:
    return [r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT IN ('MaterializedView', 'View')",
        parameters={"db": db}).result_rows]


def _has_table(client, db: str, table: str) -> bool:
    return table in _tables(client, db)


def _columns(client, db: str, table: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in client.query(
        "SELECT name, type, default_kind FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": db, "t": table}).result_rows]


def _complete(client, db: str, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """`row` plus a sample value for every column it lacks that has no default."""
    filled = dict(row)
    for name, typ, default_kind in _columns(client, db, table):
        if name not in filled and not default_kind:
            filled[name] = _value_for(name, typ, 0)
    return filled


def _value_for(name: str, typ: str, i: int) -> Any:
    """A plausible value by column name and type, inside the sample's time range."""
    base = typ.removeprefix("LowCardinality(").removeprefix("Nullable(").rstrip(")")
    key, provider, project, model = KEYS[i % len(KEYS)]
    by_name = {"key_id": key, "provider": provider, "project": project, "model": model, "alert_id": THEFT_ALERT_ID,
               "scope": project, "kind": "key_theft", "severity": "high", "status": "open", "currency": "USD",
               "period": "month", "channel": "webhook", "outcome": "sent", "level": "project"}
    if base.startswith(("DateTime", "Date")):
        return dt(START_MS + (i * 600_000) % (END_MS - START_MS)) if base.startswith("DateTime") else dt(START_MS).date()
    if base.startswith(("Float", "Decimal")):
        return 1.0 + (i % 5)
    if base.startswith(("UInt", "Int")):
        return 1 + (i % 5)
    if base.startswith("Array"):
        return []
    if base.startswith(("Map", "Tuple", "Enum", "UUID")):
        raise NotImplementedError(f"sample data for {name} {typ}: add it to keywatch.dashboards.sample")
    return by_name.get(name, "{}" if name in ("details", "payload") else f"sample-{name}")


def fill_generic(client, db: str, table: str, n: int = 72) -> None:
    cols = [(name, typ) for name, typ, kind in _columns(client, db, table) if kind not in ("MATERIALIZED", "ALIAS")]
    rows = [[_value_for(name, typ, i) for name, typ in cols] for i in range(n)]
    client.insert(f"{db}.{table}", rows, column_names=[c for c, _ in cols])
