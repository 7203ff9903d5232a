"""`keywatch bench`: the streaming worker's figures, each next to its baseline, in one run.

On one embedded broker (issue 8):

* worker, batched — `keywatch worker` (child process, fresh chDB) over `events` events sent
  100 per message: consume + decode + detect + insert; rate = events stored / (last batch end −
  first batch start), from the worker's status file;
* worker, live event time — the batched run again with event time advancing at `LIVE_RATE`
  events/s, as in live traffic of that rate (the simulated stream spans days: a backlog);
  `live_runs` runs (3), alternating with the baseline's: the median run, its range and each;
* scale-out, live event time — the live run's topic again through `keywatch worker
  --processes 2` (two `all` workers in one group, project-level detection per worker share)
  and `--processes 2 --split-tiers` (two `keys` workers + one `projects` worker: exact), both
  sharing the embedded chDB through `keywatch db serve` (keywatch/bench_group.py); the live
  runs use `live_events` events (more than the batched run: group start-up and rebalancing
  weigh on short runs of several workers);
* worker, one event per message — the same over `single_events` events;
* baseline — raw aiokafka consume + orjson decode + chDB insert of raw rows of the batched
  topic, no detection (the ratio worker/baseline is the cost of detection and guarantees):
  the median of `live_runs` runs, one after the batched worker and one before each later live
  run (keywatch/bench_baseline.py says why); every ratio divides by that median;
* CPU per event of both — CPU seconds of the whole process (every thread, chDB's included)
  over the same span ÷ events, and cores busy (CPU ÷ wall): what capacity planning needs, and
  why a ratio is out of reach on a machine whose cores are already all busy; and the embedded
  broker's CPU per event over each run (`broker_cpu_us_per_event`: from the worker's start to
  its stop, so start-up and idle polls included — an upper bound), which shares those cores;
* latency — p50/p99 event-to-alert wall time under a paced load (keywatch/bench_latency.py);
* state and replay — `keywatch bench-core`'s figures (keywatch/bench_core.py): state bytes per key
  and peak RSS at `state_keys` keys, replay events/s of the default core; resident memory per key
  (keywatch/bench_memory.py) of `state_keys` new keys, of `busy_keys` busy for `busy_minutes` (in
  50 projects, and each alone in its project), and
  of `idle_keys` mostly idle ones (with idle keys' state packed, and unpacked as the baseline), and
  of `gateway_keys` seen both ways every hour for 3 days; the longest pause that a compaction of
  the idle keys' spill file causes, in steps and all at once (keywatch/bench_spill.py).

The table: keywatch/bench_table.py.

`--quick` scales every size down (the CI smoke test, tests/stream/test_bench_smoke.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
from rich.console import Console

from keywatch.bench_baseline import Baseline, BrokerMeter, cpu_figures, summarise
from keywatch.bench_core import run_core_figures
from keywatch.bench_table import print_table
from keywatch.bench_group import run_group_bench, wait_released
from keywatch.settings import Settings
from keywatch.procs import stop_process
from keywatch.stream.broker import EmbeddedBroker, ensure_topics
from keywatch.stream.produce import EventProducer
from keywatch.stream.status import StatusFile

LIVE_RATE = 50_000.0  # event time of the live-traffic run: events/s (about half the baseline's rate)
FULL = {"events": 200_000, "live_events": 600_000, "live_runs": 3, "single_events": 30_000, "keys": 200, "rate": 5000.0, "latency_s": 20.0,
        "latency_keys": 200, "state_keys": 100_000, "replay_keys": 300, "replay_days": 1.0, "replay_repeat": 3,
        "busy_keys": 10_000, "busy_minutes": 150, "idle_keys": 100_000, "idle_waves": 10,
        "gateway_keys": 5_000}
QUICK = {"events": 3_000, "live_events": 3_000, "live_runs": 2, "single_events": 1_000, "keys": 20, "rate": 300.0, "latency_s": 5.0,
         "latency_keys": 24, "state_keys": 2_000, "replay_keys": 20, "replay_days": 0.1, "replay_repeat": 1,
         "busy_keys": 200, "busy_minutes": 130, "idle_keys": 2_000, "idle_waves": 2,
         "gateway_keys": 50}


def live_time(events: list[dict], rate: float) -> list[dict]:
    """The same events with event time advancing at `rate` events/s from their first time, as a
    live stream of that rate has it (the simulated stream spans days: a backlog to catch up,
    where every per-minute close of the cost-spike detectors weighs on few events)."""
    t0 = events[0]["ts"] if events else 0
    return [{**e, "ts": t0 + int(i * 1000 / rate)} for i, e in enumerate(events)]


WEEK_MS = 7 * 86_400_000


def bench_events(n: int, keys: int) -> list[dict]:
    """The bench's events: simulated, starting ≈ 3 days ago. The start is a whole number of weeks
    from the epoch (minus 3 days), so runs of any week get the same hours and weekdays — the
    same traffic to the seasonal detectors, and so the same alerts — rather than depending on
    the hour a run starts."""
    start = int(time.time() * 1000) // WEEK_MS * WEEK_MS - 3 * 86_400_000
    if importlib.util.find_spec("keywatch.simulate") is not None:
        from keywatch.simulate import SimConfig, generate

        days = 2.5
        out: list[dict] = []
        while len(out) < n:  # more days until there are enough events
            cfg = SimConfig(keys=max(keys, 6), days=days, start_ms=start, seed=1, incidents=["loud_burst", "runaway_loop"])
            out = list(itertools.islice(generate(cfg), n))
            days *= 2
        return out
    return [{"kind": "usage", "event_id": f"b{i}", "ts": start + i, "provider": "openai", "key_id": f"key_{i % keys}",
             "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10} for i in range(n)]


def start_worker(bootstrap: str, topic: str, data_dir: Path, **env_extra: str) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KEYWATCH_DATA_DIR": str(data_dir), "KEYWATCH_KAFKA_BOOTSTRAP": bootstrap,
           "KEYWATCH_INPUT_TOPIC": topic, "KEYWATCH_WORKER_ID": f"bench-{uuid.uuid4().hex[:6]}",
           "KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S": "1.5", "KEYWATCH_WEB_PORT": "0", **env_extra}
    with open(data_dir / "worker.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_events(proc: subprocess.Popen, data_dir: Path, n: int, timeout: float = 900) -> dict:
    """The worker's status once it has handled `n` events (stored, duplicate or dead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = StatusFile.read(data_dir / "worker.status.json")
        if StatusFile.handled(st) >= n:
            return st
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {data_dir / 'worker.log'}")
        time.sleep(0.1)
    raise RuntimeError(f"worker did not handle {n} events in {timeout:.0f} s; see {data_dir / 'worker.log'}")


def stop_worker(proc: subprocess.Popen) -> None:
    stop_process(proc, grace=60)


def run_worker_bench(settings: Settings, bootstrap: str, topic: str, n: int, data_dir: Path) -> dict:
    """Rate and CPU up to the batch that completes the input; alerts after the release of the
    last project-level events (`wait_released`)."""
    status = data_dir / "worker.status.json"
    proc = start_worker(bootstrap, topic, data_dir)
    try:
        st = wait_events(proc, data_dir, n)
        wait_released(proc, [status])
    finally:
        stop_worker(proc)
    final = StatusFile.read(status)
    secs = max(1e-6, st["last_batch_at"] - st["first_batch_at"])
    return {"events": st["events_in"], "seconds": round(secs, 3), "events_per_s": round(st["events_in"] / secs, 1),
            "batches": st["batches"], "alerts": final["alerts"], "dead_letters": final["dead_letters"],
            **cpu_figures(st["last_batch_cpu"] - st["first_batch_cpu"], secs, st["events_in"])}


def run_bench(settings: Settings, *, json_out: Path | None, quick: bool = False, **sizes) -> dict:
    """Every figure; sizes default to FULL (or QUICK), any of them overridable by keyword."""
    from keywatch.bench_latency import run_latency

    cfg = {**(QUICK if quick else FULL), **{k: v for k, v in sizes.items() if v is not None}}
    console = Console()
    root = settings.data_dir / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    result: dict = {"config": cfg, "partitions": settings.topic_partitions, "batch_max_messages": settings.batch_max_messages,
                    "cpus": os.cpu_count(), "data": str(root)}
    t_all = time.perf_counter()
    baseline = Baseline(root / "baseline")
    base_runs: list[dict] = []
    with EmbeddedBroker(log_file=root / "broker.log") as broker:
        bs = broker.bootstrap
        metered = BrokerMeter(broker.proc.pid)
        base_topic, base_n = "", 0  # the baseline reads the batched topic, every run
        for name, n, per in (("batched", cfg["events"], 100), ("live", cfg["live_events"], 100), ("single", cfg["single_events"], 1)):
            events = bench_events(n, cfg["keys"])
            if name == "live":
                events = live_time(events, LIVE_RATE)
            topic = f"bench.{uuid.uuid4().hex[:6]}.{name}"
            ensure_topics(bs, [(topic, settings.topic_partitions)])
            with EventProducer(bs, topic) as p:
                p.send_events(events, batch_size=per)
                messages = p.messages
            runs = []
            # The live-rate worker alternates with the baseline (on the batched topic, as ever):
            # both are medians of runs spread over the same minutes (keywatch/bench_baseline.py).
            for i in range(cfg["live_runs"] if name == "live" else 1):
                if i:
                    console.print(f"baseline, run {len(base_runs) + 1} …")
                    base_runs.append(metered(baseline.run, bs, base_topic, base_n))
                console.print(f"{name}: {len(events):,} events in {messages:,} messages; running the worker"
                              + (f" (run {i + 1} of {cfg['live_runs']})" if name == "live" else "") + " …")
                runs.append(metered(run_worker_bench, settings, bs, topic, len(events), root / f"worker_{name}" / str(i)))
            result[f"worker_{name}"] = {**summarise(runs), "events_per_message": per, "messages": messages}
            for group, split in (("group", False), ("tiers", True)) if name == "live" else ():
                console.print(f"{name}: 2 worker processes{' + projects tier' if split else ''} …")
                result[f"worker_{group}"] = metered(run_group_bench, bs, topic, len(events), root / f"worker_{group}", 2, split)
            if name == "batched":
                console.print("baseline (consume + decode + insert raw rows), run 1 …")
                base_topic, base_n = topic, len(events)
                base_runs.append(metered(baseline.run, bs, base_topic, base_n))
        result["baseline"] = summarise(base_runs)
        console.print(f"latency at {cfg['rate']:,.0f} events/s for {cfg['latency_s']:.0f} s …")
        result["latency"] = run_latency(settings, bs, root / "latency", rate=cfg["rate"], seconds=cfg["latency_s"],
                                        keys=cfg["latency_keys"])
    console.print(f"state at {cfg['state_keys']:,} keys and replay throughput …")
    result["core"] = run_core_figures(root / "core", state_keys=cfg["state_keys"], replay_keys=cfg["replay_keys"],
                                      replay_days=cfg["replay_days"], repeat=cfg["replay_repeat"],
                                      busy_keys=cfg["busy_keys"], busy_minutes=cfg["busy_minutes"],
                                      idle_keys=cfg.get("idle_keys", 0), idle_waves=cfg.get("idle_waves", 10),
                                      gateway_keys=cfg.get("gateway_keys", 0))
    base = result["baseline"]["events_per_s"] or 1.0
    result["ratio"] = round(result["worker_batched"]["events_per_s"] / base, 3)
    result["ratio_single"] = round(result["worker_single"]["events_per_s"] / base, 3)
    for k in ("live", "group", "tiers"):
        result[f"ratio_{k}"] = round(result[f"worker_{k}"]["events_per_s"] / base, 3)
    # Continuity with sessions ≤ 10, whose ratios divided one run of each: the first live run
    # by the first baseline run (taken right after the batched worker, as then).
    result["ratio_live_first_runs"] = round(result["worker_live"]["each"][0]["events_per_s"] / base_runs[0]["events_per_s"], 3)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    print_table(result, console)
    if json_out:
        json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        console.print(f"results → {json_out}")
    return result
