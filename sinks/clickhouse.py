"""ClickHouse sink: connect (server or embedded chDB), and write the core's output.

`connect(settings)` is the one place that opens ClickHouse. With `KEYWATCH_CLICKHOUSE_DSN`
unset it opens chDB under `KEYWATCH_DATA_DIR/chdb` — only one process may hold that path, so
in embedded mode the worker owns it and other commands go through the worker's HTTP API.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import clickhouse_connect
import msgspec
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


def second_client(client, settings):
    """Another client on `client`'s ClickHouse, for another thread: embedded chDB gives a second
    handle on the same engine (a process can hold one chDB path, and its clients share it), a
    server a new connection from the settings (its own HTTP session)."""
    uri = str(getattr(client, "uri", ""))
    if uri.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=uri)
    return connect(settings, migrate_schema=False)


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


_TYPES: dict[tuple[int, str, tuple[str, ...]], list] = {}  # (client, table, columns) → column types


def insert_rows(client, table: str, data, columns: Sequence[str], *, column_oriented: bool = False) -> None:
    """`client.insert` with the column types looked up once per (client, table, columns).

    Without types the driver runs a DESCRIBE TABLE before every INSERT: two chDB round trips
    per table per batch instead of one. Schemas change only in migrations, before the worker
    writes.
    """
    key = (id(client), table, tuple(columns))
    types = _TYPES.get(key)
    if types is None:
        types = list(client.create_insert_context(table, column_names=list(columns)).column_types)
        if len(_TYPES) > 1000:
            _TYPES.clear()
        _TYPES[key] = types
    client.insert(table, data, column_names=list(columns), column_types=types, column_oriented=column_oriented)


# Where a usage row came from when an offsets map given to the sink does not say (tests,
# `keywatch bench-sink`): events decoded by the worker carry their own.
NOWHERE = (-1, -1)
# Usage rows go in as JSON (`JSONEachRow`), encoded by msgspec in C: the worker's hot path spends
# its time holding the interpreter lock, and building `Native` columns in Python held it ≈ 3.9 µs
# per event, encoding ≈ 0.9 µs (`keywatch bench-sink`); ClickHouse parses the JSON without the
# lock, on the other core.
# Fields left out (None, or equal to the struct's default) take the column's DEFAULT, which is
# the struct's default; `ts` comes from `ts_ms` (migration 0011); `kind` and the raw `ts` are skipped.
USAGE_JSON_COLUMNS = ["ts_ms" if c == "ts" else c for c in USAGE_COLUMNS]
# `optimize_on_insert=0`: the table is not merged block by block at insert. For usage_events that
# merge would only drop rows repeated within the block, and the core has already dropped those
# (`DetectionCore._dedupe`); rows repeated across inserts were always left to background merges,
# so readers see nothing new. The rollups' blocks come out of their views' GROUP BY, one row per
# sorting key already. Skipping it saves ≈ 1 µs of ClickHouse CPU per event (20k-row inserts of
# the bench's events: 6.5 → 5.3 µs), on the core the detection thread shares, or in `db serve`.
_USAGE_JSON_SETTINGS = {"input_format_skip_unknown_fields": 1, "precise_float_parsing": 1, "optimize_on_insert": 0}
# Settings an older server may not know (an unknown setting fails the insert): sent only if listed.
_USAGE_OPTIONAL_SETTINGS = ("precise_float_parsing", "optimize_on_insert")
_encode_usage = msgspec.json.Encoder().encode


def usage_json(events: Sequence[UsageEvent], offsets: dict[str, tuple[int, int]] | None = None) -> bytes:
    """The events as one JSON array of `usage_events` rows, each with its Kafka partition and offset:
    the ones the events carry (the worker's pipeline sets them as it decodes each message), or,
    given `offsets`, the ones it maps their ids to, whatever the events held.

    >>> e = UsageEvent(event_id="e1", ts="2026-11-25T16:00:00.123Z", provider="openai", key_id="k", model="m")
    >>> usage_json([e], {"e1": (2, 40)})
    b'[{"kind":"usage","model":"m","kafka_partition":2,"kafka_offset":40,"event_id":"e1","ts":"2026-11-25T16:00:00.123Z","provider":"openai","key_id":"k","ts_ms":1795622400123}]'
    """
    if offsets is not None:
        where = offsets.get
        for e in events:
            e.kafka_partition, e.kafka_offset = where(e.event_id, NOWHERE)
    return _encode_usage(events)


def score_columns(scores: Sequence[ScoreRow]) -> list[list[Any]]:
    """`SCORE_COLUMNS` column-wise (times as epoch ms)."""
    dumps = orjson.dumps
    return [[s.ts_ms for s in scores], [s.provider for s in scores], [s.key_id or "" for s in scores],
            [s.project or "" for s in scores], [s.detector for s in scores], [float(s.score) for s in scores],
            [dumps(s.details, default=str).decode() for s in scores]]


class ClickHouseSink:
    """Writes one batch's output. Raises on failure so the caller does not commit offsets.

    Each table gets one INSERT per batch, and none when the batch has no rows for it; the big
    tables (`usage_events`, `scores`) are built column-wise in one pass.
    """

    def __init__(self, client, database: str) -> None:
        self.client = client
        self.db = database
        # Exact float parsing where the server has the setting (without it a float may come out
        # one unit in the last place off), and no insert-time merge (above).
        known = getattr(client, "server_settings", None) or {}
        self.usage_settings = {k: v for k, v in _USAGE_JSON_SETTINGS.items()
                               if k not in _USAGE_OPTIONAL_SETTINGS or k in known}

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            insert_rows(self.client, f"{self.db}.{table}", rows, columns)

    def insert_columns(self, table: str, columns: Sequence[Sequence[Any]], names: list[str]) -> None:
        if columns and columns[0]:
            insert_rows(self.client, f"{self.db}.{table}", columns, names, column_oriented=True)

    def insert_dicts(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            cols = list(rows[0].keys())
            self.insert_columns(table, [[r.get(c) for r in rows] for c in cols], cols)

    def write(self, out: CoreOutput, dead_letters: Sequence = (), offsets: dict[str, tuple[int, int]] | None = None) -> None:
        """Write usage, audit, billing, scores, detector rows, alerts and dead letters.

        A usage row says where it came from: the partition and offset its event carries (set by
        the worker's pipeline), or, given `offsets` (event_id → (partition, offset)), those.
        """
        if out.usage:
            self.client.raw_insert(f"{self.db}.usage_events", USAGE_JSON_COLUMNS, usage_json(out.usage, offsets),
                                   settings=self.usage_settings, fmt="JSONEachRow")
        self.insert("audit_events", [audit_row(e) for e in out.audit], AUDIT_COLUMNS)
        self.insert("billing_events", [billing_row(e) for e in out.billing], BILLING_COLUMNS)
        if out.scores:
            self.insert_columns("scores", score_columns(out.scores), SCORE_COLUMNS)
        for table, rows in out.rows.items():
            self.insert_dicts(table, rows)
        self.insert("alerts", [alert_row(a) for a in out.alerts], ALERT_COLUMNS)
        self.write_dead_letters(dead_letters)

    def write_dead_letters(self, dead_letters: Sequence) -> None:
        self.insert("dead_letters", [dead_row(d) for d in dead_letters], DEAD_COLUMNS)
