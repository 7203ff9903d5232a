"""`keywatch worker`: the faust app that consumes the input topic and writes to ClickHouse.

Commit-after-write: the agent iterates ``stream.noack_take(batch_max_messages,
within=batch_max_seconds)`` — the buffered `take()` that leaves acking to us (plain `take()`
acks a batch in a ``finally`` when the generator resumes *or is closed*, so a cancelled or
failed batch would be committed). A batch is acked only after (1) its output is stored in
ClickHouse (retried with backoff, never skipped) and (2) a detector snapshot covering it is
stored; faust then commits acked offsets. So a crash loses nothing and re-reads only what the
last snapshot does not hold; `Pipeline` (stream/pipeline.py) makes the re-read exactly-once.
Batch N+1 is decoded and detected (detect thread) while batch N is written (io thread, the only
thread that touches chDB); snapshots wait for a quiescent point (see `Consumer.handle`).

State is per input partition (stream/partitions.py): on assignment a partition's core is
restored from its snapshot, on revocation it is snapshotted, so partitions move between the
workers of one group (same `KEYWATCH_WORKER_ID`, same ClickHouse) with their per-key state.
Project/provider-level detection runs in one worker-wide global core fed by the partition
cores' output (stream/partitions.py), snapshotted with the partition cores.

Delivery guarantees, precisely:

* ClickHouse `usage_events`, `dead_letters`, `scores`: exactly once (re-reads are looked up).
  `alerts`: a re-read may insert the same (alert_id, version) again; ReplacingMergeTree(version)
  keeps one, so read with ``FINAL`` (as the API does). Rollups: exactly once, repaired after an
  interrupted insert (stream/repair.py).
* Kafka output topics `keywatch.alerts` and `keywatch.dlq`: **at least once**. A batch's
  records are produced (and awaited) before its offsets can be acked, but a crash between
  producing and the next snapshot re-reads the batch and produces them again. Consumers
  dedupe: an alert by (`alert_id`, `version`) — keep the highest version per `alert_id`; a dead
  letter by (`topic`, `partition`, `offset`, `index`), the record's message key being
  ``topic:partition:offset``. Alert hooks (channels, revocation) run at most once per raise in
  one process; a re-read after a crash can call them again for the same alert version (the
  channel dispatcher records deliveries per alert and version).
* Backpressure: while ClickHouse writes fail the batch is retried with backoff, the input
  partitions are paused and the `keywatch_backpressure` gauge is 1; nothing is acked past it.
  Drill it with ``KEYWATCH_CHAOS_SINK_FAIL_FILE=/path`` (fault injection only): while that file
  exists every write fails as if ClickHouse were down (tests/stream/test_stream_faults.py).
* Broker restart (embedded Tansu is in memory: topics and offsets are gone): the consumer
  reconnects; a partition whose log end is below the offsets held in state is treated as new
  (state offsets reset), so new data after the restart is processed, not skipped.

Run: ``KEYWATCH_KAFKA_BOOTSTRAP=127.0.0.1:9092 keywatch worker`` (unset: embedded broker).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from keywatch.settings import Settings
from keywatch.stream.ioclient import IoClient
from keywatch.stream.pipeline import Msg, Pipeline
from keywatch.stream.status import StatusFile

log = logging.getLogger("keywatch.worker")


def dead_letter_record(d) -> bytes:
    return orjson.dumps({
        "reason": d.reason, "error": d.error, "topic": d.topic, "partition": d.partition, "offset": d.offset,
        "index": d.index, "payload": d.payload.decode("utf-8", "replace"), "payload_size": d.payload_size,
        "received_at_ms": d.received_at_ms,
    })


class Consumer:
    """The agent's body: one batch at a time through the pipeline, with retries and acks."""

    def __init__(self, app, runtime, pipeline: Pipeline, hooks, status: StatusFile, dlq_topic, alerts_topic) -> None:
        self.app, self.rt, self.pipeline, self.hooks, self.status = app, runtime, pipeline, hooks, status
        self.dlq_topic, self.alerts_topic = dlq_topic, alerts_topic
        self.settings: Settings = runtime.settings
        self.m = runtime.metrics
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keywatch-io")  # chDB: one thread
        # Decode + detect runs here, so it overlaps the previous batch's ClickHouse write on the
        # io thread; its few lookups are sent to the io thread (`IoClient`).
        self.detect = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keywatch-detect")
        pipeline.state.client = IoClient(pipeline.state.client, self.io)
        self.lock = asyncio.Lock()  # one batch, snapshot or ack at a time
        self.pending: list[Any] = []  # faust events stored in ClickHouse, acked at the next snapshot
        self.inflight: asyncio.Task | None = None  # the previous batch's write + publish
        self.stream = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def handle(self, events: list) -> None:
        """Batch N+1 is decoded and detected while batch N is written (one write in flight).

        Acks still follow writes (`pending` grows only in `_finish`, after the write), and a
        snapshot is taken only at a quiescent point — no write in flight and no batch detected
        but unwritten — so it never holds state of a batch whose output is not stored.
        """
        msgs = [Msg(e.message.topic, e.message.partition, e.message.offset, e.message.value or b"", e.message.timestamp)
                for e in events]
        async with self.lock:
            if self.pipeline.snapshot_due(self.settings.snapshot_interval_s):
                await self._drain()
                await self._snapshot_and_ack()
            started = time.perf_counter()
            async with self.rt.core_lock:  # HTTP views read the core under this lock
                res = await asyncio.get_running_loop().run_in_executor(self.detect, self.pipeline.process, msgs)
            self._spent("detect", started)
            t = time.perf_counter()
            await self._drain()
            self._spent("wait_write", t)  # batch N stored (and published) before batch N+1 is written
            self.inflight = asyncio.ensure_future(self._finish(res, events, msgs, started))

    async def _drain(self) -> None:
        """Wait for the write in flight (a failure surfaces here, as it did inline)."""
        task, self.inflight = self.inflight, None
        if task is not None:
            await task

    def _spent(self, stage: str, since: float) -> None:
        """Seconds per stage, summed in the status file (`stage_seconds`): where a batch's time goes."""
        acc = self.status.data.setdefault("stage_seconds", {})
        acc[stage] = round(acc.get(stage, 0.0) + time.perf_counter() - since, 4)

    async def _finish(self, res, events: list, msgs: list[Msg], started: float) -> None:
        t = time.perf_counter()
        await self._write(res)
        self._spent("write", t)
        t = time.perf_counter()
        await self._publish(res)
        self._spent("publish", t)
        # A message of a partition revoked while it was buffered is not acked: the partition's
        # next owner (maybe us again) reads it from the committed offset.
        foreign = self.pipeline.foreign
        self.pending.extend(e for e in events if e.message.partition not in foreign)
        t = time.perf_counter()
        self._observe(res, msgs, t - started)
        self._spent("observe", t)

    async def _write(self, res) -> None:
        attempt = 0
        while True:
            try:
                await self._run(self.pipeline.write, res, attempt)
                break
            except Exception as exc:  # a sink failure: retry the same batch, never ack past it
                self.m.sink_errors.inc()
                self.m.backpressure.set(1)
                if attempt == 0:
                    self._pause(True)
                delay = min(self.settings.sink_retry_max_s, 0.2 * 2 ** min(attempt, 10))
                log.warning("ClickHouse write failed (attempt %d), retrying in %.1fs: %s", attempt + 1, delay, exc)
                self.status.update(backpressure=1, sink_errors=self.status.data.get("sink_errors", 0) + 1)
                attempt += 1
                await asyncio.sleep(delay)
        if attempt:
            self._pause(False)
        self.m.backpressure.set(0)
        self.status.data["backpressure"] = 0

    def _pause(self, pause: bool) -> None:
        """Stop (or restart) fetching the input while ClickHouse is failing; best effort."""
        try:
            consumer = self.app.consumer
            tps = [tp for tp in consumer.assignment() if tp.topic == self.settings.input_topic]
            (consumer.pause_partitions if pause else consumer.resume_partitions)(tps)
        except Exception as exc:  # rebalancing: the blocked agent still holds everything back
            log.debug("could not %s partitions: %s", "pause" if pause else "resume", exc)

    async def assigned(self, tps) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.settings.input_topic}
        async with self.lock:
            await self._drain()
            async with self.rt.core_lock:
                await self._run(self.pipeline.assign, parts)
            await self._check_log_ends(parts)

    async def revoked(self, tps) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.settings.input_topic}
        async with self.lock:
            await self._drain()
            async with self.rt.core_lock:
                await self._run(self.pipeline.revoke, parts)

    async def _check_log_ends(self, parts: set[int]) -> None:
        """A partition the broker forgot (restart of the in-memory broker) restarts from scratch.

        Signs: its log ends at or below the offset held in state, or the group has no committed
        offset for it although state holds one (we ack ~1 s after each snapshot, so only a crash
        right after a partition's first snapshot, or offsets expired by retention, also look
        like this; then the restored core's dedupe and the high-water re-check keep rows once).
        """
        tps = [_tp(self.settings.input_topic, p) for p in sorted(parts)]
        try:
            ends = await self.app.consumer.highwaters(*tps)
        except Exception as exc:
            log.warning("could not read log end offsets: %s", exc)
            return
        committed = await self._committed(tps)
        for tp, end in ends.items():
            key = f"{tp.topic}:{tp.partition}"
            held = self.pipeline.in_state.get(key, -1)
            if held < 0 or end is None:
                continue
            if end <= held or (tp in committed and committed[tp] is None):
                log.warning("%s: log ends at %s, committed %s, state holds offset %d: the broker lost this "
                            "partition (restart?); reading it as new", key, end, committed.get(tp, "?"), held)
                self.pipeline.forget_offsets(key)  # high_water stays: re-read ids are still checked

    async def _committed(self, tps) -> dict:
        try:  # faust has no public call for the group's committed offsets
            thread = self.app.consumer._thread
            aio = thread._ensure_consumer()
            return {tp: await thread.call_thread(aio.committed, tp) for tp in tps}
        except Exception as exc:
            log.debug("committed offsets unavailable: %s", exc)
            return {}

    async def _publish(self, res) -> None:
        """Dead letters to the DLQ topic, alerts to the alerts topic (awaited before any ack), hooks."""
        futs = [await self.dlq_topic.send(key=f"{d.topic}:{d.partition}:{d.offset}".encode(), value=dead_letter_record(d))
                for d in res.dead]
        alerts = res.out.alerts if res.out is not None else []
        for a in alerts:
            futs.append(await self.alerts_topic.send(key=(a.key_id or a.project or a.alert_id).encode(),
                                                     value=orjson.dumps(a.to_contract())))
        for f in futs:
            await f
        if alerts:
            self.hooks.submit(alerts)

    async def _snapshot_and_ack(self) -> None:
        t = time.perf_counter()
        try:
            async with self.rt.core_lock:
                size = await self._run(self.pipeline.snapshot)
        except Exception as exc:  # not acking keeps the data safe; try again next time
            log.warning("snapshot failed (offsets not committed yet): %s", exc)
            return
        self._spent("snapshot", t)
        events, self.pending = self.pending, []
        t = time.perf_counter()
        for ev in events:
            await self.stream.ack(ev)
        self._spent("ack", t)
        self.status.update(snapshots=self.status.data.get("snapshots", 0) + 1, snapshot_bytes=size)

    async def tick(self) -> None:
        """Timer: snapshot and ack even when no new batch arrives."""
        if (self.pending or self.inflight is not None) and self.stream is not None and not self.lock.locked():
            async with self.lock:
                if self.pipeline.snapshot_due(self.settings.snapshot_interval_s):
                    await self._drain()
                    await self._snapshot_and_ack()
        self.status.update(ready=self.rt.ready)

    async def final_snapshot(self) -> None:
        try:
            async with self.lock:
                await self._drain()
                if self.pipeline.dirty:
                    async with self.rt.core_lock:
                        await self._run(self.pipeline.snapshot)
        except Exception as exc:
            log.warning("final snapshot failed: %s", exc)

    def _observe(self, res, msgs: list[Msg], seconds: float) -> None:
        m, out = self.m, res.out
        m.messages_in.inc(len(msgs))
        n = 0
        if out is not None:
            for kind, evs in (("usage", out.usage), ("audit", out.audit), ("billing", out.billing)):
                if evs:
                    m.events_in.labels(kind).inc(len(evs))
                    n += len(evs)
            m.duplicates.inc(out.duplicates + res.redelivered_rows)
            now = time.time()
            for a in out.alerts:
                m.alerts.labels(a.kind, a.severity).inc()
                if res.oldest_ts:
                    m.event_to_alert.observe(max(0.0, now - res.oldest_ts))
        for d in res.dead:
            m.events_rejected.labels(d.reason).inc()
        m.batch_latency.observe(seconds)
        m.batch_size.observe(n)
        for key, off in res.last.items():
            topic, p = key.rsplit(":", 1)
            try:
                hw = self.app.consumer.highwater(_tp(topic, int(p)))
                if hw is not None:
                    m.consumer_lag.labels(topic, p).set(max(0, hw - off - 1))
            except Exception:  # the consumer may be rebalancing; lag is best effort
                pass
        m.tracked_keys.set(self.pipeline.tracked_keys())
        self.status.data["offsets"] = dict(self.pipeline.in_state)
        self.status.batch(res, n, [a.to_contract() for a in out.alerts] if out is not None else [])


def _tp(topic: str, partition: int):
    from faust.types import TP

    return TP(topic, partition)


def build_runtime(settings: Settings):
    """Open ClickHouse (the worker owns embedded chDB), restore the core, build the pipeline."""
    from keywatch.hooks import build_alert_hooks
    from keywatch.models.registry import build_core
    from keywatch.sinks.clickhouse import ClickHouseSink, connect
    from keywatch.stream.decode import EventDecoder
    from keywatch.stream.metrics import Metrics
    from keywatch.stream.partitions import PartitionCores
    from keywatch.stream.runtime import WorkerRuntime
    from keywatch.stream.state import SnapshotError, StreamState

    client = connect(settings)
    sink = ClickHouseSink(client, settings.clickhouse_database)
    state = StreamState(client, settings.clickhouse_database, settings.worker_id,
                        settings.key_hash_secret.get_secret_value().encode())
    legacy = None
    try:  # the pre-partition single-core snapshot: partitions without their own start from it
        legacy = state.load_snapshot("core")
    except (SnapshotError, Exception) as exc:  # a bad snapshot must not stop ingestion
        log.warning("not restoring detector snapshot: %s", exc)
    # Partition cores are restored from their own snapshots when partitions are assigned.
    high_water = {f"{settings.input_topic}:{p}": o for p, o in state.high_water(settings.input_topic).items()}
    metrics = Metrics()
    # Per-key detectors per partition; project/provider-level ones in one worker-wide core.
    cores = PartitionCores(lambda: build_core(settings, "partition"), lambda: build_core(settings, "global"))
    runtime = WorkerRuntime(settings=settings, sink=sink, core=cores, metrics=metrics)
    runtime.alert_hooks = build_alert_hooks(settings, sink, metrics)
    pipeline = Pipeline(runtime, EventDecoder.from_settings(settings, streaming=True), state,
                        topic=settings.input_topic, high_water=high_water, legacy=legacy)
    return runtime, pipeline


def _group_timing(settings: Settings) -> dict[str, float]:
    # Tansu holds a group join for half the session timeout: short timeouts make the embedded
    # stack (demo, tests) start in ~1.5 s. Against real Kafka, faust's defaults apply unless set
    # (Kafka's group.min.session.timeout.ms is 6 s by default).
    t = settings.kafka_rebalance_timeout_s
    if t is None:
        return {}
    return {"broker_rebalance_timeout": t, "broker_session_timeout": 2 * t,
            "broker_heartbeat_interval": max(0.2, t / 3)}


def create_app(settings: Settings, bootstrap: str, runtime, pipeline, status: StatusFile):
    import faust

    from keywatch.stream.hookrunner import HookRunner

    web_port = settings.web_port
    app = faust.App(
        settings.worker_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()],
        datadir=str(settings.data_dir / "faust"),
        value_serializer="raw", key_serializer="raw",
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # acks wait for the next snapshot; a rebalance must not wait on them
        broker_commit_interval=1.0,
        producer_max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_message_bytes * 2),
        web_enabled=web_port != 0, web_host=settings.web_host, web_port=web_port or 6066,
        web_in_thread=False,
        **_group_timing(settings),
    )
    in_topic = app.topic(settings.input_topic, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw", partitions=settings.topic_partitions)
    dlq = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw", partitions=1)
    alerts = app.topic(settings.alerts_topic, value_serializer="raw", key_serializer="raw", partitions=1)
    hooks = HookRunner(runtime.alert_hooks, settings.hook_queue_max, runtime.metrics)
    consumer = Consumer(app, runtime, pipeline, hooks, status, dlq, alerts)
    app.keywatch_consumer = consumer  # for views and tests

    @app.agent(in_topic, name="keywatch.consume", concurrency=1)
    async def consume(stream):
        consumer.stream = stream
        async for batch in stream.noack_take(settings.batch_max_messages, within=settings.batch_max_seconds):
            await consumer.handle(batch)

    @app.task
    async def run_hooks() -> None:
        await hooks.run()

    @app.timer(interval=1.0)
    async def snapshot_timer() -> None:
        await consumer.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs) -> None:  # noqa: ARG001
        await consumer.revoked(revoked)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001
        await consumer.assigned(assigned)
        runtime.ready = True
        status.update(ready=True, partitions=sorted(tp.partition for tp in assigned if tp.topic == settings.input_topic))

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kwargs) -> None:  # noqa: ARG001
        await consumer.final_snapshot()
        await hooks.aclose(5.0)

    if importlib.util.find_spec("keywatch.stream.web") is not None:
        importlib.import_module("keywatch.stream.web").register_views(app, runtime)
    return app


def run_worker(settings: Settings, bootstrap: str | None = None, *, loglevel: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. With no bootstrap and embedded Kafka, starts the broker too."""
    from faust.worker import Worker

    from keywatch.stream.broker import ensure_topics, kafka_bootstrap, topic_specs

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    status = StatusFile(settings.data_dir / "worker.status.json", pid=os.getpid())
    with kafka_bootstrap(settings, create_topics=False, log_file=settings.data_dir / "broker.log") if bootstrap is None \
            else _given(bootstrap) as bs:
        ensure_topics(bs, topic_specs(settings))
        runtime, pipeline = build_runtime(settings)
        status.update(bootstrap=bs, ready=False, data_dir=str(settings.data_dir))
        app = create_app(settings, bs, runtime, pipeline, status)
        worker = Worker(app, loglevel=(loglevel or settings.log_level).lower(), quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit:
            pass
        finally:
            status.update(ready=False, stopped=True)


class _given:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def __enter__(self) -> str:
        return self.bootstrap

    def __exit__(self, *exc) -> None:
        return None


def read_status(data_dir: Path) -> dict:
    return StatusFile.read(Path(data_dir) / "worker.status.json")
