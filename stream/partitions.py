"""One `DetectionCore` per input partition, and a facade that reads like one core for the API.

Messages are keyed by `key_id` (stream/produce.py), so all of a key's events are on one
partition and its detector state can live in that partition's core. The worker holds
``{partition: core}``: when a partition is assigned its core is restored from its own snapshot
(`detector_snapshots`, scope ``p:<topic>:<n>``); when it is revoked the core is snapshotted and
parked (kept only if the same partition comes back unchanged). So a partition moves between
workers of one consumer group *with* its per-key state.

Project-, provider- and model-level detection (cost spikes, budgets, billing, projections,
telemetry health) needs every key of a project, so it is not per partition: the partition cores
are built with ``build_core(settings, "partition")`` and one worker-wide `global_core`
(``build_core(settings, "global")``) is fed each batch's enriched, deduplicated events as the
partition cores output them (stream/pipeline.py). It is snapshotted with the worker's snapshots
(scope ``g:<topic>``). With several workers each global core sees its own partitions' share,
unless the tiers are split (`tier_cores`): `keys` workers in one group, one `projects` worker.

HTTP views (stream/api.py) use ``runtime.core``: `PartitionCores` offers the same
`book` / `feedback` / `describe_key` surface, routed to the core that holds the alert or key
(the global core included).

>>> from keywatch.models.core import DetectionCore
>>> pc = PartitionCores(lambda: DetectionCore(detectors=[]))
>>> pc.core_for(2) is pc.core_for(2), sorted(pc.cores)
(True, [2])
>>> pc.describe_key("k")["open_alerts"]
[]
>>> pc.global_core is None, len(pc.all_cores())
(True, 1)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, DetectionCore
from keywatch.models.spill import spill_totals


def scope_for(topic: str, partition: int) -> str:
    return f"p:{topic}:{partition}"


def global_scope(topic: str, instance: str = "") -> str:
    """Snapshot scope of the worker's global (project-level) core: one per worker instance, so
    workers of one group restore their own project-level state, not the last writer's.

    >>> global_scope("t"), global_scope("t", "worker-1")
    ('g:t', 'g:t:worker-1')
    """
    return f"g:{topic}:{instance}" if instance else f"g:{topic}"


def tier_cores(settings) -> "PartitionCores":
    """The cores of a worker of tier `KEYWATCH_WORKER_TIER`: per-key detectors per partition and
    project/provider-level ones in one worker-wide core (`all`); the `keys` tier has no worker-wide
    core; the `projects` tier's partition cores only price and deduplicate (scope ``prepare``),
    so its global core gets the events partition cores would have given it.

    >>> from keywatch.settings import Settings
    >>> pc = tier_cores(Settings(worker_tier="projects"))
    >>> [d.name for d in pc.core_for(0).detectors], pc.global_core is not None
    ([], True)
    >>> tier_cores(Settings(worker_tier="keys")).global_core is None
    True
    """
    from keywatch.models.registry import build_core

    tier = settings.worker_tier
    per_partition = "prepare" if tier == "projects" else "partition"
    return PartitionCores(lambda: build_core(settings, per_partition),
                          None if tier == "keys" else lambda: build_core(settings, "global"))


def merge_outputs(outs: list[CoreOutput]) -> CoreOutput | None:
    if not outs:
        return None
    if len(outs) == 1:
        return outs[0]
    m = CoreOutput([], [], [], [], [], {}, 0)
    for o in outs:
        m.usage += o.usage
        m.audit += o.audit
        m.billing += o.billing
        m.alerts += o.alerts
        m.scores += o.scores
        m.duplicates += o.duplicates
        m.late += o.late
        for t, rows in o.rows.items():
            m.rows.setdefault(t, []).extend(rows)
    return m


class _BookView:
    """Read/update view over every partition core's `IncidentBook` (keys are disjoint)."""

    def __init__(self, owner: "PartitionCores") -> None:
        self._owner = owner

    @property
    def open(self) -> dict[tuple, Alert]:
        merged: dict[tuple, Alert] = {}
        for core in self._owner.all_cores():
            merged.update(core.book.open)
        return merged

    def _holding(self, alert_id: str) -> DetectionCore | None:
        return next((c for c in self._owner.all_cores()
                     if any(a.alert_id == alert_id for a in c.book.open.values())), None)

    def set_status(self, alert_id: str, status: str, now_ms: int) -> Alert | None:
        core = self._holding(alert_id)
        return core.book.set_status(alert_id, status, now_ms) if core is not None else None

    def is_open(self, *args, **kwargs) -> bool:
        return any(c.book.is_open(*args, **kwargs) for c in self._owner.all_cores())

    def open_for_key(self, provider: str, key_id: str) -> list[Alert]:
        return [a for c in self._owner.all_cores() for a in c.book.open_for_key(provider, key_id)]


class PartitionCores:
    """``{partition: DetectionCore}`` plus the read surface of a single core."""

    def __init__(self, factory: Callable[[], DetectionCore],
                 global_factory: Callable[[], DetectionCore] | None = None) -> None:
        self.factory = factory
        self.global_factory = global_factory
        self.cores: dict[int, DetectionCore] = {}
        # Worker-wide project/provider-level core (None: partition cores run every detector).
        self.global_core: DetectionCore | None = global_factory() if global_factory is not None else None
        self.book = _BookView(self)
        self.shared_key_theft: Any = None  # whose cross-key key-theft state every partition core uses

    def all_cores(self) -> list[DetectionCore]:
        """Every core behind the facade: the partition cores, then the global core."""
        out = list(self.cores.values())
        if self.global_core is not None:
            out.append(self.global_core)
        return out

    def core_for(self, partition: int) -> DetectionCore:
        core = self.cores.get(partition)
        if core is None:
            core = self.adopt(partition, self.factory())
        return core

    def adopt(self, partition: int, core: DetectionCore) -> DetectionCore:
        """Make `core` (new, restored from a snapshot, or parked) partition `partition`'s. Its key
        theft uses the worker's cross-key state (`KeyTheftDetector.SHARED`): the first partition
        core's, so every key of a project on this worker meets one population and one window
        model, as in one core. A restored core's own copy of that state is dropped."""
        self.cores[partition] = core
        kt = core.detector("key_theft")
        if kt is not None and hasattr(kt, "share_from"):
            if self.shared_key_theft is None:
                self.shared_key_theft = kt
            elif kt is not self.shared_key_theft:
                kt.share_from(self.shared_key_theft)
        return core

    def __iter__(self) -> Iterator[tuple[int, DetectionCore]]:
        return iter(list(self.cores.items()))

    @property
    def watermark_ms(self) -> int:
        return max((c.watermark_ms for c in self.all_cores()), default=0)

    @property
    def detectors(self) -> list[Any]:
        return [d for c in self.all_cores() for d in c.detectors]

    def feedback(self, alert_id: str, label: str, now_ms: int, until_ms: int | None = None) -> Alert | None:
        core = self.book._holding(alert_id)
        return core.feedback(alert_id, label, now_ms, until_ms) if core is not None else None

    def describe_key(self, key_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"key_id": key_id, "open_alerts": []}
        for core in self.all_cores():
            info = core.describe_key(key_id)
            out["open_alerts"] += info.pop("open_alerts", [])
            info.pop("key_id", None)
            for name, v in info.items():  # the same detector in both scopes (cost_spike): merge
                if isinstance(out.get(name), dict) and isinstance(v, dict):
                    out[name] = {**out[name], **v}
                else:
                    out[name] = v
        return out

    def spilled(self) -> tuple[int, int]:
        """(live bytes of packed idle state in spill files, keys whose packed state is in memory
        instead: `KEYWATCH_IDLE_SPILL_DIR=memory`, or a file that failed), models/spill.py."""
        return spill_totals(det for core in self.cores.values() for det in core.detectors)

    def tracked_keys(self) -> int:
        n = 0
        for core in self.cores.values():
            m = 0
            for det in core.detectors:
                t = getattr(det, "tracked_keys", None)
                t = t() if callable(t) else t
                if isinstance(t, int):
                    m = max(m, t)
            n += m
        return n
