"""The batch consumer loop behind the faust agent: handle → write → publish → snapshot → ack.

`Consumer` runs one batch at a time through `Pipeline` (stream/pipeline.py), retries ClickHouse
writes with backoff, publishes dead letters and alerts, and acks offsets only after a snapshot
covering them is stored. Why acks follow writes and snapshots (commit-after-write) and what
that guarantees is explained at the top of stream/worker.py, which wires this into faust.
Rebalance callbacks (`assigned`, `revoked`) live in stream/rebalance.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from keywatch.memtrim import HeapTrimmer
from keywatch.settings import Settings
from keywatch.sinks.clickhouse import second_client
from keywatch.stream.ioclient import IoClient
from keywatch.stream.observe import observe_batch
from keywatch.stream.pipeline import Msg, Pipeline
from keywatch.stream.rebalance import RebalanceHandler, _tp
from keywatch.stream.snapfork import ForkedSnapshot, forking_supported, memory_headroom_ok, remove_stale
from keywatch.stream.status import StatusFile

log = logging.getLogger("keywatch.worker")


def dead_letter_record(d) -> bytes:
    return orjson.dumps({
        "reason": d.reason, "error": d.error, "topic": d.topic, "partition": d.partition, "offset": d.offset,
        "index": d.index, "payload": d.payload.decode("utf-8", "replace"), "payload_size": d.payload_size,
        "received_at_ms": d.received_at_ms,
    })


class Consumer(RebalanceHandler):
    """The agent's body: one batch at a time through the pipeline, with retries and acks."""

    def __init__(self, app, runtime, pipeline: Pipeline, hooks, status: StatusFile, dlq_topic, alerts_topic) -> None:
        self.app, self.rt, self.pipeline, self.hooks, self.status = app, runtime, pipeline, hooks, status
        self.dlq_topic, self.alerts_topic = dlq_topic, alerts_topic
        self.settings: Settings = runtime.settings
        self.m = runtime.metrics
        self.trimmer = HeapTrimmer(runtime.settings.memory_trim_s)  # keywatch/memtrim.py
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keywatch-io")  # every write: one thread
        # Decode + detect runs here, so it overlaps the previous batch's ClickHouse write on the
        # io thread; its re-read checks and partition restores are sent to the io thread
        # (`IoClient`), queued behind the write in flight. Its idle-key baseline lookups get a
        # client of their own: queued there, they stalled detection as long as the write took.
        self.detect = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keywatch-detect")
        pipeline.state.lookups = second_client(pipeline.state.client, self.settings)
        pipeline.state.client = IoClient(pipeline.state.client, self.io)
        self.lock = asyncio.Lock()  # one batch, snapshot or ack at a time
        self.pending: list[Any] = []  # faust events stored in ClickHouse, acked at the next snapshot
        self.inflight: asyncio.Task | None = None  # the previous batch's write + publish
        self.stream = None
        # Periodic snapshots in a forked child (stream/snapfork.py): the one in flight and the
        # events it covers (acked when it is stored); None: snapshots are taken in this process.
        self.fork_dir = runtime.settings.data_dir if runtime.settings.snapshot_fork and forking_supported() else None
        self.snap: ForkedSnapshot | None = None
        self.snap_covers: list[Any] = []
        if self.fork_dir is not None and remove_stale(self.fork_dir):
            log.info("removed files of snapshot children of a previous worker")

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
            await self._collect()
            if self.snap is None and self.pipeline.snapshot_due(self.settings.snapshot_interval_s):
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

    async def _publish(self, res) -> None:
        """Dead letters to the DLQ topic, alerts to the alerts topic (awaited before any ack), hooks."""
        futs = [await self.dlq_topic.send(key=f"{d.topic}:{d.partition}:{d.offset}".encode(), value=dead_letter_record(d))
                for d in (res.dead if self.pipeline.stores_events else ())]  # else the `keys` tier's
        alerts = res.out.alerts if res.out is not None else []
        for a in alerts:
            futs.append(await self.alerts_topic.send(key=(a.key_id or a.project or a.alert_id).encode(),
                                                     value=orjson.dumps(a.to_contract())))
        for f in futs:
            await f
        if alerts:
            self.hooks.submit(alerts)

    async def _snapshot_and_ack(self) -> None:
        """At a quiescent point: snapshot what was written, then ack the events it covers —
        at once when taken here, or once stored when a forked child takes it (`_collect`)."""
        await self._collect(block=True)  # one at a time
        t = time.perf_counter()
        try:
            async with self.rt.core_lock:
                forked = self.fork_dir is not None and self._may_fork()
                if forked:
                    try:
                        self.snap = await self._run(self.pipeline.snapshot_start, self.fork_dir,
                                                    self.settings.chaos_snapshot_delay_s)
                    except OSError as exc:  # fork refused (memory, process limit): never skip a snapshot
                        log.warning("could not fork for the snapshot, taking it in process: %s", exc)
                        forked = False
                if not forked:
                    size = await self._run(self.pipeline.snapshot)
        except Exception as exc:  # not acking keeps the data safe; try again next time
            log.warning("snapshot failed (offsets not committed yet): %s", exc)
            return
        self._spent("snapshot", t)  # with a fork: only the time detection waited
        self.status.data["snapshot_stall_seconds"] = round(time.perf_counter() - t, 4)
        if self.snap is not None:
            self.snap_covers, self.pending = self.pending, []
            self.status.update(snapshot_child=self.snap.pid)
        else:  # taken here, or nothing written since the last one
            events, self.pending = self.pending, []
            await self._ack(events, 0 if forked else size)

    def _may_fork(self) -> bool:
        last = self.pipeline.snapshot_seconds  # 0: none stored by this process yet, its length unknown
        if 0.0 < last < self.settings.snapshot_fork_min_s:
            return False  # small state: a short wait in process costs less than a child
        # The first one is forked: a restored state, or one grown during a catch-up, can take
        # seconds to pickle (its dedupe windows alone hold up to 200k ids per core), and a small
        # one costs the child little; its length decides the next ones.
        ok = memory_headroom_ok()
        if ok != self.status.data.get("snapshot_fork", True):
            log.log(logging.INFO if ok else logging.WARNING, "snapshots %s", "forked again" if ok else
                    "taken in process: less memory available than this worker's resident size, which a forked child may copy")
        self.status.data["snapshot_fork"] = ok
        return ok

    async def _collect(self, block: bool = False) -> None:
        """Store the forked snapshot once its child is done (or wait for it), then ack."""
        snap = self.snap
        if snap is None:
            return
        while not snap.done():
            if not block:
                return
            await asyncio.sleep(0.02)
        self.snap, events, self.snap_covers = None, self.snap_covers, []
        self.status.data["snapshot_child"] = 0
        try:
            size = await self._run(self.pipeline.snapshot_finish, snap)
        except Exception as exc:  # its events wait for the next snapshot, which covers them
            log.warning("snapshot failed (offsets not committed yet): %s", exc)
            self.pending[:0] = events
            return
        await self._ack(events, size)

    async def _ack(self, events: list, size: int) -> None:
        t = time.perf_counter()
        for ev in events:
            await self.stream.ack(ev)
        self._spent("ack", t)
        self.status.update(snapshots=self.status.data.get("snapshots", 0) + 1, snapshot_bytes=size,
                           snapshot_seconds=round(self.pipeline.snapshot_seconds, 3))

    async def tick(self) -> None:
        """Timer: snapshot and ack even when no new batch arrives; release project-level events
        waiting for partitions that went quiet (`EventTimeOrder`)."""
        if self.pipeline.global_ready() and self.stream is not None and not self.lock.locked():
            await self.handle([])
        if self.snap is not None and self.stream is not None and not self.lock.locked():
            async with self.lock:
                await self._collect()
        if (self.pending or self.inflight is not None) and self.stream is not None and not self.lock.locked():
            async with self.lock:
                if self.snap is None and self.pipeline.snapshot_due(self.settings.snapshot_interval_s):
                    await self._drain()
                    await self._snapshot_and_ack()
        if (released := self.trimmer.maybe()) is not None:  # freed heap back to the OS, now and then
            self.m.memory_trimmed.inc(released)
        self.status.update(ready=self.rt.ready, memory_trims=self.trimmer.trims)

    async def final_snapshot(self) -> None:
        try:
            async with self.lock:
                await self._drain()
                await self._collect(block=True)
                if self.pipeline.dirty:
                    async with self.rt.core_lock:
                        await self._run(self.pipeline.snapshot)
        except Exception as exc:
            log.warning("final snapshot failed: %s", exc)

    def _observe(self, res, msgs: list[Msg], seconds: float) -> None:
        observe_batch(self.m, self.status, self.pipeline, self._highwater, res, msgs, seconds)

    def _highwater(self, topic: str, partition: int) -> int | None:
        return self.app.consumer.highwater(_tp(topic, partition))
