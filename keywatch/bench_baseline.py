"""`keywatch bench`'s baseline and its repeated runs: what the worker's rate is a fraction of.

The baseline is raw aiokafka consume + orjson decode + a chDB insert of 7 raw columns per event,
no detection, sequential, of the bench's batched topic (the same definition since the first
landing, so ratios compare across sessions). One run takes ≈ 2 s; on this shared machine one
such run varied 84.8–117.9k events/s over six benches of the same code, so a ratio against a
single run moved by as much as the worker did. The bench therefore runs the baseline several
times, alternating with the live-rate worker's runs (keywatch/bench.py), and divides medians
(`summarise`).

>>> s = summarise([{"events_per_s": 90.0, "cpu_us_per_event": 11.0}, {"events_per_s": 110.0, "cpu_us_per_event": 9.0},
...                {"events_per_s": 100.0, "cpu_us_per_event": 10.0}])
>>> s["events_per_s"], s["range"], s["cpu_us_per_event"], s["runs"]
(100.0, [90.0, 110.0], 10.0, 3)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path

import orjson

from keywatch.procs import cpu_seconds

_COLUMNS = ["event_id", "ts", "provider", "key_id", "model", "input_tokens", "output_tokens"]


def cpu_figures(cpu_s: float, secs: float, events: int) -> dict:
    """CPU cost: seconds of the whole process (all threads, chDB's too), µs per event, cores busy."""
    return {"cpu_s": round(cpu_s, 3), "cpu_us_per_event": round(1e6 * cpu_s / max(1, events), 1),
            "cores": round(cpu_s / max(1e-6, secs), 2)}


def summarise(runs: list[dict]) -> dict:
    """Several runs of one figure as one: events/s, CPU per event (the process's and the broker's)
    and cores busy are each the median over `runs`; their events/s range and every run are kept;
    other fields (events, alerts, …) are the median run's (the faster middle one of an even number)."""
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    rates = [r["events_per_s"] for r in runs]
    mid = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]
    out = {k: v for k, v in mid.items()
           if k not in ("events_per_s", "cpu_us_per_event", "cores", "seconds", "cpu_s", "broker_cpu_us_per_event")}
    out.update(events_per_s=med("events_per_s"), range=[min(rates), max(rates)], runs=len(runs), each=runs)
    for k in ("cpu_us_per_event", "cores", "broker_cpu_us_per_event"):
        if all(r.get(k) is not None for r in runs):
            out[k] = med(k)
    return out


class BrokerMeter:
    """Runs a measurement and adds the embedded broker's CPU per event over it (None where
    /proc is missing): the broker shares the machine's cores with what is measured."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __call__(self, run, *args) -> dict:
        before = cpu_seconds(self.pid)
        result = run(*args)
        after = cpu_seconds(self.pid)
        result["broker_cpu_us_per_event"] = (round(1e6 * (after - before) / max(1, result["events"]), 1)
                                             if before is not None and after is not None else None)
        return result


class Baseline:
    """The baseline on one chDB path, opened once (a process can open one chDB path): each `run`
    empties the table, so every run inserts into the same empty table."""

    def __init__(self, data_dir: Path) -> None:
        import clickhouse_connect

        data_dir.mkdir(parents=True, exist_ok=True)
        self.client = clickhouse_connect.get_client(dsn=f"chdb://{data_dir / 'chdb'}")
        self.client.command("CREATE DATABASE IF NOT EXISTS bench")
        self.client.command("CREATE TABLE IF NOT EXISTS bench.raw_events (event_id String, ts DateTime64(3, 'UTC'), "
                            "provider LowCardinality(String), key_id String, model LowCardinality(String), "
                            "input_tokens UInt64, output_tokens UInt64) ENGINE = MergeTree ORDER BY (key_id, ts)")

    def run(self, bootstrap: str, topic: str, n: int) -> dict:
        self.client.command("TRUNCATE TABLE bench.raw_events")
        return asyncio.run(self._consume(bootstrap, topic, n))

    async def _consume(self, bootstrap: str, topic: str, n: int) -> dict:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=16 * 1048576, fetch_max_bytes=64 * 1048576)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in parts])
            await consumer.seek_to_beginning()
            seen, started, cpu0 = 0, None, 0.0
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
                    if started is None:
                        started, cpu0 = time.perf_counter(), time.process_time()
                    self.client.insert("bench.raw_events", rows, column_names=_COLUMNS)
                    seen += len(rows)
            secs = time.perf_counter() - started
            return {"events": seen, "seconds": round(secs, 3), "events_per_s": round(seen / secs, 1),
                    **cpu_figures(time.process_time() - cpu0, secs, seen)}
        finally:
            await consumer.stop()
