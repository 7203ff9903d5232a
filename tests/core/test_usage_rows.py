"""`ClickHouseSink.write` stores every usage field as given, with the contract's defaults for the
optional ones left out (sinks/clickhouse.py `usage_columns`), and where each event came from."""

from __future__ import annotations

from keywatch.models.core import CoreOutput
from keywatch.models.events import UsageEvent
from keywatch.sinks.clickhouse import USAGE_COLUMNS, ClickHouseSink

FULL = dict(event_id="full", ts=1795622400123, provider="openai", key_id="key_1", principal="svc", project="p1",
            model="gpt-4o", operation="chat", requests=3, input_tokens=10, output_tokens=20, cached_input_tokens=5,
            cost_usd=0.25, source_ip="10.0.0.1", user_agent="curl/8", region="us-east-1", country="US", status=429,
            error_code="rate_limited", latency_ms=12.5, source="gateway", request_id="r1", credential_type="session",
            price_source="table")


def test_usage_rows_keep_every_field_and_default_the_missing(ch_db):
    client, settings = ch_db
    sink = ClickHouseSink(client, settings.clickhouse_database)
    bare = UsageEvent(event_id="bare", ts=1795622400000, provider="anthropic", key_id="key_2", model="claude")
    sink.write(CoreOutput([UsageEvent(**FULL), bare], [], [], [], [], {}), offsets={"full": (3, 41)})
    cols = [c for c in USAGE_COLUMNS if c != "ts"]
    got = {r[0]: dict(zip(cols, r)) for r in client.query(
        f"SELECT {', '.join(cols)}, toUnixTimestamp64Milli(ts) FROM {settings.clickhouse_database}.usage_events").result_rows}
    full = got["full"]
    for name, value in FULL.items():
        if name != "ts":
            assert full[name] == value, name
    assert (full["kafka_partition"], full["kafka_offset"]) == (3, 41)
    b = got["bare"]
    assert (b["principal"], b["project"], b["operation"], b["cost_usd"], b["source_ip"], b["status"], b["latency_ms"],
            b["error_code"], b["credential_type"]) == ("", "", "", 0.0, "", 0, 0.0, "", "")
    assert (b["requests"], b["input_tokens"], b["kafka_partition"], b["kafka_offset"]) == (1, 0, -1, -1)
    ts = {r[0]: r[1] for r in client.query(
        f"SELECT event_id, toUnixTimestamp64Milli(ts) FROM {settings.clickhouse_database}.usage_events").result_rows}
    assert ts == {"full": 1795622400123, "bare": 1795622400000}
