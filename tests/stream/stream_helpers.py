"""Helpers shared by the worker integration tests."""

from __future__ import annotations

from keywatch.settings import Settings
from keywatch.stream.broker import ensure_topics, topic_specs


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
