"""`keywatch worker --processes 4`, keys placed one by one, on a real broker and the embedded chDB:
the four workers share key theft's project populations (stream/popshare.py) and raise
`keywatch replay`'s key-theft alerts on a stream with an attack on a new key and a benign new key.

Without the sharing (`KEYWATCH_POPULATION_SHARE_S=0`) the same run missed the attack and
flagged the benign new key four times: each worker knew only a quarter of the new key's project
(the one-off run behind this test; tests/keytheft/test_partition_shared_state.py has that control
in the worker layout without Kafka). The stream is paced (1,500 events/s, ≈ 30 s) so that event
time advances between the workers' exchanges, as in live traffic. Marked `integration`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.procs import stop_process
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, generate, ground_truth
from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.decode import EventDecoder
from keywatch.stream.launcher import status_files
from keywatch.stream.produce import EventProducer, paced
from keywatch.stream.status import StatusFile

pytestmark = pytest.mark.integration
CFG = SimConfig(keys=30, projects=6, days=2.0, seed=5, warmup_days=1.0)  # as test_partition_shared_state.py


def _statuses(w) -> dict[str, dict]:
    return {name: StatusFile.read(p) for name, p in status_files(w.data_dir).items()}


def _wait(w, proc, pred, what: str, log, timeout: float = 120.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = _statuses(w)
        if pred(sts):
            return sts
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{what}: {sts}")


def test_four_workers_placed_by_key_raise_replays_key_theft_alerts(worker_factory, broker, tmp_path):
    events = list(generate(CFG))
    truth = {t["type"]: t["key_id"] for t in ground_truth(CFG)}
    w = worker_factory(TOPIC_PARTITIONS=4, POPULATION_SHARE_S=0.2, BATCH_MAX_SECONDS=0.05, SNAPSHOT_INTERVAL_S=2)
    s = Settings.from_env(w.env)
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    replay([src], tmp_path / "alerts.jsonl", build_core(s), EventDecoder.from_settings(s, streaming=False))
    ref = {a["alert_id"]: a["key_id"] for a in map(orjson.loads, (tmp_path / "alerts.jsonl").read_bytes().splitlines())
           if a["kind"] == "key_theft"}
    assert truth["new_key_abuse"] in ref.values() and truth["benign_new_key"] not in ref.values()

    ensure_topics(broker.bootstrap, topic_specs(s))
    log = tmp_path / "launcher.log"
    proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING", "--processes", "4"],
                            env=w.env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    try:
        _wait(w, proc, lambda sts: len(sts) == 4 and all(st.get("ready") and st.get("partitions") for st in sts.values()),
              "four workers with a partition each", log)
        with EventProducer(broker.bootstrap, s.input_topic) as producer:
            for chunk in paced(events, 1500, chunk=50):
                producer.send_events(chunk, 25)
        _wait(w, proc, lambda sts: sum(StatusFile.handled(st) for st in sts.values()) >= len(events),
                    "every event handled", log)
    finally:
        code = stop_process(proc, signal.SIGTERM, grace=120)
    assert code == 0, log.read_text()[-3000:]
    shared = [st.get("populations") or {} for st in _statuses(w).values()]
    assert all(c.get("sent", 0) >= 1 and c.get("merged", 0) >= 1 for c in shared), shared

    [got] = w.query(f"SELECT alert_id, key_id FROM {s.clickhouse_database}.alerts FINAL WHERE kind = 'key_theft'")
    assert dict(got) == ref, sorted(set(map(tuple, got)) ^ set(ref.items()))
