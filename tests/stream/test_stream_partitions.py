"""Per-partition state handoff between two workers of one group, in process, on one real chDB.

Two `Pipeline`s stand for two workers sharing ClickHouse (as in production: same
`KEYWATCH_WORKER_ID`, one server). Worker A owns partitions 0 and 1, B owns 2. A dies without
warning after writing batches past its last snapshot; B is assigned everything, restores A's
partition snapshots, re-reads from A's committed offsets and goes on. Every event is stored
once and the key-theft alerts equal a single-core replay. (A real two-process version needs a
ClickHouse server both can reach; chDB allows one process per data path.)
"""

from __future__ import annotations


import pytest

from keywatch.models.registry import build_core
from keywatch.simulate import SimConfig, generate, ground_truth
from keywatch.stream.decode import EventDecoder, Origin
from keywatch.stream.produce import partition_of

from stream_helpers import TOPIC, pipeline_messages as _messages, pipeline_worker as _worker, run_batches as _run

@pytest.mark.parametrize("forked", [False, True], ids=["inline", "forked"])
def test_partition_moves_with_its_state_when_a_worker_dies(ch_db, tmp_path, forked):
    """Forked: A's last snapshot is taken by a child (stream/snapfork.py) while A goes on
    detecting and writing; it is stored only after that, and still holds the state of the fork."""
    client, settings = ch_db
    db = settings.clickhouse_database
    cfg = SimConfig(keys=6, projects=2, days=1.0, seed=3, incidents=["loud_burst"], warmup_days=0.5)
    events = list(generate(cfg))
    msgs = _messages(events)
    parts = {m.partition for m in msgs}
    attacked = partition_of(ground_truth(cfg)[0]["key_id"].encode(), 3)
    a_parts, b_parts = {attacked}, parts - {attacked}  # the attacked key's partition moves
    assert b_parts
    a_keys = {e["key_id"] for e in events if e.get("key_id") and partition_of(e["key_id"].encode(), 3) in a_parts}
    a, b = _worker(client, settings), _worker(client, settings)
    a.assign(a_parts)
    b.assign(b_parts)
    mine = lambda ps, ms: [m for m in ms if m.partition in ps]  # noqa: E731
    cut, more = int(len(msgs) * 0.55), int(len(msgs) * 0.6)
    _run(a, mine(a_parts, msgs[:cut]))
    snap = a.snapshot_start(tmp_path) if forked else a.snapshot()  # then A acks: its committed offsets are these
    at_snapshot = {k: a.cores.describe_key(k) for k in a_keys}
    committed = {k: o for k, o in a.in_state.items()}
    _run(a, mine(a_parts, msgs[cut:more]))  # written, never snapshotted: A is killed here
    if forked:
        assert a.dirty == a_parts  # … the next snapshot would cover these batches
        assert a.snapshot_finish(snap) > 0 and snap.seconds > 0
    _run(b, mine(b_parts, msgs[:more]))
    b.revoke(b_parts)  # eager rebalance: B gives up what it had, then gets everything
    b.assign(parts)
    assert {p for p in b.cores.cores} == parts
    # restored cores use B's one cross-key key-theft state (populations, window model, chains)
    assert len({id(c.detector("key_theft").model) for c in b.cores.cores.values()}) == 1
    # B now holds A's per-key state exactly as A's last snapshot had it
    assert {k: b.cores.describe_key(k) for k in a_keys} == at_snapshot
    assert any(v.get("key_theft") for v in at_snapshot.values())
    reread = [m for m in msgs if m.partition in b_parts or m.offset > committed.get(m.key, -1)]
    _run(b, [m for m in reread if m.partition in a_parts or msgs.index(m) >= more])
    usage, theft = (client.query(q).result_rows for q in (
        f"SELECT count(), uniqExact(event_id) FROM {db}.usage_events",
        f"SELECT alert_id FROM {db}.alerts FINAL WHERE kind = 'key_theft' ORDER BY alert_id"))
    total = sum(1 for e in events if e.get("kind", "usage") == "usage")
    assert usage == [(total, total)]
    ref = build_core(settings)
    dec = EventDecoder.from_settings(settings, streaming=False)
    expected = set()
    for m in msgs:
        ok, _ = dec.decode(m.value, Origin(TOPIC, m.partition, m.offset))
        expected |= {a.alert_id for a in ref.process(ok).alerts if a.kind == "key_theft"}
    assert expected and [r[0] for r in theft] == sorted(expected)
    # the facade the HTTP API reads spans every partition core
    assert b.cores.describe_key(events[0]["key_id"])["key_id"] == events[0]["key_id"]


def test_slow_snapshots_are_spaced_to_a_share_of_the_time(ch_db):
    """A snapshot stops detection while it is taken: periodic ones wait 9× their own duration
    (KEYWATCH_SNAPSHOT_MAX_SHARE 0.1) when that is longer than KEYWATCH_SNAPSHOT_INTERVAL_S."""
    import time

    client, settings = ch_db
    pipe = _worker(client, settings)
    pipe.assign({0, 1, 2})
    cfg = SimConfig(keys=30, projects=3, days=0.5, seed=4, incidents=[], warmup_days=0.2)
    _run(pipe, _messages(list(generate(cfg))), batch=50)
    assert pipe.snapshot() > 0
    took = pipe.snapshot_seconds
    assert took > 0
    interval = took  # shorter than 9 × took: the share decides
    pipe.last_snapshot = time.monotonic() - 5 * took
    assert not pipe.snapshot_due(interval)
    pipe.last_snapshot = time.monotonic() - 9.5 * took
    assert pipe.snapshot_due(interval)
    pipe.last_snapshot = time.monotonic() - 9.5 * took  # a longer interval still holds it back
    assert not pipe.snapshot_due(20 * took)


def test_usage_rows_say_which_message_they_came_from(ch_db):
    """The pipeline stamps each usage event with its message's partition and offset as it decodes
    it (the offset travels with the data); the row says so, whatever the producer put in those
    fields, and a duplicate re-sent in a later message keeps the row of its first copy."""
    from keywatch.stream.pipeline import Msg
    import orjson

    client, settings = ch_db
    pipe = _worker(client, settings)
    ev = lambda i, **kw: {"kind": "usage", "event_id": f"e{i}", "ts": 1795622400000 + i, "provider": "openai",  # noqa: E731
                          "key_id": "k1", "model": "gpt-4o-mini", **kw}
    msgs = [Msg(TOPIC, 2, 7, orjson.dumps([ev(1), ev(2, kafka_partition="p9", kafka_offset=99)])),
            Msg(TOPIC, 2, 8, orjson.dumps([ev(3), ev(1)])),  # e1 again, in a later message
            Msg(TOPIC, 0, 4, orjson.dumps([{"kind": "audit", "event_id": "a1", "ts": 1795622400005,
                                            "provider": "openai", "key_id": "k1", "action": "CreateKey"}, ev(4)]))]
    pipe.assign({0, 2})
    pipe.write(pipe.process(msgs))
    rows = dict(client.query(f"SELECT event_id, (kafka_partition, kafka_offset) FROM {settings.clickhouse_database}.usage_events").result_rows)
    assert rows == {"e1": (2, 7), "e2": (2, 7), "e3": (2, 8), "e4": (0, 4)}
