"""A stored batch's figures: Prometheus metrics (stream/metrics.py) and the status file.

Called by the consumer (stream/consumer.py) after the batch's write and publish: counts by kind,
duplicates, late events, alerts and their event-to-alert time, dead letters by reason, batch
time, size and bytes, consumer lag per partition, tracked and spilled keys, and the offsets held.
"""

from __future__ import annotations

import time
from typing import Callable

from keywatch.stream.metrics import Metrics
from keywatch.stream.status import StatusFile


def observe_batch(m: Metrics, status: StatusFile, pipeline, highwater: Callable[[str, int], int | None],
                  res, msgs: list, seconds: float) -> None:
    """`highwater(topic, partition)`: the partition's log end (None if not known yet)."""
    out = res.out
    m.messages_in.inc(len(msgs))
    n = 0
    if out is not None:
        for kind, evs in (("usage", out.usage), ("audit", out.audit), ("billing", out.billing)):
            if evs:
                m.events_in.labels(kind).inc(len(evs))
                n += len(evs)
        m.duplicates.inc(out.duplicates + res.redelivered_rows)
        if out.late:
            m.late_events.inc(out.late)
            status.data["late_events"] = status.data.get("late_events", 0) + out.late
        now = time.time()
        for a in out.alerts:
            m.alerts.labels(a.kind, a.severity).inc()
            if res.oldest_ts:
                m.event_to_alert.observe(max(0.0, now - res.oldest_ts))
    for d in res.dead:
        m.events_rejected.labels(d.reason).inc()
    m.batch_latency.observe(seconds)
    m.batch_size.observe(n)
    size = sum(len(x.value) for x in msgs)
    m.batch_bytes.observe(size)
    top = status.data.setdefault("largest_batch", {"messages": 0, "bytes": 0})  # batching limits at work
    top["messages"], top["bytes"] = max(top["messages"], len(msgs)), max(top["bytes"], size)
    for key, off in res.last.items():
        topic, p = key.rsplit(":", 1)
        try:
            hw = highwater(topic, int(p))
            if hw is not None:
                m.consumer_lag.labels(topic, p).set(max(0, hw - off - 1))
        except Exception:  # the consumer may be rebalancing; lag is best effort
            pass
    m.set_keys(pipeline.tracked_keys(), *pipeline.spilled())
    waiting = pipeline.project_level_waiting()
    m.project_level_waiting.set(waiting)
    status.data["project_level_waiting"] = waiting
    status.data["offsets"] = dict(pipeline.in_state)
    status.batch(res, n, [a.to_contract() for a in out.alerts] if out is not None else [])
