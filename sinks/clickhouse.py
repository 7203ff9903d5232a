"""ClickHouse sink: connect (server or embedded chDB), and write the core's output.

`connect(settings)` is the one place that opens ClickHouse. With `KEYWATCH_CLICKHOUSE_DSN`
unset it opens chDB under `KEYWATCH_DATA_DIR/chdb` — only one process may hold that path, so
in embedded mode the worker owns it and other commands go through the worker's HTTP API.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import clickhouse_connect
import orjson

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, ScoreRow
from keywatch.models.events import AuditEvent, BillingEvent, UsageEvent
from keywatch.sinks.migrate import migrate, migration_params

USAGE_COLUMNS = [
    "event_id", "ts", "provider", "key_id", "principal", "project", "model", "operation",
    "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd", "price_source",
    "source_ip", "user_agent", "region", "country", "status", "error_code", "latency_ms", "source",
    "request_id", "kafka_partition", "kafka_offset", "credential_type",
]
AUDIT_COLUMNS = ["event_id", "ts", "provider", "key_id", "principal", "project", "action", "source_ip", "user_agent", "region", "country", "error_code", "credential_type"]
BILLING_COLUMNS = ["event_id", "ts", "period_end", "provider", "project", "scope", "line_item", "amount_usd"]
ALERT_COLUMNS = [
    "alert_id", "kind", "provider", "key_id", "project", "started_at", "detected_at", "updated_at",
    "severity", "score", "reasons", "cost_impact_usd", "status", "version", "details",
]
DEAD_COLUMNS = ["received_at", "reason", "error", "topic", "partition", "offset", "idx", "payload", "payload_size"]
SCORE_COLUMNS = ["ts", "provider", "key_id", "project", "detector", "score", "details"]


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def connect(settings, *, migrate_schema: bool = True):
    """A clickhouse-connect client for the configured server, or embedded chDB."""
    if settings.clickhouse_dsn is None:
        path = settings.data_dir / "chdb"
        path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    else:
        client = clickhouse_connect.get_client(dsn=settings.secret("clickhouse_dsn"))
    if migrate_schema:
        migrate(client, migration_params(settings))
    return client


def usage_row(e: UsageEvent, partition: int = -1, offset: int = -1) -> list[Any]:
    return [
        e.event_id, dt(e.ts_ms), e.provider, e.key_id, e.principal or "", e.project or "", e.model,
        e.operation or "", e.requests, e.input_tokens, e.output_tokens, e.cached_input_tokens,
        e.cost_usd or 0.0, e.price_source or "", e.source_ip or "", e.user_agent or "", e.region or "",
        e.country or "", e.status or 0, e.error_code or "", e.latency_ms or 0.0, e.source or "",
        e.request_id or "", partition, offset, e.credential_type or "",
    ]


def audit_row(e: AuditEvent) -> list[Any]:
    return [e.event_id, dt(e.ts_ms), e.provider, e.key_id or "", e.principal or "", e.project or "", e.action,
            e.source_ip or "", e.user_agent or "", e.region or "", e.country or "", e.error_code or "",
            e.credential_type or ""]


def billing_row(e: BillingEvent) -> list[Any]:
    return [e.event_id, dt(e.ts_ms), dt(e.period_end_ms or e.ts_ms), e.provider, e.project or "",
            e.scope or "", e.line_item or "", e.amount_usd]


def alert_row(a: Alert) -> list[Any]:
    return [a.alert_id, a.kind, a.provider, a.key_id, a.project, dt(a.started_at_ms), dt(a.detected_at_ms),
            dt(a.updated_at_ms or a.detected_at_ms), a.severity, a.score, list(a.reasons), a.cost_impact_usd,
            a.status, a.version, orjson.dumps(a.details, default=str).decode()]


def score_row(s: ScoreRow) -> list[Any]:
    return [dt(s.ts_ms), s.provider, s.key_id or "", s.project or "", s.detector, float(s.score),
            orjson.dumps(s.details, default=str).decode()]


def dead_row(d) -> list[Any]:
    return [dt(d.received_at_ms), d.reason, d.error, d.topic, d.partition, d.offset, d.index,
            d.payload.decode("utf-8", "replace"), d.payload_size]


class ClickHouseSink:
    """Writes one batch's output. Raises on failure so the caller does not commit offsets."""

    def __init__(self, client, database: str) -> None:
        self.client = client
        self.db = database

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            self.client.insert(f"{self.db}.{table}", rows, column_names=columns)

    def insert_dicts(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            cols = list(rows[0].keys())
            self.insert(table, [[r.get(c) for c in cols] for r in rows], cols)

    def write(self, out: CoreOutput, dead_letters: Sequence = (), offsets: dict[str, tuple[int, int]] | None = None) -> None:
        """Write usage, audit, billing, scores, detector rows, alerts and dead letters.

        `offsets` maps event_id → (partition, offset) so a row says where it came from.
        """
        offsets = offsets or {}
        self.insert("usage_events", [usage_row(e, *offsets.get(e.event_id, (-1, -1))) for e in out.usage], USAGE_COLUMNS)
        self.insert("audit_events", [audit_row(e) for e in out.audit], AUDIT_COLUMNS)
        self.insert("billing_events", [billing_row(e) for e in out.billing], BILLING_COLUMNS)
        self.insert("scores", [score_row(s) for s in out.scores], SCORE_COLUMNS)
        for table, rows in out.rows.items():
            self.insert_dicts(table, rows)
        self.insert("alerts", [alert_row(a) for a in out.alerts], ALERT_COLUMNS)
        self.write_dead_letters(dead_letters)

    def write_dead_letters(self, dead_letters: Sequence) -> None:
        self.insert("dead_letters", [dead_row(d) for d in dead_letters], DEAD_COLUMNS)
