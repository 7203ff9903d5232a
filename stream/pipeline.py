"""One batch of Kafka messages → decode → detection core → ClickHouse, without Kafka or faust.

The faust agent (stream/worker.py) hands each batch here as `Msg`s and acks offsets only when
`Pipeline` says the output is durable. Exactly-once output over at-least-once delivery:

* Messages at or below a partition's offset in the restored snapshot are already in the
  core's state (and stored): skipped.
* Before a batch is written, its highest offset per partition is recorded in
  `stream_offsets` (intent). After a restart, re-read messages at or below that mark may
  already be stored, so their `usage_events` ids and dead letters are looked up and not
  written again — but their events still go through the core, to rebuild its state.
* A failed write is retried (see `write_with_retry`); a retry re-checks ids, so a partly
  written batch is completed, never duplicated.

>>> m = Msg("t", 0, 5, b'{"kind":"usage"}')
>>> m.key
't:0'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keywatch.models.core import CoreOutput
from keywatch.stream.decode import DeadLetter, EventDecoder, Origin


@dataclass(slots=True)
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: float | None = None  # producer time, epoch seconds

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass
class BatchResult:
    out: CoreOutput | None
    dead: list[DeadLetter]
    offsets: dict[str, tuple[int, int]]  # event_id → (partition, offset)
    last: dict[str, int]  # "topic:partition" → highest offset in the batch
    rechecked: bool = False  # part of the batch may already be stored
    skipped_messages: int = 0
    redelivered_rows: int = 0  # rows not written again because they were already stored
    messages: int = 0
    oldest_ts: float | None = None
    started: float = field(default_factory=time.perf_counter)


class Pipeline:
    """Holds the core's consistency bookkeeping; every method is synchronous (run in one thread)."""

    def __init__(self, runtime, decoder: EventDecoder, state, *, snapshot_offsets: dict[str, int] | None = None,
                 high_water: dict[str, int] | None = None) -> None:
        self.rt = runtime
        self.decoder = decoder
        self.state = state
        self.in_state: dict[str, int] = dict(snapshot_offsets or {})  # offsets included in core state
        self.high_water: dict[str, int] = dict(high_water or {})  # offsets whose output may be stored
        self.last_snapshot = time.monotonic()

    # --- step 1: decode and detect (holds no I/O except the re-delivery lookups) ---------------
    def process(self, msgs: list[Msg]) -> BatchResult:
        res = BatchResult(None, [], {}, {}, messages=len(msgs))
        events = []
        recheck_ids: list[str] = []
        recheck_msgs = 0
        for m in msgs:
            res.last[m.key] = max(res.last.get(m.key, -1), m.offset)
            if m.offset <= self.in_state.get(m.key, -1):
                res.skipped_messages += 1
                continue
            if m.timestamp is not None:
                res.oldest_ts = m.timestamp if res.oldest_ts is None else min(res.oldest_ts, m.timestamp)
            ok, bad = self.decoder.decode(m.value, Origin(m.topic, m.partition, m.offset))
            again = m.offset <= self.high_water.get(m.key, -1)
            for e in ok:
                res.offsets[e.event_id] = (m.partition, m.offset)
                if again:
                    recheck_ids.append(e.event_id)
            if again:
                recheck_msgs += 1
            res.dead.extend(bad)
            events.extend(ok)
        res.out = self.rt.core.process(events)
        if recheck_msgs:
            res.rechecked = True
            self._drop_stored(res, recheck_ids)
        return res

    def _drop_stored(self, res: BatchResult, ids: list[str]) -> None:
        stored = self.state.existing_usage_ids(ids) if ids else set()
        if stored and res.out is not None:
            before = len(res.out.usage)
            res.out.usage = [e for e in res.out.usage if e.event_id not in stored]
            res.redelivered_rows += before - len(res.out.usage)
        if res.dead:
            seen = self.state.existing_dead_letters(res.dead[0].topic, [(d.partition, d.offset) for d in res.dead])
            if seen:
                before = len(res.dead)
                res.dead = [d for d in res.dead if (d.partition, d.offset, d.index) not in seen]
                res.redelivered_rows += before - len(res.dead)

    # --- step 2: store -----------------------------------------------------------------------
    def write(self, res: BatchResult, attempt: int = 0) -> None:
        """Record intent, then write everything. Raises on failure (caller retries, never acks)."""
        if attempt:
            # A failed attempt may have stored part of the batch: look again before rewriting.
            self._drop_stored(res, [e.event_id for e in res.out.usage] if res.out is not None else [])
        intent = {k: o for k, o in res.last.items() if o > self.high_water.get(k, -1)}
        if intent:
            by_topic: dict[str, dict[int, int]] = {}
            for k, o in intent.items():
                t, p = k.rsplit(":", 1)
                by_topic.setdefault(t, {})[int(p)] = o
            for t, offs in by_topic.items():
                self.state.mark_high_water(t, offs)
            self.high_water.update(intent)
        if res.out is not None:
            self.rt.sink.write(res.out, res.dead, res.offsets)
        else:
            self.rt.sink.write_dead_letters(res.dead)
        for k, o in res.last.items():
            self.in_state[k] = max(self.in_state.get(k, -1), o)

    # --- step 3: snapshot (then the caller acks everything written so far) ---------------------
    def snapshot_due(self, interval_s: float) -> bool:
        return time.monotonic() - self.last_snapshot >= interval_s

    def snapshot(self) -> int:
        size = self.state.save_snapshot(self.rt.core, dict(self.in_state))
        self.last_snapshot = time.monotonic()
        return size

    def tracked_keys(self) -> int:
        n = 0
        for det in self.rt.core.detectors:
            t = getattr(det, "tracked_keys", None)
            t = t() if callable(t) else t
            if isinstance(t, int):
                n = max(n, t)
        return n


def describe(res: BatchResult) -> dict[str, Any]:
    out = res.out
    return {
        "messages": res.messages, "skipped_messages": res.skipped_messages,
        "events": (len(out.usage) + len(out.audit) + len(out.billing)) if out else 0,
        "dead_letters": len(res.dead), "alerts": len(out.alerts) if out else 0,
    }
