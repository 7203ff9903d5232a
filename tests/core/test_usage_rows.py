"""`ClickHouseSink.write` stores every usage field as given, with the contract's defaults for the
optional ones left out (sinks/clickhouse.py `usage_json`), and where each event came from."""

from __future__ import annotations

import orjson
import pytest

from keywatch.models.core import CoreOutput
from keywatch.models.events import UsageEvent
from keywatch.sinks.clickhouse import USAGE_COLUMNS, ClickHouseSink
from keywatch.stream.decode import EventDecoder, Origin

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


def test_usage_rows_keep_text_times_and_floats_exactly_as_decoded(ch_db):
    """Usage rows go in as JSON (`usage_json`): the stored time is the decoder's (an RFC 3339 string
    with microseconds rounds to its millisecond, as `parse_ts` does), text survives quoting and
    escapes, floats are the same doubles, and a producer's own `kafka_*` fields never reach the row."""
    client, settings = ch_db
    sink = ClickHouseSink(client, settings.clickhouse_database)
    odd = '"quoted" \\ back\\slash, tab\t, newline\n, ünïcödé ✓, \x01 control, {"json": [1]}'
    raw = orjson.dumps([
        {"kind": "usage", "event_id": "text_ts", "ts": "2026-11-25T17:00:00.1236+01:00", "provider": "openai", "key_id": "k1",
         "model": "gpt-4o", "user_agent": odd, "cost_usd": 0.1 + 0.2, "latency_ms": 0.1, "kafka_partition": "p9", "kafka_offset": 7},
        {"kind": "usage", "event_id": "tiny", "ts": 1795622400999, "provider": "openai", "key_id": "k2", "model": "m",
         "cost_usd": 1e-9, "requests": 1, "input_tokens": 10**12},
    ])
    events, dead = EventDecoder().decode(raw, Origin("t", 1, 5))
    assert not dead
    sink.write(CoreOutput(events, [], [], [], [], {}), offsets={"text_ts": (1, 5)})
    db = settings.clickhouse_database
    got = {r[0]: r[1:] for r in client.query(
        f"SELECT event_id, toUnixTimestamp64Milli(ts), user_agent, cost_usd, latency_ms, kafka_partition, kafka_offset, "
        f"requests, input_tokens FROM {db}.usage_events").result_rows}
    # latency_ms is a Float32 column; kafka_* come from the offsets map, not from the producer
    assert got["text_ts"] == (1795622400124, odd, 0.1 + 0.2, pytest.approx(0.1), 1, 5, 1, 0)
    assert got["tiny"] == (1795622400999, "", 1e-9, 0.0, -1, -1, 1, 10**12)


def test_usage_rollups_match_the_rows_without_insert_time_merges(ch_db):
    """Usage rows go in with `optimize_on_insert=0` where the server knows the setting: the
    per-minute rollups (materialised views) still sum exactly what the rows hold, over several
    inserts that repeat the same minute, key and model; a server without the setting is not sent it."""
    client, settings = ch_db
    db = settings.clickhouse_database
    sink = ClickHouseSink(client, db)
    assert sink.usage_settings["optimize_on_insert"] == 0
    t0 = 1795622400000
    for b in range(3):
        batch = [UsageEvent(event_id=f"b{b}e{i}", ts=t0 + (i % 3) * 60_000 + b * 1000, provider="openai",
                            key_id=f"k{i % 2}", project=f"p{i % 2}", model="gpt-4o", requests=1 + i % 4,
                            cost_usd=0.01 * (i + 1), input_tokens=i) for i in range(12)]
        sink.write(CoreOutput(batch, [], [], [], [], {}), offsets={})
    by_key = ("SELECT toStartOfMinute(ts) m, key_id, count(), sum(requests), round(sum(cost_usd), 9), sum(input_tokens) "
              f"FROM {db}.usage_events GROUP BY m, key_id ORDER BY m, key_id")
    rollup = ("SELECT minute, key_id, sum(events), sum(requests), round(sum(cost_usd), 9), sum(input_tokens) "
              f"FROM {db}.usage_minute GROUP BY minute, key_id ORDER BY minute, key_id")
    rows = client.query(by_key).result_rows
    assert len(rows) == 6 and sum(r[2] for r in rows) == 36
    assert client.query(rollup).result_rows == rows
    spend = client.query(f"SELECT minute, project, sum(requests), round(sum(cost_usd), 9) FROM {db}.spend_minute_by_project "
                         "GROUP BY minute, project ORDER BY minute, project").result_rows
    assert spend == [(r[0], f"p{r[1][1]}", r[3], r[4]) for r in rows]

    class OlderServer:  # knows neither optional setting
        server_settings = {"input_format_skip_unknown_fields": object()}

    assert ClickHouseSink(OlderServer(), db).usage_settings == {"input_format_skip_unknown_fields": 1}
