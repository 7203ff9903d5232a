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

Step 1 (decode and detect) and partition restore/revoke are here; the re-read checks are in
stream/recheck.py, steps 2 and 3 (store, snapshot) in stream/writestep.py, and the batch types
(`Msg`, `BatchResult`, `describe`) in stream/batch.py — all importable from here.

>>> m = Msg("t", 0, 5, b'{"kind":"usage"}')
>>> m.key
't:0'
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

from keywatch.models.core import CoreOutput
from keywatch.models.events import UsageEvent
from keywatch.stream.batch import BatchResult, Msg, describe  # noqa: F401  (public here too)
from keywatch.stream.decode import EventDecoder, Origin
from keywatch.stream.globalcore import has_pending, order_of, process_global, waiting
from keywatch.stream.partitions import PartitionCores, global_scope, merge_outputs, scope_for
from keywatch.stream.recheck import RecheckSteps
from keywatch.stream.writestep import WriteSteps

log = logging.getLogger(__name__)


class Pipeline(RecheckSteps, WriteSteps):
    """Holds per-partition cores and their consistency bookkeeping; every method is synchronous
    (run in the worker's one I/O thread)."""

    def __init__(self, runtime, decoder: EventDecoder, state, *, topic: str, factory=None, global_factory=None,
                 high_water: dict[str, int] | None = None, legacy: tuple[Any, dict[str, int]] | None = None) -> None:
        self.rt = runtime
        self.decoder = decoder
        self.state = state
        self.topic = topic
        self.cores: PartitionCores = runtime.core if isinstance(runtime.core, PartitionCores) else PartitionCores(factory, global_factory)
        runtime.core = self.cores  # HTTP views read this facade
        self.in_state: dict[str, int] = {}  # offsets included in core state, per "topic:partition"
        self.high_water: dict[str, int] = dict(high_water or {})  # offsets whose output may be stored
        self.legacy = legacy  # a pre-partition 'core' snapshot: each partition starts from a copy
        # Offsets whose events the global core (project-level detection) already holds, per
        # "topic:partition". It is snapshotted before the partition cores, so after a crash it
        # may be ahead of a partition's snapshot: those re-read events skip the global core.
        self.g_in_state: dict[str, int] = {}
        if self.cores.global_core is not None:
            self._restore_global()
        # Partitions another worker now holds (revoked, then not assigned back): their buffered
        # messages are skipped and not acked. Between an eager revoke and the new assignment a
        # partition is only parked, and a buffered message of it is processed on the parked core.
        self.foreign: set[int] = set()
        self.parked: dict[int, Any] = {}  # revoked cores, reused if the partition comes back unchanged
        self.dirty: set[int] = set()  # partitions written since their last snapshot
        self.no_baseline: set[tuple[str, str]] = set()  # negative cache of key_baselines lookups
        # key_baselines rows of batches detected but not yet written (the worker detects batch N+1
        # while batch N is written): a key evicted in N and seen in N+1 is restored from here.
        self.unwritten_baselines: dict[tuple[str, str], dict] = {}
        self.last_snapshot = time.monotonic()
        self.snapshot_seconds = 0.0  # duration of the last snapshot that stored something
        self.now = time.monotonic  # wall clock of the cross-partition event-time order (tests set it)
        self.restores: list[dict[str, Any]] = []  # where assigned partitions' state came from (`_restored`)
        # The `projects` tier (KEYWATCH_WORKER_TIER) stores only its detectors' output: the `keys`
        # tier's workers store the events and dead letters of the same messages.
        self.stores_events = getattr(runtime.settings, "worker_tier", "all") != "projects"
        chaos = getattr(runtime.settings, "chaos_sink_fail_file", None)
        self.chaos_file = Path(chaos) if chaos else None

    def _key(self, p: int) -> str:
        return f"{self.topic}:{p}"

    def _restore_global(self) -> None:
        loaded = None
        try:
            loaded = self.state.load_snapshot(global_scope(self.topic, self.rt.settings.worker_instance))
        except Exception as exc:  # a bad snapshot must not stop ingestion
            log.warning("not restoring the global core's snapshot: %s", exc)
        if loaded is None and self.legacy is not None:
            from keywatch.models.registry import restrict

            loaded = restrict(pickle.loads(pickle.dumps(self.legacy[0])), "global"), dict(self.legacy[1])
        if loaded is not None and loaded[0] is not None:
            self.cores.global_core = loaded[0]
            self.g_in_state = {k: int(v) for k, v in loaded[1].items()}

    def forget_offsets(self, key: str) -> None:
        """The broker lost partition `key` (restart): its offsets start again from 0."""
        self.in_state.pop(key, None)
        self.g_in_state.pop(key, None)

    # --- partitions: restore on assignment, snapshot on revocation -----------------------------
    def assign(self, partitions: set[int]) -> None:
        if self.cores.global_core is not None:  # a new partition holds the order back until it speaks or idles
            order_of(self.cores.global_core).assign(partitions, self.now())
        for p in sorted(partitions):
            if p not in self.cores.cores:
                self._restore(p)
        for p in [p for p in self.parked if p not in partitions]:
            del self.parked[p]  # now another worker's
            self.foreign.add(p)
        self.foreign -= set(partitions)

    def _restore(self, p: int) -> None:
        key, scope = self._key(p), scope_for(self.topic, p)
        offs, source = self.state.snapshot_offsets(scope), "new"
        parked = self.parked.pop(p, None)
        if parked is not None and (offs or {}).get(key, -1) == self.in_state.get(key, -1):
            self.cores.adopt(p, parked)  # nobody processed it meanwhile: no need to unpickle
            source = "parked"
        else:
            loaded = None
            try:
                loaded = self.state.load_snapshot(scope) if offs is not None else None
            except Exception as exc:  # a bad snapshot must not stop ingestion
                log.warning("not restoring snapshot of partition %d: %s", p, exc)
            if loaded is None and self.legacy is not None:
                legacy = pickle.loads(pickle.dumps(self.legacy[0]))
                if self.cores.global_core is not None:  # the global core runs the project level
                    from keywatch.models.registry import restrict

                    legacy = restrict(legacy, "partition")
                loaded, source = (legacy, self.legacy[1]), "legacy"
            elif loaded is not None:
                source = "snapshot"
            core, snap = loaded if loaded is not None else (None, {})
            source = source if core is not None else "new"
            self.cores.adopt(p, core if core is not None else self.cores.factory())
            self.in_state.pop(key, None)
            if key in snap:
                self.in_state[key] = int(snap[key])
        hw = self.state.high_water(self.topic).get(p)
        if hw is not None:
            self.high_water[key] = max(self.high_water.get(key, -1), hw)
        self._restored(p, source)

    def _restored(self, p: int, source: str) -> None:
        """Say where a partition's state came from: log, `keywatch_partition_restores_total`,
        and `restores` (the worker's status file): snapshot, parked (our own), legacy or new."""
        offset = self.in_state.get(self._key(p), -1)
        self.restores.append({"partition": p, "source": source, "offset": offset, "at": round(time.time(), 3)})
        del self.restores[:-100]
        metrics = getattr(self.rt, "metrics", None)
        if metrics is not None:
            metrics.partition_restores.labels(source).inc()
        if source == "snapshot":
            log.info("restored snapshot %s at offset %d", scope_for(self.topic, p), offset)
        else:
            log.info("partition %s:%d starts from %s state (offset %d)", self.topic, p, source, offset)

    def revoke(self, partitions: set[int]) -> None:
        """Snapshot (when written since the last one) and park the cores of revoked partitions."""
        if self.cores.global_core is not None:  # they no longer hold back the event-time order
            order_of(self.cores.global_core).forget(partitions)
        for p in sorted(partitions):
            core = self.cores.cores.pop(p, None)
            if core is None:
                continue
            if p in self.dirty:
                try:
                    self.state.save_snapshot(core, {self._key(p): self.in_state[self._key(p)]}, scope_for(self.topic, p))
                    self.dirty.discard(p)
                except Exception as exc:  # the next owner re-reads from the last snapshot instead
                    log.warning("snapshot of revoked partition %d failed: %s", p, exc)
                    self.dirty.discard(p)
                    continue
            self.parked[p] = core

    # --- step 1: decode and detect (holds no I/O except the re-delivery lookups) ---------------
    def process(self, msgs: list[Msg]) -> BatchResult:
        res = BatchResult(None, [], {}, messages=len(msgs))
        per_part: dict[int, tuple[list, dict[str, int]]] = {}
        recheck_ids: list[str] = []
        global_has: list[str] = []  # events of messages the global core already holds (recovery)
        g_state = self.g_in_state if self.cores.global_core is not None else {}
        recheck_msgs = 0
        for m in msgs:
            if m.partition in self.foreign:
                res.skipped_messages += 1  # revoked while buffered: the new owner reads it
                continue
            res.last[m.key] = max(res.last.get(m.key, -1), m.offset)
            if m.offset <= self.in_state.get(m.key, -1):
                res.skipped_messages += 1
                continue
            if m.timestamp is not None:
                res.oldest_ts = m.timestamp if res.oldest_ts is None else min(res.oldest_ts, m.timestamp)
            ok, bad = self.decoder.decode(m.value, Origin(m.topic, m.partition, m.offset))
            p, o = m.partition, m.offset
            for e in ok:  # the offset travels with the event, to its `usage_events` row
                if e.__class__ is UsageEvent:
                    e.kafka_partition, e.kafka_offset = p, o
            if m.offset <= self.high_water.get(m.key, -1):  # re-read: may already be stored
                recheck_ids += [e.event_id for e in ok]
                recheck_msgs += 1
            if g_state and m.offset <= g_state.get(m.key, -1):
                global_has += [e.event_id for e in ok]
            res.dead.extend(bad)
            evs, rejected = per_part.setdefault(m.partition, ([], {}))
            evs.extend(ok)
            for d in bad:
                rejected[d.reason] = rejected.get(d.reason, 0) + 1
        outs = []
        for p, (evs, rejected) in sorted(per_part.items()):
            if p not in self.cores.cores:
                self._restore(p)
            core = self.cores.core_for(p)
            self._restore_baselines(core, evs)
            outs.append(core.process(evs, rejected=None if self.cores.global_core is not None else rejected))
        res.out = merge_outputs(outs)
        if self.cores.global_core is not None and (per_part or has_pending(self.cores.global_core)):
            self._process_global(res, outs, per_part, set(global_has))
        if recheck_msgs:
            res.rechecked = True
            self._drop_stored(res, recheck_ids)
        if res.out is not None:
            for r in res.out.rows.get("key_baselines", ()):
                self.unwritten_baselines[(r.get("provider"), r.get("key_id"))] = r
        return res

    def _process_global(self, res: BatchResult, outs: list, per_part: dict, skip: set[str]) -> None:
        s = self.rt.settings
        g = process_global(self.cores.global_core, outs, per_part, skip, now=self.now(),
                           idle_s=s.global_order_idle_s, max_pending=s.global_order_max_pending)
        if res.out is None:  # nothing new from partitions, only released events: their rows are stored
            res.out = CoreOutput([], [], [], g.alerts, g.scores, g.rows)
            return
        res.out.alerts += g.alerts
        res.out.scores += g.scores
        for t, rows in g.rows.items():
            res.out.rows.setdefault(t, []).extend(rows)

    def global_ready(self) -> bool:
        """Project-level events wait (`EventTimeOrder`) and some could go now: the timer then
        runs an empty batch to release them, e.g. once the partitions have gone quiet."""
        g = self.cores.global_core
        return has_pending(g) and order_of(g).ready(self.now(), self.rt.settings.global_order_idle_s)

    def tracked_keys(self) -> int:
        return self.cores.tracked_keys()

    def spilled(self) -> tuple[int, int]:
        return self.cores.spilled()

    def project_level_waiting(self) -> int:
        """Events the worker-wide core has not run yet: waiting for lagging partitions
        (`EventTimeOrder`); 0 without a worker-wide core (the `keys` tier). Read while the
        detection thread may be changing them (a gauge, as `tracked_keys`), so it never creates
        the order (`order_of` would): that belongs to detection."""
        return waiting(self.cores.global_core)
