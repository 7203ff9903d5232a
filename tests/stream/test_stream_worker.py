"""Integration: real embedded broker → `keywatch worker` subprocess → real chDB.

Marked `integration`; about a minute in all.
"""

from __future__ import annotations

import orjson
import pytest

from keywatch.settings import Settings
from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.produce import EventProducer, produce_events

from stream_helpers import end_offsets as _end_offsets, prepare as _prepare  # noqa: E402

pytestmark = pytest.mark.integration

BAD = [
    b"this is not json",
    b'{"kind":"usage","event_id":"bad-type","ts":1795622400000,"provider":"openai","key_id":"k","model":"m","input_tokens":"many"}',
    b'\xff\xfe{"kind":"usage"}',
    b"[" + b'{"kind":"usage","event_id":"x","ts":1,"provider":"p","key_id":"k","model":"m"},' * 400 + b"{}]",  # oversized (> 16384)
]


def _caught_up(ends: dict[str, int]):
    return lambda st: all(st.get("offsets", {}).get(k, -1) >= o for k, o in ends.items())


def _read_topic(bootstrap: str, topic: str) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=2000, auto_offset_reset="earliest")
    try:
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        return [orjson.loads(m.value) for m in c]
    finally:
        c.close()


def test_events_and_bad_input_flow_to_clickhouse_and_dlq(worker_factory, broker, events):
    make_events = events
    w = worker_factory(MAX_MESSAGE_BYTES=16384, MEMORY_TRIM_S=1)
    s = _prepare(w)
    good = make_events(3000)
    with EventProducer(broker.bootstrap, s.input_topic) as p:
        p.send_events(good[:2000], batch_size=50)
        for raw in BAD:
            p.send_raw(raw, b"key_0")
        # a batch with one bad element: the good element still flows, the bad one is a dead letter
        p.send_raw(orjson.dumps([good[2000], {"kind": "usage", "event_id": "neg", "ts": good[0]["ts"],
                                              "provider": "openai", "key_id": "k", "model": "m", "input_tokens": -5}]))
        p.send_events(good[2001:], batch_size=1)  # one JSON object per message
        p.send_events(good[:100], batch_size=100)  # re-sent ids: deduplicated
    ends = _end_offsets(broker.bootstrap, s.input_topic, s.topic_partitions)
    w.start()
    st = w.wait(_caught_up(ends), timeout=90)
    assert st["dead_letters"] == 5
    # the input has ended: once its partitions idle, the project-level events still held go too
    w.wait(lambda st: st.get("project_level_waiting", -1) == 0, timeout=60)
    assert "late_events" not in st  # the producer keeps every partition in event-time order
    w.wait(lambda st: st.get("memory_trims", 0) >= 1, timeout=30)  # freed heap memory given back (keywatch/memtrim.py)
    # events older than the minute their partitions reached (another shipper's stragglers) are
    # stored and counted (`keywatch_late_events_total`): cost spikes sum them into a later minute
    late = [{**e, "event_id": f"late{i}", "ts": e["ts"] - 120_000} for i, e in enumerate(good[:7])]
    produce_events(broker.bootstrap, s.input_topic, late, batch_size=1)
    st = w.wait(lambda st: st.get("late_events", 0) >= 7, timeout=60)
    assert st["late_events"] == 7
    w.wait(lambda st: st.get("project_level_waiting", -1) == 0, timeout=60)
    assert w.stop() == 0
    usage, dead, snaps, mv = w.query(
        f"SELECT count(), uniqExact(event_id) FROM {s.clickhouse_database}.usage_events",
        f"SELECT reason, count() FROM {s.clickhouse_database}.dead_letters GROUP BY reason ORDER BY reason",
        f"SELECT count() FROM {s.clickhouse_database}.detector_snapshots",
        f"SELECT sum(events) FROM {s.clickhouse_database}.usage_minute",
    )
    assert usage == [[3007, 3007]]
    assert dict(dead) == {"invalid_utf8": 1, "not_json": 1, "oversized": 1, "validation": 2}
    assert snaps[0][0] >= 1
    assert int(mv[0][0]) == 3007
    dlq = _read_topic(broker.bootstrap, s.dlq_topic)
    assert sorted(d["reason"] for d in dlq) == ["invalid_utf8", "not_json", "oversized", "validation", "validation"]
    assert all(d["topic"] == s.input_topic and d["offset"] >= 0 and len(d["payload"]) <= s.dlq_payload_max_bytes for d in dlq)

# kill -9 (five times), ClickHouse outage and broker restart: tests/stream/test_stream_faults.py
