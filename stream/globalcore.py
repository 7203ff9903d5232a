"""The worker's global (project/provider-level) core: its input, in event-time order.

`Pipeline` (stream/pipeline.py) runs each batch through the partition cores first; their
output — enriched, deduplicated events — plus the batch's dead-letter counts goes through the
worker-wide global core (`build_core(settings, "global")`, see models/registry.py), merged
across partitions into event-time order by `EventTimeOrder`. (Cost-spike findings are stamped
with the end of their minute, so neither tier needs a cross-partition clock for replay's ids.)
"""

from __future__ import annotations

import bisect
from operator import attrgetter

import msgspec

from keywatch.models.core import CoreOutput, DetectionCore
from keywatch.models.events import AuditEvent, BillingEvent, UsageEvent


class EventTimeOrder:
    """A worker's partitions merged into one event-time order for the global core.

    Partitions are consumed unevenly (a restart, a rebalance, one partition with a backlog): fed
    straight through, a partition far ahead would close the project's minutes before a lagging
    partition's events for them arrive, and those would be summed into a later minute — a false
    project-level spike, and a missed one. So, as stream processors do with watermarks, events
    wait here until every *active* partition has reached their time: a partition's mark is the
    highest event time it sent; events at or before the lowest mark of the partitions that sent
    something in the last `idle_s` wall seconds are released, oldest first. An idle or revoked
    partition holds nothing back; when none is active everything goes. At most `max_pending`
    events wait (the oldest are released beyond that). Kept on the global core object, so it is
    snapshotted with it: `g_in_state` ("events the global core holds") stays true.

    >>> from keywatch.models.events import UsageEvent
    >>> ev = lambda i, s: UsageEvent(event_id=f"e{i}", ts=1795622400000 + s * 1000, provider="openai", key_id="k", model="m")
    >>> o = EventTimeOrder()
    >>> o.add(0, [ev(1, 0), ev(2, 300)], now=100.0); o.add(1, [ev(3, 60)], now=100.0)
    >>> [e.event_id for e in o.release(now=100.0, idle_s=2.0)]  # partition 1 is at 60 s
    ['e1', 'e3']
    >>> [e.event_id for e in o.release(now=103.0, idle_s=2.0)]  # both idle: the rest goes
    ['e2']
    """

    # Lowest event time waiting (None: unknown, worked out on demand), so the worker's timer can
    # ask `ready` without a pass over every waiting event; a class default for instances
    # unpickled from snapshots of before it.
    low: int | None = None
    MAX_RUNS = 64  # sorted runs kept apart before they are merged into one

    def __init__(self) -> None:
        self.pending: list = []  # events added since the last release, arrival order
        # Events held back at earlier releases: runs sorted by time, in arrival order. A release
        # sorts only the new events and takes each run's prefix, instead of sorting everything
        # that waits again (7.7 % of a `projects` worker under load).
        self.runs: list[list] = []
        self.marks: dict[int, int] = {}  # partition → highest event time seen
        self.seen: dict[int, float] = {}  # partition → wall time it last sent events

    def __getstate__(self) -> dict:
        # Waiting events are packed with msgpack (≈ 12× faster than pickling each event struct:
        # 1.7 s for a 46 MB global core under load, while detection waited).
        st = dict(self.__dict__)
        st["pending"] = _pack(self.pending)
        st["runs"] = [_pack(r) for r in self.runs]
        return st

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.pending = _unpack(state.get("pending", []))
        self.runs = [_unpack(r) for r in state.get("runs", [])]  # none in snapshots of before the runs

    def __len__(self) -> int:
        """Events waiting."""
        return len(self.pending) + sum(map(len, self.runs))

    def add(self, partition: int, events: list, now: float) -> None:
        if not events:
            return
        times = [e.ts_ms for e in events]
        low = min(times)
        if not self.pending and not self.runs:
            self.low = low
        elif self.low is not None:
            self.low = min(self.low, low)
        self.pending += events
        top = max(times)
        self.marks[partition] = max(self.marks.get(partition, top), top)
        self.seen[partition] = now

    def assign(self, partitions, now: float) -> None:
        """Assigned partitions hold the order back until they send events or go idle (also after a
        restore: `seen` times of another process's clock mean nothing here)."""
        for p in partitions:
            self.marks.setdefault(p, -1)
            self.seen[p] = now

    def forget(self, partitions) -> None:
        """Revoked partitions: their buffered events stay (the core holds them), their mark goes."""
        for p in partitions:
            self.marks.pop(p, None)
            self.seen.pop(p, None)

    def _limit(self, now: float, idle_s: float) -> int | None:
        """Events up to this time may go (None: all of them — no partition is active)."""
        active = [m for p, m in self.marks.items() if now - self.seen.get(p, 0.0) < idle_s]
        return min(active) if active else None

    def ready(self, now: float, idle_s: float) -> bool:
        """Would `release` hand anything out now?

        >>> EventTimeOrder().ready(0.0, 1.0)
        False
        """
        if not self.pending and not self.runs:
            return False
        limit = self._limit(now, idle_s)
        if self.low is None:
            self.low = min([_ts(r[0]) for r in self.runs] + list(map(_ts, self.pending)))
        return limit is None or self.low <= limit

    def release(self, now: float, idle_s: float, max_pending: int = 1_000_000) -> list:
        """Events at or before the limit, oldest first; equal times keep arrival order (every
        sort is stable, and runs and their prefixes are taken in arrival order)."""
        runs = self.runs
        if self.pending:
            self.pending.sort(key=_ts)
            runs.append(self.pending)
            self.pending = []
        if not runs:
            return []
        limit = self._limit(now, idle_s)
        over = sum(map(len, runs)) - max_pending
        if limit is None or over > 0 or len(runs) > self.MAX_RUNS:
            merged = [e for r in runs for e in r]
            merged.sort(key=_ts)
            n = len(merged) if limit is None else max(bisect.bisect_right(merged, limit, key=_ts), over)
            out, rest = merged[:n], merged[n:]
            runs[:] = [rest] if rest else []
        else:
            out, keep, taken = [], [], 0
            for r in runs:
                k = bisect.bisect_right(r, limit, key=_ts)
                if k:
                    out += r[:k]
                    taken += 1
                if k < len(r):
                    keep.append(r[k:] if k else r)
            if taken > 1:  # the runs' sorted prefixes, in arrival order (one prefix is sorted already)
                out.sort(key=_ts)
            runs[:] = keep
        self.low = min(_ts(r[0]) for r in runs) if runs else None
        return out


_ts = attrgetter("ts_ms")
_KINDS = {"usage": UsageEvent, "audit": AuditEvent, "billing": BillingEvent}
_pack = msgspec.msgpack.Encoder().encode  # events → bytes (tagged: `kind` says the class)


def _unpack(packed: bytes | list) -> list:
    """Events back from `_pack` (a list: a snapshot of before the packing). Built by the event
    classes themselves, not decoded against their schema: an accepted event may no longer fit
    it (a scrubbed secret can outgrow a field's bound)."""
    if isinstance(packed, list):
        return packed
    out = []
    for d in msgspec.msgpack.decode(packed):
        out.append(_KINDS[d.pop("kind")](**d))
    return out


def order_of(g: DetectionCore) -> EventTimeOrder:
    """The global core's `EventTimeOrder` (created on first use; older snapshots have none)."""
    o = g.__dict__.get("event_order")
    if o is None:
        o = g.__dict__["event_order"] = EventTimeOrder()
    return o


def process_global(g: DetectionCore, outs: list[CoreOutput], per_part: dict[int, tuple[list, dict[str, int]]],
                   skip: set[str], *, now: float, idle_s: float, max_pending: int = 1_000_000) -> CoreOutput:
    """The partition cores' events (minus `skip`: already in `g`, a re-read) through `g`, in
    event-time order across partitions (`EventTimeOrder`). `outs` are in sorted partition order."""
    order = order_of(g)
    for p, o in zip(sorted(per_part), outs):
        events = o.usage + o.audit + o.billing
        if skip:
            events = [e for e in events if e.event_id not in skip]
        order.add(p, events, now)
    rejected: dict[str, int] = {}
    for _evs, rej in per_part.values():
        for reason, n in rej.items():
            rejected[reason] = rejected.get(reason, 0) + n
    return g.process(order.release(now, idle_s, max_pending), rejected=rejected)


def waiting(g: DetectionCore | None) -> int:
    """Events `g` holds back for lagging partitions (0 without `g` or an order). It only reads:
    a gauge may call it while detection runs, and must not create the order (`order_of`)."""
    o = g.__dict__.get("event_order") if g is not None else None
    return len(o) if o is not None else 0


def has_pending(g: DetectionCore | None) -> bool:
    return waiting(g) > 0
