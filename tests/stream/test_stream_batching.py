"""Integration: the worker's batches are bounded by messages *and* bytes (stream/take.py).

A real `keywatch worker` on the embedded broker with small limits and a backlog (everything is
produced before it starts, so batches fill at once): one-event messages fill batches up to the
message limit, ten- and hundred-event messages are held to the byte budget (a message bigger
than the budget is a batch of its own), and nothing is lost or stored twice on the way.
"""

from __future__ import annotations

import orjson
import pytest

from keywatch.stream.produce import EventProducer

from stream_helpers import end_offsets, prepare

pytestmark = pytest.mark.integration

MAX_MESSAGES, MAX_BYTES = 40, 16_000


def test_batches_stay_within_message_and_byte_limits(worker_factory, broker, events):
    w = worker_factory(BATCH_MAX_MESSAGES=MAX_MESSAGES, BATCH_MAX_BYTES=MAX_BYTES, BATCH_MAX_SECONDS=0.5,
                       TOPIC_PARTITIONS=1)
    s = prepare(w)
    evs = events(1600)
    values = [orjson.dumps(e) for e in evs[:600]]  # ~250 B: 40 of them are well under the budget
    values += [orjson.dumps(evs[i:i + 10]) for i in range(600, 1000, 10)]  # ~2.5 KB: the budget binds
    values += [orjson.dumps(evs[i:i + 100]) for i in range(1000, 1600, 100)]  # ~25 KB: over it alone
    assert MAX_MESSAGES * max(map(len, values[:600])) < MAX_BYTES < min(map(len, values[-6:]))
    with EventProducer(broker.bootstrap, s.input_topic) as p:
        for v in values:
            p.send_raw(v)
    ends = end_offsets(broker.bootstrap, s.input_topic, s.topic_partitions)
    w.start()
    st = w.wait(lambda st: all(st.get("offsets", {}).get(k, -1) >= o for k, o in ends.items()), timeout=120)
    assert w.stop() == 0
    top = st["largest_batch"]
    assert top["messages"] == MAX_MESSAGES  # filled up to the message limit, never past it
    # Under the budget until the message that crossed it: at most budget + one message.
    assert top["bytes"] < MAX_BYTES + max(map(len, values))
    assert st["batches"] >= 600 // MAX_MESSAGES + 6  # every 25 KB message closed a batch
    stored, = w.query(f"SELECT count(), uniqExact(event_id) FROM {s.clickhouse_database}.usage_events")
    assert stored == [[1600, 1600]]
