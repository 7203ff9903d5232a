"""Key theft's project populations shared between a group's workers over Kafka.

Each worker holds only its partitions' keys, so it learns only its share of a project's
population, against which the project's new keys are judged (models/keytheft_share.py says
what that cost). Every `KEYWATCH_POPULATION_SHARE_S` a worker sends what its populations
learned since the last time, one message per population keyed by its name, to
`KEYWATCH_POPULATION_TOPIC`; every worker reads the whole topic (no consumer group: every
partition assigned) and learns the messages of the other workers of its group
(`KEYWATCH_WORKER_ID`; another deployment's on the same topic are skipped).

* Reading starts at the topic's end. A worker's populations come back from its snapshot,
  merges included (a worker that takes over partitions starts from the populations in their
  snapshots), and their `told` counts keep requests from being sent twice; a restarted worker
  sends its populations' items once more (idempotent). What was sent while a worker was down
  reaches it as those callers are learned again (each caller, each hour it calls).
* `collect` and `merge` run on the detection thread, under the core lock: a batch, a snapshot
  or an HTTP view never meets a population half-merged.
* A message that does not decode is a dead letter (reason `bad_population_delta`: the DLQ topic
  and the `dead_letters` table, as bad input is; one per worker that read it), logged and skipped.
* A worker alone in its group sends too: one that joins later hears from it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgspec

from keywatch.models.keytheft_share import PopulationShare, decode_delta, encode_delta
from keywatch.stream.consumer import dead_letter_record
from keywatch.stream.decode import DeadLetter

log = logging.getLogger("keywatch.worker")
PENDING_MAX = 100_000  # deltas held until this worker has a key-theft detector (no partition yet)


class PopulationSync:
    """Sends this worker's population deltas and merges the others' (`run` until cancelled)."""

    def __init__(self, settings, bootstrap: str, consumer) -> None:
        self.topic, self.dlq = settings.population_topic, settings.dlq_topic
        self.every = settings.population_share_s
        self.bootstrap = bootstrap
        self.max_bytes = max(1_048_576, settings.max_message_bytes)
        self.payload_max = settings.dlq_payload_max_bytes
        self.consumer = consumer  # stream/consumer.py `Consumer`: its detection thread, core lock, DLQ
        self.share = PopulationShare(origin=uuid.uuid4().hex[:16], group=settings.group_id)
        self.counts = {"sent": 0, "merged": 0, "bad": 0}
        self.pending: list = []  # other workers' deltas that came before this worker's first partition
        self.unsent: list = []
        self.ready = asyncio.Event()  # set once the reader is at the topic's end
        self.producer = None
        self.retry_s = 5.0

    def _pops(self) -> dict | None:
        kt = self.consumer.pipeline.cores.shared_key_theft
        return kt.pops if kt is not None else None

    async def _on_detect(self, fn, *args):
        c = self.consumer
        async with c.rt.core_lock:
            fut = asyncio.get_running_loop().run_in_executor(c.detect, fn, *args)
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:  # shutting down: the lock is held until the thread is done
                await asyncio.wait([fut])
                raise

    def _collect(self) -> list:
        pops = self._pops()
        return self.share.collect(pops) if pops is not None else []

    def _merge(self, deltas: list) -> int:
        pops = self._pops()
        if pops is None:
            self.pending = (self.pending + deltas)[-PENDING_MAX:]
            return 0
        deltas, self.pending = self.pending + deltas, []
        for d in deltas:
            self.share.merge(pops, d)
        return len(deltas)

    async def publish(self) -> int:
        """Send what this worker's populations learned since the last call (and what a failed
        call did not send); returns how many deltas were sent."""
        deltas = self.unsent + await self._on_detect(self._collect)
        self.unsent = deltas[-PENDING_MAX:]  # until the broker has them
        futs = [await self.producer.send(self.topic, encode_delta(d), key=d.pop.encode()) for d in deltas]
        for f in futs:
            await f
        self.unsent = []
        self._count("sent", len(deltas))
        return len(deltas)

    async def take(self, batch: dict) -> int:
        """Merge one `getmany` result's deltas of other workers; returns how many were merged."""
        deltas = []
        for msgs in batch.values():
            for m in msgs:
                try:
                    d = decode_delta(m.value or b"")
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    await self._dead(m, exc)
                    continue
                if self.share.wants(d):
                    deltas.append(d)
        if not deltas and not self.pending:
            return 0
        n = await self._on_detect(self._merge, deltas)
        self._count("merged", n)
        return n

    def _count(self, what: str, n: int) -> None:
        if n:
            self.counts[what] += n
            self.consumer.m.population_deltas.labels(what).inc(n)
            self.consumer.status.update(force=False, populations=dict(self.counts))

    async def _dead(self, m, exc: Exception) -> None:
        self._count("bad", 1)
        raw = m.value or b""
        d = DeadLetter("bad_population_delta", str(exc)[:500], m.topic, m.partition, m.offset, -1,
                       raw[: self.payload_max], len(raw), int(time.time() * 1000))
        log.warning("skipped a bad message of %s (partition %d, offset %d): %s", m.topic, m.partition, m.offset, exc)
        c = self.consumer
        c.m.events_rejected.labels(d.reason).inc()
        await (await self.producer.send(self.dlq, dead_letter_record(d), key=f"{d.topic}:{d.partition}:{d.offset}".encode()))
        await c._run(c.pipeline.rt.sink.write_dead_letters, [d])

    async def run(self) -> None:
        """Share until cancelled; started again after a failure (the broker away at start, or
        restarted without the topic: the embedded one keeps nothing)."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("population sharing stopped, starting again in %.0f s: %s", self.retry_s, exc)
                await asyncio.sleep(self.retry_s)

    async def _run_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.errors import KafkaError

        producer = self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2 * self.max_bytes,
                                    client_id="keywatch-populations")
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                  auto_offset_reset="latest", client_id="keywatch-populations",
                                  max_partition_fetch_bytes=2 * self.max_bytes)
        try:
            await producer.start()
            await reader.start()
            await reader.topics()  # metadata, so that the topic's partitions are known
            tps = [TopicPartition(self.topic, p) for p in sorted(reader.partitions_for_topic(self.topic) or {0})]
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            for tp in tps:
                await reader.position(tp)  # resolve the end now: what is sent from here on is read
            self.ready.set()
            due = time.monotonic() + self.every
            while True:
                batch = await reader.getmany(timeout_ms=int(min(1.0, self.every) * 1000), max_records=1000)
                try:
                    await self.take(batch)
                    if time.monotonic() >= due:
                        due = time.monotonic() + self.every
                        await self.publish()
                except Exception as exc:  # the broker is away (the deltas wait for the next round), or a bug
                    log.warning("population sharing: %s", exc, exc_info=not isinstance(exc, (OSError, KafkaError)))
        finally:
            for client in (reader, producer):
                try:
                    await client.stop()
                except Exception as exc:  # never started, or the connection is gone
                    log.debug("population sharing: stopping %s: %s", type(client).__name__, exc)
