"""Helpers shared by the worker integration tests."""

from __future__ import annotations

import orjson

from keywatch.models.registry import build_core
from keywatch.settings import Settings
from keywatch.sinks.clickhouse import ClickHouseSink
from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.decode import EventDecoder
from keywatch.stream.metrics import Metrics
from keywatch.stream.partitions import PartitionCores
from keywatch.stream.pipeline import Msg, Pipeline
from keywatch.stream.produce import partition_messages
from keywatch.stream.runtime import WorkerRuntime
from keywatch.stream.state import StreamState

TOPIC = "ev"  # the in-process pipelines' input topic


def prepare(w) -> Settings:
    """The worker harness's settings, with its topics created on its broker."""
    s = Settings.from_env(w.env)
    ensure_topics(w.env["KEYWATCH_KAFKA_BOOTSTRAP"], topic_specs(s))
    return s


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    """Last offset per non-empty partition, as `topic:partition` → offset."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {f"{tp.topic}:{tp.partition}": o - 1 for tp, o in ends.items() if o > 0}
    finally:
        c.close()


def pipeline_worker(client, settings, *, global_core: bool = False) -> Pipeline:
    """An in-process worker (`Pipeline`) on `client`; several of them stand for one group's workers."""
    db = settings.clickhouse_database
    g = (lambda: build_core(settings, "global")) if global_core else None
    part = (lambda: build_core(settings, "partition")) if global_core else (lambda: build_core(settings))
    rt = WorkerRuntime(settings=settings, sink=ClickHouseSink(client, db), core=PartitionCores(part, g), metrics=Metrics())
    state = StreamState(client, db, "group-1", b"secret")
    hw = {f"{TOPIC}:{p}": o for p, o in state.high_water(TOPIC).items()}
    return Pipeline(rt, EventDecoder.from_settings(settings, streaming=True), state, topic=TOPIC, high_water=hw)


def pipeline_messages(events: list[dict]) -> list[Msg]:
    """Events as 10-event messages over 3 partitions, grouped and placed as the producer does."""
    offsets: dict[int, int] = {}
    out = []
    for p, group in partition_messages(events, 10, 3):
        offsets[p] = offsets.get(p, -1) + 1
        out.append(Msg(TOPIC, p, offsets[p], orjson.dumps(group)))
    return out


def run_batches(pipe: Pipeline, msgs: list[Msg], batch: int = 8) -> None:
    for i in range(0, len(msgs), batch):
        pipe.write(pipe.process(msgs[i:i + batch]))
