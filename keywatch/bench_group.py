"""`keywatch bench`'s scale-out rows: `keywatch worker --processes N [--split-tiers]` on one topic.

The launcher (stream/launcher.py) runs N workers in one consumer group, sharing the embedded
chDB through `keywatch db serve`, and with ``--split-tiers`` one more worker for the
project-level detectors. Rate = events / (first batch start of any worker → last batch end of
any worker), from the children's status files; the run ends when the `keys`/`all` workers
together — and the `projects` worker alone — have handled every event. CPU is the workers'
(every thread, over the same span as the rate); `db serve`'s is reported apart, over its whole
life (start-up and migrations included: an upper bound), and the broker's by the bench
(`BrokerMeter`). Alerts are counted once the last project-level events have been released
(`wait_released`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from keywatch.procs import child_pids, cpu_seconds, stop_process
from keywatch.stream.launcher import status_files
from keywatch.stream.status import StatusFile


def run_group_bench(bootstrap: str, topic: str, n: int, data_dir: Path, processes: int, split_tiers: bool,
                    timeout: float = 900) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "KEYWATCH_CLICKHOUSE_DSN"}  # embedded: shared via db serve
    env.update({"KEYWATCH_DATA_DIR": str(data_dir), "KEYWATCH_INPUT_TOPIC": topic, "KEYWATCH_WEB_PORT": "0",
                "KEYWATCH_WORKER_ID": f"bench-{uuid.uuid4().hex[:6]}", "KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S": "1.5"})
    cmd = [sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING", "--bootstrap", bootstrap,
           "--processes", str(processes)] + (["--split-tiers"] if split_tiers else [])
    with open(data_dir / "launcher.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sts = _wait(proc, data_dir, n, timeout)  # rate and CPU up to the batches that complete the input
        serve_cpu = _serve_cpu(proc.pid)
        wait_released(proc, list(status_files(data_dir).values()))  # the last project-level alerts
    finally:
        stop_process(proc, grace=150)
    final = {name: StatusFile.read(p) for name, p in status_files(data_dir).items()}
    ran = [st for st in sts.values() if st.get("first_batch_at")]
    first, last = min(st["first_batch_at"] for st in ran), max(st["last_batch_at"] for st in ran)
    secs = max(1e-6, last - first)
    cpu = sum(st["last_batch_cpu"] - st["first_batch_cpu"] for st in ran)
    return {"events": n, "seconds": round(secs, 3), "events_per_s": round(n / secs, 1), "processes": processes,
            "split_tiers": split_tiers, "alerts": sum(st.get("alerts", 0) for st in final.values()),
            "per_worker": {name: {"tier": st.get("tier"), "events": st.get("events_in", 0), "batches": st.get("batches", 0),
                                  "cpu_us_per_event": round(1e6 * (st["last_batch_cpu"] - st["first_batch_cpu"])
                                                            / max(1, st.get("events_in", 0)), 1) if st.get("first_batch_at") else None}
                           for name, st in sts.items()},
            "cpu_s": round(cpu, 3), "cpu_us_per_event": round(1e6 * cpu / max(1, n), 1), "cores": round(cpu / secs, 2),
            # `db serve`'s whole life (start-up and migrations included): an upper bound per event
            "db_serve_cpu_s": round(serve_cpu, 3) if serve_cpu is not None else None,
            "db_serve_cpu_us_per_event": round(1e6 * serve_cpu / max(1, n), 1) if serve_cpu else None}


def wait_released(proc: subprocess.Popen, status_paths: list[Path], timeout: float = 120) -> None:
    """Once the input has ended, project-level events still wait for partitions that could
    send more (`EventTimeOrder`), until those have been idle `KEYWATCH_GLOBAL_ORDER_IDLE_S`:
    wait for that release, so that a run's alerts are all of its alerts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(StatusFile.read(p).get("project_level_waiting", 0) == 0 for p in status_paths):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode} before releasing its project-level events")
        time.sleep(0.1)
    raise RuntimeError(f"project-level events still waiting after {timeout:.0f} s: {status_paths}")


def _serve_cpu(launcher_pid: int) -> float | None:
    """CPU seconds so far of the launcher's `db serve` child."""
    for pid in child_pids(launcher_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"serve" in f.read():
                    return cpu_seconds(pid)
        except OSError:
            continue
    return None


def _wait(proc: subprocess.Popen, data_dir: Path, n: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = {name: StatusFile.read(p) for name, p in status_files(data_dir).items()}
        keys = sum(StatusFile.handled(st) for st in sts.values() if st.get("tier") != "projects")
        projects = [StatusFile.handled(st) for st in sts.values() if st.get("tier") == "projects"]
        if keys >= n and all(x >= n for x in projects):
            return sts
        if proc.poll() is not None:
            raise RuntimeError(f"worker group exited {proc.returncode}; see {data_dir}/launcher.log and workers/*/worker.log")
        time.sleep(0.1)
    raise RuntimeError(f"worker group did not handle {n} events in {timeout:.0f} s; see {data_dir}")
