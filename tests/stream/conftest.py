"""Fixtures for the streaming tests: a real embedded broker, worker subprocesses, chDB queries.

The worker owns its chDB path, and this pytest process may already hold another one (the
session fixture in tests/conftest.py), so the worker's database is always read from a separate
Python process, after the worker stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from keywatch.procs import stop_process
from keywatch.stream.broker import EmbeddedBroker
from keywatch.stream.status import StatusFile

_QUERY = """
import json, sys, clickhouse_connect
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print(json.dumps([c.query(q).result_rows for q in json.loads(sys.argv[2])], default=str))
"""


def make_events(n: int, keys: int = 7, prefix: str = "e", start_ms: int | None = None) -> list[dict]:
    """Minimal canonical usage events, time-ordered, a few minutes before now."""
    start = start_ms if start_ms is not None else int(time.time() * 1000) - 600_000
    return [{"kind": "usage", "event_id": f"{prefix}{i}", "ts": start + i * 10, "provider": "openai",
             "key_id": f"key_{i % keys}", "model": "gpt-4o-mini", "input_tokens": 100 + i % 50,
             "output_tokens": 20, "source_ip": f"10.0.{i % keys}.1", "country": "US"} for i in range(n)]


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


class WorkerProc:
    def __init__(self, env: dict[str, str], data_dir: Path, log: Path) -> None:
        self.env, self.data_dir, self.log = env, data_dir, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProc":
        (self.data_dir / "worker.status.json").unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING"],
                                     env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def status(self) -> dict:
        return StatusFile.read(self.data_dir / "worker.status.json")

    def wait(self, pred, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st and pred(st):
                return st
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timeout; status {self.status()}; log {self.log.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM) -> int:
        return stop_process(self.proc, sig) if self.proc is not None else 0

    def query(self, *sql: str) -> list:
        out = subprocess.run([sys.executable, "-c", _QUERY, str(self.data_dir / "chdb"), json.dumps(list(sql))],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def worker_factory(tmp_path, broker):
    """Builds worker subprocesses on the shared broker with their own topics and data dir."""
    made: list[WorkerProc] = []
    tag = uuid.uuid4().hex[:8]

    def make(**extra: str) -> WorkerProc:
        data_dir = tmp_path / "worker-data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWATCH_")}
        env.update({
            "KEYWATCH_DATA_DIR": str(data_dir), "KEYWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
            "KEYWATCH_INPUT_TOPIC": f"t{tag}.events", "KEYWATCH_DLQ_TOPIC": f"t{tag}.dlq",
            "KEYWATCH_ALERTS_TOPIC": f"t{tag}.alerts", "KEYWATCH_WORKER_ID": f"kw-test-{tag}",
            "KEYWATCH_POPULATION_TOPIC": f"t{tag}.populations",
            "KEYWATCH_WEB_PORT": "0", "KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S": "1.5",
            "KEYWATCH_SNAPSHOT_INTERVAL_S": "1", "KEYWATCH_TOPIC_PARTITIONS": "3",
        })
        env.update({f"KEYWATCH_{k.upper()}": str(v) for k, v in extra.items()})
        data_dir.mkdir(exist_ok=True)
        w = WorkerProc(env, data_dir, tmp_path / "worker.log")
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop(signal.SIGKILL)


@pytest.fixture
def events():
    """`make_events(n, keys=7, prefix="e", start_ms=None)`."""
    return make_events
