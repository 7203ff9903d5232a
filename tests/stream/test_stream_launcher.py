"""`keywatch worker --processes 2 --split-tiers` on a real broker and the embedded chDB.

The launcher starts `keywatch db serve` on the embedded path, two `keys` workers (one group)
and one `projects` worker (group `<id>-projects`). A simulated stream with a key theft, a
runaway loop and daily budgets, one event per message, plus a bad message: every event is
stored once, the dead letter once (and published once), and the alerts — key-level from the
`keys` workers, project-level and budgets from the `projects` worker — are replay's; the `keys`
workers share their key-theft project populations (stream/popshare.py). SIGTERM
stops the group cleanly (exit 0), after which the database is the launcher's embedded one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.procs import child_pids, stop_process
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, generate
from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.decode import EventDecoder
from keywatch.stream.launcher import status_files
from keywatch.stream.produce import produce_events
from keywatch.stream.status import StatusFile
from stream_helpers import end_offsets

pytestmark = pytest.mark.integration


def test_split_tiers_launcher_equals_replay(worker_factory, broker, tmp_path):
    cfg = SimConfig(keys=9, projects=2, days=1.2, seed=5, incidents=["runaway_loop", "loud_burst"], warmup_days=0.9)
    events = list(generate(cfg))
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets:\n" + "".join(f"  - {{project: {p}, amount_usd: 2, period: day}}\n"
                                              for p in sorted({e["project"] for e in events})))
    w = worker_factory(BUDGETS_FILE=budgets, BATCH_MAX_SECONDS=0.05, GLOBAL_ORDER_IDLE_S=1, POPULATION_SHARE_S=0.5)
    s = Settings.from_env(w.env)
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    replay([src], tmp_path / "alerts.jsonl", build_core(s), EventDecoder.from_settings(s, streaming=False))
    ref = {a["alert_id"]: a["kind"] for a in map(orjson.loads, (tmp_path / "alerts.jsonl").read_bytes().splitlines())}
    want = {i for i, k in ref.items() if k != "telemetry_health"}
    assert {"key_theft", "cost_spike", "budget"} <= set(ref.values())

    ensure_topics(broker.bootstrap, topic_specs(s))
    produce_events(broker.bootstrap, s.input_topic, events, batch_size=1)
    produce_events(broker.bootstrap, s.input_topic, [{"kind": "usage", "event_id": "bad", "ts": "never"}], batch_size=1)
    proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING",
                             "--processes", "2", "--split-tiers"], env=w.env,
                            stdout=open(tmp_path / "launcher.log", "ab"), stderr=subprocess.STDOUT)
    try:
        deadline, n = time.monotonic() + 240, len(events) + 1
        while time.monotonic() < deadline:
            sts = {name: StatusFile.read(p) for name, p in status_files(w.data_dir).items()}
            tiers = sorted(st.get("tier") or "" for st in sts.values())
            keys = sum(StatusFile.handled(st) for st in sts.values() if st.get("tier") == "keys")
            proj = [StatusFile.handled(st) for st in sts.values() if st.get("tier") == "projects"]
            if tiers == ["keys", "keys", "projects"] and keys >= n and proj == [n]:
                break
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError(f"not every event handled: {sts}")
        # both `keys` workers got partitions; the `projects` worker all of them
        parts = {name: set(st.get("partitions") or ()) for name, st in sts.items()}
        assert parts["w0"] and parts["w1"] and parts["projects"] == set(range(s.topic_partitions))
        assert sts["projects"]["group"] == s.worker_id + "-projects"
        time.sleep(3 * s.global_order_idle_s + 1)  # the stream's tail leaves the project-level order
    finally:
        code = stop_process(proc, signal.SIGTERM, grace=150)
    assert code == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    # the two `keys` workers told each other what their project populations learned
    sts = {name: StatusFile.read(p) for name, p in status_files(w.data_dir).items()}
    shared = {name: st.get("populations") or {} for name, st in sts.items() if st.get("tier") == "keys"}
    assert len(shared) == 2 and all(c.get("sent", 0) >= 1 and c.get("merged", 0) >= 1 for c in shared.values()), shared
    assert "populations" not in sts["projects"]  # no key theft there: nothing to share

    usage, dead, alerts = w.query(
        f"SELECT count(), uniqExact(event_id) FROM {s.clickhouse_database}.usage_events",
        f"SELECT count() FROM {s.clickhouse_database}.dead_letters",
        f"SELECT alert_id, kind FROM {s.clickhouse_database}.alerts FINAL")
    assert usage == [[len(events), len(events)]] and dead == [[1]]
    got = {a for a, k in alerts if k != "telemetry_health"}
    assert got == want, (sorted((ref.get(a), a) for a in got ^ want))
    assert end_offsets(broker.bootstrap, s.dlq_topic, 1) == {f"{s.dlq_topic}:0": 0}  # published once


def test_a_worker_that_dies_stops_the_group(worker_factory, tmp_path):
    """A child killed with -9: the launcher stops the other worker and `db serve`, and exits
    non-zero so that its own supervisor restarts the group."""
    w = worker_factory()
    proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING", "--processes", "2"],
                            env=w.env, stdout=open(tmp_path / "launcher.log", "ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sts = {name: StatusFile.read(p) for name, p in status_files(w.data_dir).items()}
            if len(sts) == 2 and all(st.get("ready") and st.get("pid") for st in sts.values()):
                break
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError(f"workers not ready: {sts}")
        pids = {name: st["pid"] for name, st in sts.items()}
        serve = [p for p in child_pids(proc.pid) if b"serve" in _cmdline(p)]
        assert len(serve) == 1
        os.kill(pids["w1"], signal.SIGKILL)
        assert proc.wait(150) == 128 + signal.SIGKILL
    finally:
        stop_process(proc, signal.SIGKILL, grace=5)
    for pid in [pids["w0"], *serve]:  # nothing left running
        assert not _alive(pid), pid
    assert "worker w1 exited with -9" in (tmp_path / "launcher.log").read_text()


def test_a_launcher_killed_with_9_leaves_no_orphans(worker_factory, tmp_path):
    """The workers and `db serve` run in their own sessions (a terminal's Ctrl-C reaches the
    launcher alone, which stops them in order) and get SIGTERM when the launcher dies."""
    w = worker_factory()
    proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING", "--processes", "2"],
                            env=w.env, stdout=open(tmp_path / "launcher.log", "ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(child_pids(proc.pid)) < 3:
            time.sleep(0.2)
        kids = child_pids(proc.pid)
        assert len(kids) == 3, kids  # db serve + two workers
        assert all(os.getsid(k) == k for k in kids)  # each leads its own session
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
