"""Steps 2 and 3 of `Pipeline` (stream/pipeline.py): store a detected batch, then snapshot.

`write` records the intent mark (`stream_offsets`) before writing, so a re-read knows what may
already be stored; a retry re-checks ids first. `snapshot` stores one row per partition
written since its last snapshot (the global core first); the worker acks only after it.
`snapshot_start` / `snapshot_finish` do the same in a forked child (stream/snapfork.py), so
detection goes on while the state is pickled.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from keywatch.stream.batch import BatchResult
from keywatch.stream.partitions import global_scope, scope_for
from keywatch.stream.snapfork import ForkedSnapshot, fork_snapshot


class WriteSteps:
    """Mixed into `Pipeline`: uses its `rt`, `state`, `cores`, offsets and bookkeeping sets."""

    # --- step 2: store -----------------------------------------------------------------------
    def write(self, res: BatchResult, attempt: int = 0) -> None:
        """Record intent, then write everything. Raises on failure (caller retries, never acks)."""
        if self.chaos_file is not None and self.chaos_file.exists():
            raise ConnectionError(f"chaos: ClickHouse writes fail while {self.chaos_file} exists")
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
        if not self.stores_events:  # the `projects` tier: its detectors' output only
            if res.out is not None:
                self.rt.sink.write(replace(res.out, usage=[], audit=[], billing=[]))
        elif res.out is not None:
            self.rt.sink.write(res.out, res.dead)  # usage events carry their partition and offset
            for r in res.out.rows.get("key_baselines", ()):
                k = (r.get("provider"), r.get("key_id"))
                self.no_baseline.discard(k)
                if self.unwritten_baselines.get(k) is r:
                    del self.unwritten_baselines[k]
        else:
            self.rt.sink.write_dead_letters(res.dead)
        g = self.cores.global_core is not None
        for k, o in res.last.items():
            self.in_state[k] = max(self.in_state.get(k, -1), o)
            if g:
                self.g_in_state[k] = max(self.g_in_state.get(k, -1), o)
            self.dirty.add(int(k.rsplit(":", 1)[1]))

    # --- step 3: snapshot (then the caller acks everything written so far) ---------------------
    def snapshot_due(self, interval_s: float) -> bool:
        """`interval_s` after the last snapshot — or longer, when snapshots are slow: detection
        waits while one is taken, so a snapshot of d seconds is followed by at least d × (1 −
        share) / share seconds of work (`KEYWATCH_SNAPSHOT_MAX_SHARE`; 0.1: 9 d). A crash then
        re-reads more (still exactly once), and offsets are committed less often."""
        share = self.rt.settings.snapshot_max_share
        gap = max(interval_s, self.snapshot_seconds * (1.0 - share) / share)
        return time.monotonic() - self.last_snapshot >= gap

    def _snapshot_items(self) -> list[tuple]:
        """(core, offsets, scope) of what a snapshot stores now: the global core first, then each
        partition written since its last snapshot (stored in one INSERT: all rows or none)."""
        items = []
        if self.cores.global_core is not None:
            items.append((self.cores.global_core, dict(self.g_in_state), global_scope(self.topic, self.rt.settings.worker_instance)))
        for p in sorted(self.dirty):
            if p in self.cores.cores:
                key = self._key(p)
                items.append((self.cores.cores[p], {key: self.in_state.get(key, -1)}, scope_for(self.topic, p)))
        return items

    def snapshot_start(self, directory: Path, delay_s: float = 0.0) -> ForkedSnapshot | None:
        """Fork a child that snapshots what `snapshot` would (stream/snapfork.py); None if
        nothing was written since the last one. The caller finishes it with `snapshot_finish`
        and acks only then."""
        if not self.dirty:
            return None
        snap = fork_snapshot(self.state, self._snapshot_items(), directory, delay_s=delay_s)
        snap.partitions = set(self.dirty)
        self.dirty.clear()  # batches written from now on mark their partitions again
        self.last_snapshot = time.monotonic()
        return snap

    def snapshot_finish(self, snap: ForkedSnapshot) -> int:
        """Store a forked snapshot's rows; returns the bytes stored. On failure its partitions
        are dirty again (the next snapshot covers them) and the error is raised."""
        try:
            size = self.state.insert_snapshot_rows(snap.rows())
        except Exception:
            self.dirty |= snap.partitions
            raise
        self.snapshot_seconds = snap.seconds
        return size

    def snapshot(self) -> int:
        """One snapshot row per partition written since its last one (and the global core's),
        taken in this process; returns the bytes stored."""
        started = time.monotonic()
        size = 0
        if self.dirty:
            taken_ms = int(time.time() * 1000)
            size = self.state.insert_snapshot_rows([self.state.snapshot_row(core, offsets, scope, taken_ms)
                                                    for core, offsets, scope in self._snapshot_items()])
            self.dirty.clear()
        self.last_snapshot = time.monotonic()
        if size:  # how long taking one lasts (spaces the periodic ones: `snapshot_due`)
            self.snapshot_seconds = self.last_snapshot - started
        return size
