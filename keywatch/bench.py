"""`keywatch bench`: the worker's end-to-end events/s next to a no-detection baseline, same run.

Both read the same topic on the embedded broker:

* worker — `keywatch worker` (child process, fresh chDB): consume + decode + detect + insert,
  rate = events stored / (last batch end − first batch start), from the worker's status file;
* baseline — raw aiokafka consume + orjson decode + chDB insert of raw rows, no detection.

The ratio worker/baseline is the cost of detection and of the worker's guarantees.
"""

from __future__ import annotations

import asyncio
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
from rich.table import Table

from keywatch.settings import Settings
from keywatch.stream.broker import EmbeddedBroker, ensure_topics
from keywatch.stream.produce import EventProducer
from keywatch.stream.status import StatusFile


def bench_events(n: int, keys: int) -> list[dict]:
    start = int(time.time() * 1000) - 3 * 86_400_000
    if importlib.util.find_spec("keywatch.simulate") is not None:
        from keywatch.simulate import SimConfig, generate

        days = 2.5
        out: list[dict] = []
        while len(out) < n:  # more days until there are enough events
            cfg = SimConfig(keys=keys, days=days, start_ms=start, seed=1, incidents=["loud_burst", "runaway_loop"])
            out = list(itertools.islice(generate(cfg), n))
            days *= 2
        return out
    return [{"kind": "usage", "event_id": f"b{i}", "ts": start + i, "provider": "openai", "key_id": f"key_{i % keys}",
             "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10} for i in range(n)]


def run_worker_bench(settings: Settings, bootstrap: str, topic: str, n: int, data_dir: Path) -> dict:
    env = {**os.environ, "KEYWATCH_DATA_DIR": str(data_dir), "KEYWATCH_KAFKA_BOOTSTRAP": bootstrap,
           "KEYWATCH_INPUT_TOPIC": topic, "KEYWATCH_WORKER_ID": f"bench-{uuid.uuid4().hex[:6]}",
           "KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S": "1.5", "KEYWATCH_WEB_PORT": "0"}
    status = data_dir / "worker.status.json"
    with open(data_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            st = StatusFile.read(status)
            if st.get("events_in", 0) + st.get("duplicates", 0) + st.get("dead_letters", 0) >= n:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {data_dir / 'worker.log'}")
            time.sleep(0.2)
        else:
            raise RuntimeError("worker did not finish in 15 minutes")
    finally:
        proc.terminate()
        proc.wait(60)
    st = StatusFile.read(status)
    secs = max(1e-6, st["last_batch_at"] - st["first_batch_at"])
    return {"events": st["events_in"], "seconds": secs, "events_per_s": st["events_in"] / secs,
            "batches": st["batches"], "alerts": st["alerts"], "dead_letters": st["dead_letters"]}


async def _baseline(bootstrap: str, topic: str, n: int, client) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=16 * 1048576, fetch_max_bytes=64 * 1048576)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        seen, started = 0, None
        cols = ["event_id", "ts", "provider", "key_id", "model", "input_tokens", "output_tokens"]
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            rows = []
            for records in batch.values():
                for r in records:
                    doc = orjson.loads(r.value)
                    for e in doc if isinstance(doc, list) else [doc]:
                        ts = e["ts"] if isinstance(e["ts"], int) else int(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() * 1000)
                        rows.append([e["event_id"], datetime.utcfromtimestamp(ts / 1000), e["provider"], e.get("key_id") or "",
                                     e.get("model") or "", e.get("input_tokens", 0), e.get("output_tokens", 0)])
            if rows:
                started = started or time.perf_counter()
                client.insert("bench.raw_events", rows, column_names=cols)
                seen += len(rows)
        secs = time.perf_counter() - started
        return {"events": seen, "seconds": secs, "events_per_s": seen / secs}
    finally:
        await consumer.stop()


def run_baseline(bootstrap: str, topic: str, n: int, data_dir: Path) -> dict:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f"chdb://{data_dir / 'chdb'}")
    client.command("CREATE DATABASE IF NOT EXISTS bench")
    client.command("CREATE TABLE IF NOT EXISTS bench.raw_events (event_id String, ts DateTime64(3, 'UTC'), "
                   "provider LowCardinality(String), key_id String, model LowCardinality(String), input_tokens UInt64, "
                   "output_tokens UInt64) ENGINE = MergeTree ORDER BY (key_id, ts)")
    return asyncio.run(_baseline(bootstrap, topic, n, client))


def run_bench(settings: Settings, *, n_events: int, per_message: int, json_out: Path | None, keys: int) -> int:
    console = Console()
    root = settings.data_dir / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    (root / "worker").mkdir(parents=True, exist_ok=True)
    (root / "baseline").mkdir(parents=True, exist_ok=True)
    console.print(f"generating {n_events:,} events …")
    events = bench_events(n_events, keys)
    topic = f"bench.{uuid.uuid4().hex[:6]}.events"
    with EmbeddedBroker(log_file=root / "broker.log") as broker:
        ensure_topics(broker.bootstrap, [(topic, settings.topic_partitions)])
        t = time.perf_counter()
        with EventProducer(broker.bootstrap, topic) as p:
            p.send_events(events, batch_size=per_message)
            messages = p.messages
        produce_s = time.perf_counter() - t
        console.print(f"produced {len(events):,} events in {messages:,} messages ({produce_s:.1f} s); running the worker …")
        worker = run_worker_bench(settings, broker.bootstrap, topic, len(events), root / "worker")
        console.print("running the baseline …")
        base = run_baseline(broker.bootstrap, topic, len(events), root / "baseline")
    ratio = worker["events_per_s"] / base["events_per_s"] if base["events_per_s"] else 0.0
    result = {"events": len(events), "events_per_message": per_message, "messages": messages,
              "partitions": settings.topic_partitions, "batch_max_messages": settings.batch_max_messages,
              "worker": worker, "baseline": base, "ratio": ratio, "cpus": os.cpu_count(), "data": str(root)}
    table = Table(title=f"keywatch bench — {len(events):,} events, {per_message}/message")
    for col in ("pipeline", "events", "seconds", "events/s"):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    table.add_row("worker (decode+detect+insert)", f"{worker['events']:,}", f"{worker['seconds']:.2f}", f"{worker['events_per_s']:,.0f}")
    table.add_row("baseline (raw consume+insert)", f"{base['events']:,}", f"{base['seconds']:.2f}", f"{base['events_per_s']:,.0f}")
    table.add_row("[bold]ratio worker/baseline[/bold]", "", "", f"[bold]{ratio:.2f}[/bold]")
    console.print(table)
    if json_out:
        json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        console.print(f"results → {json_out}")
    return 0
