"""The pure detection core: a batch of events in → rows, scores and alerts out.

It knows nothing of Kafka or ClickHouse. The faust worker, `keywatch replay`, the benchmarks
and the tests all drive this same object. Each batch is deduplicated on `event_id`, put in
event-time order, enriched (prices), and passed to every detector in turn; detectors report
`Finding`s to the shared `IncidentBook`, emit per-key scores and, when they own a table, rows
for it. The whole core (detectors included) pickles, so its state can be snapshotted.

>>> from keywatch.models.events import UsageEvent
>>> core = DetectionCore(detectors=[])
>>> ev = UsageEvent(event_id="e1", ts=1795622400000, provider="openai", key_id="k", model="m")
>>> out = core.process([ev, ev])
>>> len(out.usage), out.duplicates
(1, 1)
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Iterable, Protocol, runtime_checkable

from keywatch.models.alerts import Alert, Finding, IncidentBook
from keywatch.models.dedupe import DedupeWindow
from keywatch.models.events import AuditEvent, BillingEvent, Event, UsageEvent


@dataclass(slots=True)
class ScoreRow:
    ts_ms: int
    provider: str
    key_id: str | None
    project: str | None
    detector: str
    score: float  # [0, 1], higher = more anomalous
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """One batch, deduplicated and in event-time order, split by kind."""

    usage: list[UsageEvent]
    audit: list[AuditEvent]
    billing: list[BillingEvent]
    rejected: dict[str, int] = field(default_factory=dict)  # dead letters in this batch, by reason


class Context:
    """What a detector may do while processing a batch."""

    def __init__(self, book: IncidentBook, watermark_ms: int, want_rows: bool = True) -> None:
        self.book = book
        self.watermark_ms = watermark_ms  # highest event time seen so far (this batch included)
        # False when the caller discards score and table rows (`keywatch replay` keeps only
        # alerts): `score`/`emit` drop them, and hot paths skip building them. Detection state
        # and alerts never depend on rows.
        self.want_rows = want_rows
        self.alerts: list[Alert] = []
        self.scores: list[ScoreRow] = []
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def report(self, finding: Finding) -> Alert | None:
        alert = self.book.report(finding)
        if alert is not None:
            self.alerts.append(alert)
        return alert

    def score(self, row: ScoreRow) -> None:
        if self.want_rows:
            self.scores.append(row)

    def emit(self, table: str, row: dict[str, Any]) -> None:
        """A row for a table the detector owns (created by its own migration)."""
        if self.want_rows:
            self.rows.setdefault(table, []).append(row)

    def emit_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        """`emit` for many rows of one table, in order."""
        if self.want_rows:
            self.rows.setdefault(table, []).extend(rows)


@runtime_checkable
class Detector(Protocol):
    """A detector: stateful, picklable, processes whole batches in event-time order.

    Rules: score before learn; use only events with ts ≤ the finding's `ts_ms`; do not learn
    from a key while `ctx.book` has an incident open for it (baseline protection).
    """

    name: str

    def process(self, batch: Batch, ctx: Context) -> None: ...


@runtime_checkable
class Enricher(Protocol):
    """Fills derived fields on usage events (e.g. `cost_usd`, `price_source`) before detection."""

    def enrich(self, usage: list[UsageEvent]) -> None: ...


@dataclass(slots=True)
class CoreOutput:
    usage: list[UsageEvent]
    audit: list[AuditEvent]
    billing: list[BillingEvent]
    alerts: list[Alert]
    scores: list[ScoreRow]
    rows: dict[str, list[dict[str, Any]]]
    duplicates: int = 0
    # Events older than the minute the core had reached before this batch: minute series (cost
    # spikes) count them in a later minute, so their input is out of event-time order across
    # batches, and where they land depends on the batch cuts (docs/operations.md).
    late: int = 0


class DetectionCore:
    def __init__(
        self,
        detectors: Iterable[Detector],
        enrichers: Iterable[Enricher] = (),
        *,
        quiet_ms: int = 3_600_000,
        dedupe_capacity: int = 200_000,
    ) -> None:
        self.detectors = list(detectors)
        self.enrichers = list(enrichers)
        self.book = IncidentBook(quiet_ms=quiet_ms)
        self.dedupe_capacity = dedupe_capacity
        # Dedupe window: the last `dedupe_capacity` kept ids, as digests (models/dedupe.py).
        self._window = DedupeWindow()
        self.watermark_ms = 0

    def detector(self, name: str) -> Detector | None:
        return next((d for d in self.detectors if d.name == name), None)

    def _dedupe(self, events: Iterable[Event]) -> tuple[list[Event], int]:
        kept = list(events)
        ids = [e.event_id for e in kept]
        if not self.dedupe_capacity:  # no window (the worker's global core): within the batch only
            if len(set(ids)) == len(ids):
                return kept, 0
            seen: set[str] = set()
            out = []
            for i in ids:
                out.append(i not in seen)
                seen.add(i)
        else:
            out = self._window.keep(ids, self.dedupe_capacity)
        if all(out):
            return kept, 0
        return [e for e, new in zip(kept, out) if new], out.count(False)

    def __getstate__(self) -> dict:
        st = dict(self.__dict__)
        # The window as plain data, and an empty `_order` (the ids themselves until session 23):
        # the code before loads this snapshot too, with an empty window.
        st["_window_digests"] = st.pop("_window").__getstate__()
        st["_order"] = deque()
        return st

    def __setstate__(self, st: dict) -> None:
        window = st.pop("_window_digests", None)
        old = st.pop("_seen", None)  # older snapshots: an OrderedDict of the ids
        order = st.pop("_order", old)
        self.__dict__.update(st)
        self._window = DedupeWindow()
        if order:  # the ids themselves: written by code before session 23 (even over a later snapshot)
            self._window.load_ids(list(order), self.dedupe_capacity)
        elif window is not None:
            self._window.__setstate__(window)

    def process(self, events: Iterable[Event], rejected: dict[str, int] | None = None, *, rows: bool = True) -> CoreOutput:
        """Process one batch. `rejected` counts this batch's dead letters by reason (for health).
        With `rows=False` the output holds no score or table rows (alerts and state are the same)."""
        kept, dups = self._dedupe(events)
        kept.sort(key=_ts)  # stable: equal times keep arrival order
        # Split by exact type (anything else is ignored, as before); usually all usage: one pass.
        usage = [e for e in kept if e.__class__ is UsageEvent]
        if len(usage) == len(kept):  # the common case: usage only
            audit, billing = [], []
        else:
            audit = [e for e in kept if e.__class__ is AuditEvent]
            billing = [e for e in kept if e.__class__ is BillingEvent]
        for enricher in self.enrichers:
            enricher.enrich(usage)
        late = 0
        if kept:
            late = bisect.bisect_left(kept, self.watermark_ms // 60000 * 60000, key=_ts)  # kept is sorted
            self.watermark_ms = max(self.watermark_ms, kept[-1].ts_ms)
        ctx = Context(self.book, self.watermark_ms, rows)
        batch = Batch(usage, audit, billing, dict(rejected or {}))
        for det in self.detectors:
            det.process(batch, ctx)
        ctx.alerts.extend(self.book.expire(self.watermark_ms))
        return CoreOutput(usage, audit, billing, ctx.alerts, ctx.scores, ctx.rows, dups, late)

    def feedback(self, alert_id: str, label: str, now_ms: int, until_ms: int | None = None) -> Alert | None:
        """Analyst feedback (`not_anomaly`, `planned_activity`, `confirmed`, …) on an open alert.

        Detectors that implement `on_feedback(alert, label, until_ms)` use it to suppress repeats
        and to learn (e.g. accept the new behaviour into the baseline). Returns the alert, if open.
        """
        alert = next((a for a in self.book.open.values() if a.alert_id == alert_id), None)
        if alert is None:
            return None
        for det in self.detectors:
            hook = getattr(det, "on_feedback", None)
            if hook is not None:
                hook(alert, label, until_ms)
        if label in ("not_anomaly", "planned_activity"):
            return self.book.set_status(alert_id, "resolved", now_ms)
        return alert

    def describe_key(self, key_id: str) -> dict[str, Any]:
        """Risk, baseline summary and recent evidence for one key, from every detector that knows it."""
        out: dict[str, Any] = {"key_id": key_id, "open_alerts": [
            a.to_contract() for k, a in self.book.open.items() if k[2] == key_id]}
        for det in self.detectors:
            hook = getattr(det, "describe_key", None)
            if hook is not None:
                info = hook(key_id)
                if info:
                    out[det.name] = info
        return out


_ts = attrgetter("ts_ms")
