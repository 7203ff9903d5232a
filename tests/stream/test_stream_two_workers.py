"""Two worker processes in one consumer group, one killed with -9 (issue 9's handoff fault test).

A real embedded Tansu broker, `keywatch db serve` (the embedded chDB shared over ClickHouse's
HTTP interface) and two `keywatch worker` subprocesses with the same `KEYWATCH_WORKER_ID`, both
on `KEYWATCH_CLICKHOUSE_DSN=http://…`, reading a 4-partition topic. The worker that owns the
attacked key's partition is killed mid-stream, before the attack; the stream goes on. The
survivor takes over its partitions *with their per-key detector state* (restored from the
killed worker's partition snapshots, reported in the status file's `restores`), stores every
event once, and raises the same key-theft alerts (ids) and the same per-key incidents (kind, key,
start) as one `keywatch replay` of the same events.

Project-level alerts (the worker-wide global core: project cost spikes, budgets, …) are only
checked for duplicates: with several workers they are judged per worker share and do not move
with a partition (docs/operations.md, "Caveat with several workers"), and a key-level cost
spike's id depends on how the partitions were interleaved, so it is compared by incident.
The in-process version of this test is tests/stream/test_stream_partitions.py. Marked `integration`.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import time

import clickhouse_connect
import orjson
import pytest
from kafka.partitioner.default import murmur2

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, generate, ground_truth
from keywatch.sinks.chserver import ServerProcess
from keywatch.sinks.migrate import migrate, migration_params
from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.decode import EventDecoder
from keywatch.stream.produce import partition_messages, produce_events

from stream_helpers import end_offsets  # noqa: E402

pytestmark = pytest.mark.integration
PARTITIONS = 4


def _complete_ends(bootstrap: str, topic: str, messages: int, tail: list[dict]) -> dict[str, int]:
    """End offsets once the broker holds every produced message (it can lag the producer's acks;
    if it still lacks some, the tail is sent again: event ids are deduplicated)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ends = end_offsets(bootstrap, topic, PARTITIONS)
        if sum(o + 1 for o in ends.values()) >= messages:
            return ends
        time.sleep(0.2)
    produce_events(bootstrap, topic, tail, batch_size=10)
    return end_offsets(bootstrap, topic, PARTITIONS)


def _snapshot_offset(client, db: str, topic: str, p: int) -> int:
    """Input offset held by partition `p`'s latest snapshot (-1: none)."""
    rows = client.query(f"SELECT argMax(offsets, taken_at) FROM {db}.detector_snapshots WHERE scope = {{s:String}}",
                        parameters={"s": f"p:{topic}:{p}"}).result_rows
    return orjson.loads(rows[0][0] or "{}").get(f"{topic}:{p}", -1)


def test_two_workers_one_killed_its_partitions_move_with_their_state(worker_factory, broker, tmp_path):
    cfg = SimConfig(keys=10, projects=2, days=1.0, seed=5, incidents=["loud_burst"], warmup_days=0.5)
    evs = list(generate(cfg))
    truth = ground_truth(cfg)[0]
    attack_at = next(i for i, e in enumerate(evs) if e["event_id"] == truth["first_event_id"])
    cut = attack_at - 1500  # the kill comes before the attack: the survivor must use the victim's state
    attacked_p = (murmur2(truth["key_id"].encode()) & 0x7FFFFFFF) % PARTITIONS
    with ServerProcess(tmp_path / "chdb", env={k: v for k, v in os.environ.items() if not k.startswith("KEYWATCH_")},
                       log_file=tmp_path / "serve.log") as srv:
        workers = []
        for name in ("w1", "w2"):  # same topics and KEYWATCH_WORKER_ID (one group), own data dirs
            w = worker_factory(CLICKHOUSE_DSN=srv.dsn, TOPIC_PARTITIONS=PARTITIONS, BATCH_MAX_MESSAGES=5,
                               BATCH_MAX_SECONDS=0.05)
            w.data_dir, w.log = tmp_path / name, tmp_path / f"{name}.log"
            w.data_dir.mkdir()
            w.env["KEYWATCH_DATA_DIR"] = str(w.data_dir)
            w.env["KEYWATCH_WORKER_INSTANCE"] = name  # each its own project-level snapshot
            workers.append(w)
        s = Settings.from_env(workers[0].env)
        db, topic = s.clickhouse_database, s.input_topic
        ensure_topics(broker.bootstrap, topic_specs(s))
        client = clickhouse_connect.get_client(dsn=srv.dsn)
        migrate(client, migration_params(s))  # once, before two workers start
        for w in workers:
            w.start()

        def split(_st=None) -> bool:  # both workers hold partitions, together all of them, disjoint
            a, b = (set(w.status().get("partitions") or ()) for w in workers)
            return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

        workers[0].wait(lambda st: st.get("ready") and workers[1].status().get("ready") and split(), timeout=90)
        victim = next(w for w in workers if attacked_p in w.status()["partitions"])
        survivor = next(w for w in workers if w is not victim)
        victim_parts = set(victim.status()["partitions"])

        phase1, phase2 = evs[:cut], evs[cut:]
        produce_events(broker.bootstrap, topic, phase1, batch_size=10)
        key = f"{topic}:{attacked_p}"
        # wait until the victim processed and snapshotted part of its partitions, then kill it
        victim.wait(lambda st: st.get("snapshots", 0) >= 1 and st.get("offsets", {}).get(key, -1) >= 40
                    and _snapshot_offset(client, db, topic, attacked_p) >= 40, timeout=90)
        time.sleep(random.Random(9).random() * 0.3)
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.time()
        # the survivor never processed the victim's partitions: their snapshots are the victim's
        assert not {f"{topic}:{p}" for p in victim_parts} & set(survivor.status().get("offsets", {}))
        snaps = {p: _snapshot_offset(client, db, topic, p) for p in victim_parts}

        produce_events(broker.bootstrap, topic, phase2, batch_size=10)  # the stream goes on
        n_msgs = len(list(partition_messages(phase1, 10, PARTITIONS))) + len(list(partition_messages(phase2, 10, PARTITIONS)))
        ends = _complete_ends(broker.bootstrap, topic, n_msgs, phase2[-200:])
        st = survivor.wait(lambda st: all(st.get("offsets", {}).get(k, -1) >= o for k, o in ends.items()), timeout=120)
        assert set(st["partitions"]) == set(range(PARTITIONS))
        assert survivor.stop() == 0

        # the victim's partitions were taken over with the state of its last snapshots
        taken: dict[int, dict] = {}
        for r in st["restores"]:
            if r["at"] >= killed_at and r["partition"] in victim_parts:
                taken.setdefault(r["partition"], r)
        assert set(taken) == victim_parts, st["restores"]
        for p, r in taken.items():  # (a snapshot the victim sent just before it died may land later)
            assert r["source"] in (("snapshot",) if snaps[p] >= 0 else ("snapshot", "new")), (p, r, snaps)
            assert r["offset"] >= snaps[p], (p, r, snaps)
        assert taken[attacked_p]["offset"] >= 40
        total = sum(1 for e in evs if e.get("kind", "usage") == "usage")
        assert st["events_in"] < total  # the survivor did not re-read the victim's partitions from 0

        usage, part, alerts = (client.query(q).result_rows for q in (
            f"SELECT count(), uniqExact(event_id) FROM {db}.usage_events",
            f"SELECT DISTINCT kafka_partition FROM {db}.usage_events WHERE key_id = '{truth['key_id']}'",
            f"SELECT alert_id, kind, key_id, toUnixTimestamp64Milli(started_at) FROM {db}.alerts FINAL"))
        g_scopes = {r[0] for r in client.query(f"SELECT DISTINCT scope FROM {db}.detector_snapshots WHERE scope LIKE 'g:%'").result_rows}
    assert usage == [(total, total)]  # every event exactly once
    assert g_scopes and g_scopes <= {f"g:{topic}:w1", f"g:{topic}:w2"}  # one project-level snapshot per worker
    assert part == [(attacked_p,)]
    assert len({r[0] for r in alerts}) == len(alerts) > 0  # no alert duplicated
    src, out = tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs))
    replay([src], out, build_core(s), EventDecoder.from_settings(s, streaming=False), chunk_lines=100)
    ref = [a for a in map(orjson.loads, out.read_bytes().splitlines()) if a.get("key_id")]  # per-key alerts
    assert ("key_theft", truth["key_id"]) in {(a["kind"], a["key_id"]) for a in ref}
    # every per-key alert (key theft, key-level cost spikes) has the replay's id: none lost, none extra
    assert sorted(a for a, _, key, _ in alerts if key) == sorted(a["alert_id"] for a in ref)
    started = lambda a: int(dt.datetime.fromisoformat(a["started_at"].replace("Z", "+00:00")).timestamp() * 1000)  # noqa: E731
    assert sorted((k, key, t) for _, k, key, t in alerts if key) == sorted((a["kind"], a["key_id"], started(a)) for a in ref)
