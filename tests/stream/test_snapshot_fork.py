"""Snapshots taken by a forked child (stream/snapfork.py), in process on one real chDB.

The child must store exactly the state of the instant it was forked — byte for byte what the
worker would have pickled then — even while the worker goes on detecting; a child that fails
stores nothing and leaves its partitions to the next snapshot; files of dead workers' children
are cleaned up.
"""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest

from keywatch.simulate import SimConfig, generate
from keywatch.stream.partitions import global_scope, scope_for
from keywatch.stream.snapfork import PREFIX, SnapshotChildError, remove_stale

from stream_helpers import TOPIC, pipeline_messages, pipeline_worker, run_batches

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _digest(core) -> str:  # as `StreamState.snapshot_row` records it
    return hashlib.sha256(pickle.dumps(core, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()[:16]


def _pipeline(ch_db):
    client, settings = ch_db
    pipe = pipeline_worker(client, settings, global_core=True)
    pipe.assign({0, 1, 2})
    cfg = SimConfig(keys=12, projects=2, days=0.5, seed=5, incidents=["loud_burst"], warmup_days=0.2)
    msgs = pipeline_messages(list(generate(cfg)))
    return client, settings.clickhouse_database, pipe, msgs


def test_forked_snapshot_stores_the_state_of_the_fork_while_detection_goes_on(ch_db, tmp_path):
    client, db, pipe, msgs = _pipeline(ch_db)
    half = len(msgs) // 2
    run_batches(pipe, msgs[:half], batch=20)
    written = set(pipe.dirty)
    at_fork = {scope_for(TOPIC, p): _digest(c) for p, c in pipe.cores.cores.items()}
    at_fork[global_scope(TOPIC)] = _digest(pipe.cores.global_core)
    one = min(written)
    copy_at_fork = pickle.loads(pickle.dumps(pipe.cores.cores[one], protocol=pickle.HIGHEST_PROTOCOL))
    offsets_at_fork = dict(pipe.in_state)
    snap = pipe.snapshot_start(tmp_path)
    assert snap is not None and not pipe.dirty and snap.partitions == written
    run_batches(pipe, msgs[half:], batch=20)  # the worker goes on while the child pickles
    assert pipe.in_state != offsets_at_fork and pipe.dirty
    size = pipe.snapshot_finish(snap)
    rows = client.query(f"SELECT scope, digest, offsets, size_bytes FROM {db}.detector_snapshots ORDER BY taken_at, scope").result_rows
    # the global core first (as `snapshot` orders them), then one row per written partition
    assert snap.scopes[0] == global_scope(TOPIC) and sorted(snap.scopes[1:]) == sorted(scope_for(TOPIC, p) for p in written)
    assert {r[0]: r[1] for r in rows} == at_fork  # byte-identical to pickling at the fork
    assert size == sum(r[3] for r in rows) > 0
    for p in written:
        assert pipe.state.snapshot_offsets(scope_for(TOPIC, p)) == {f"{TOPIC}:{p}": offsets_at_fork[f"{TOPIC}:{p}"]}
    restored, _ = pipe.state.load_snapshot(scope_for(TOPIC, one))
    assert _digest(restored) == _digest(copy_at_fork)  # (a restored core re-pickles a little differently)
    assert not list(tmp_path.glob(PREFIX + "*"))  # the child's file is gone once read
    # Stored after the later batches, it is still older than the next snapshot of the state
    pipe.snapshot()
    latest = pipe.state.snapshot_offsets(scope_for(TOPIC, one))
    assert latest == {f"{TOPIC}:{one}": pipe.in_state[f"{TOPIC}:{one}"]}


def test_a_failed_child_stores_nothing_and_its_partitions_stay_dirty(ch_db, tmp_path):
    client, db, pipe, msgs = _pipeline(ch_db)
    run_batches(pipe, msgs[:40], batch=20)
    written = set(pipe.dirty)
    pipe.cores.cores[min(written)].unpicklable = lambda: None  # pickling this core fails
    snap = pipe.snapshot_start(tmp_path)
    with pytest.raises(SnapshotChildError, match="(?s)exited with 1:.*Can.t pickle"):
        pipe.snapshot_finish(snap)
    assert pipe.dirty == written  # the next snapshot covers them
    assert client.query(f"SELECT count() FROM {db}.detector_snapshots").result_rows == [(0,)]
    assert not list(tmp_path.glob(PREFIX + "*"))
    del pipe.cores.cores[min(written)].unpicklable
    assert pipe.snapshot_finish(pipe.snapshot_start(tmp_path)) > 0


def test_files_of_dead_workers_children_are_removed(tmp_path):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{PREFIX}{gone.stdout.strip()}-1-2.json"
    alive = tmp_path / f"{PREFIX}{os.getpid()}-1-2.part"
    for f in (dead, alive):
        f.write_text("[]")
    assert remove_stale(tmp_path) == 1
    assert not dead.exists() and alive.exists()


@pytest.mark.integration
def test_worker_goes_on_while_a_slow_snapshot_runs_and_a_crash_then_loses_nothing(worker_factory, broker, events):
    """A real worker whose snapshot child takes 6 s (KEYWATCH_CHAOS_SNAPSHOT_DELAY_S, as if the
    state were big): batches keep being stored meanwhile and nothing is acked; killed then, the
    child dies with it, and the next worker re-reads and stores every event once."""
    import signal
    import time

    from keywatch.stream.produce import EventProducer

    from stream_helpers import prepare

    w = worker_factory(CHAOS_SNAPSHOT_DELAY_S=6, SNAPSHOT_FORK_MIN_S=0, TOPIC_PARTITIONS=1)
    s = prepare(w)
    evs = events(600)
    with EventProducer(broker.bootstrap, s.input_topic) as p:
        p.send_events(evs[:300], batch_size=10)
    w.start()
    st = w.wait(lambda st: st.get("snapshot_child") and st.get("events_in") == 300, timeout=90)
    child, stored_snapshots = st["snapshot_child"], st["snapshots"]
    with EventProducer(broker.bootstrap, s.input_topic) as p:
        p.send_events(evs[300:], batch_size=10)
    st = w.wait(lambda st: st.get("events_in") == 600, timeout=60)
    assert st["snapshot_child"] == child and st["snapshots"] == stored_snapshots  # stored while the child ran
    assert st["snapshot_stall_seconds"] < 1.0  # detection waited only for the fork
    w.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.1)
    assert not _running(child)  # it died with its worker (PR_SET_PDEATHSIG)
    w2 = worker_factory(SNAPSHOT_FORK_MIN_S=0, TOPIC_PARTITIONS=1).start()
    st = w2.wait(lambda st: st["events_in"] + st["redelivered_rows"] >= 600 and st.get("snapshot_bytes", 0) > 0, timeout=90)
    assert st["redelivered_rows"] == 600  # nothing was acked: all re-read, and found stored
    assert w2.stop() == 0
    stored, = w2.query(f"SELECT count(), uniqExact(event_id) FROM {s.clickhouse_database}.usage_events")
    assert stored == [[600, 600]]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has stopped
    except FileNotFoundError:
        return False
