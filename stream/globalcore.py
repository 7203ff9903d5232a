"""The worker's global (project/provider-level) core: its input and its minute clock.

`Pipeline` (stream/pipeline.py) runs each batch through the partition cores first; their
output — enriched, deduplicated events — plus the batch's dead-letter counts goes through the
worker-wide global core (`build_core(settings, "global")`, see models/registry.py).

The minute clock: a cost-spike finding is stamped with the event that closed its minute, and
the stamp is part of the alert id. A partition core sees only its keys, so it would close a
minute later than a single core (replay) does. `advance_clock` records, over every partition of
each batch, minute → time of the first event after it; the partition cores' key-level
cost-spike detectors (`PartitionCostSpikeDetector`) close minutes at those times. The clock
lives on the global core object, so it is snapshotted with it.

>>> from keywatch.models.core import DetectionCore
>>> from keywatch.models.events import UsageEvent
>>> g = DetectionCore([], dedupe_capacity=0)
>>> t0 = 1795622400000  # a minute boundary
>>> ev = lambda i, s: UsageEvent(event_id=f"e{i}", ts=t0 + s * 1000, provider="openai", key_id=f"k{i}", model="m")
>>> clock = advance_clock(g, {0: ([ev(1, 0), ev(2, 125)], {}), 1: ([ev(3, 70)], {})})
>>> {t - t0 // 60000: (ts - t0) // 1000 for t, ts in clock.items()}  # minute 0 closes at 70 s, 1 at 125 s
{0: 70, 1: 125}
"""

from __future__ import annotations

import itertools
from typing import Any

from keywatch.models.core import CoreOutput, DetectionCore

MAX_CLOCK_GAP_MIN = 14 * 1440  # the cost-spike detector skips longer silences (costspike.MAX_GAP_MIN)
CLOCK_KEEP_MIN = 20_000  # minutes of clock kept (a partition lagging more closes at its own times)


def advance_clock(g: DetectionCore, per_part: dict[int, tuple[list, Any]]) -> dict[int, int]:
    """Add this batch's minute closes (events per partition, before dedupe) to `g`'s clock."""
    clock: dict[int, int] = g.__dict__.setdefault("minute_clock", {})
    cm = g.__dict__.get("clock_minute")
    first: dict[int, int] = {}
    for evs, _ in per_part.values():
        for e in evs:
            ts = e.ts_ms
            m = ts // 60000
            if cm is None or m > cm:
                f = first.get(m)
                if f is None or ts < f:
                    first[m] = ts
    for m in sorted(first):
        if cm is None:
            cm = m
            continue
        if m <= cm:
            continue
        ts = first[m]
        for t in (range(cm, m) if m - cm <= MAX_CLOCK_GAP_MIN else (cm, cm + 1)):
            clock[t] = ts
        cm = m
    g.clock_minute = cm
    if len(clock) > CLOCK_KEEP_MIN:  # oldest first (insertion order is minute order)
        for t in list(itertools.islice(clock, len(clock) - CLOCK_KEEP_MIN * 3 // 4)):
            del clock[t]
    return clock


def process_global(g: DetectionCore, outs: list[CoreOutput], per_part: dict[int, tuple[list, dict[str, int]]],
                   skip: set[str]) -> CoreOutput:
    """The partition cores' events (minus `skip`: already in `g`, a re-read) through `g`."""
    events: list = []
    for o in outs:
        events += o.usage
        events += o.audit
        events += o.billing
    if skip:
        events = [e for e in events if e.event_id not in skip]
    rejected: dict[str, int] = {}
    for _evs, rej in per_part.values():
        for reason, n in rej.items():
            rejected[reason] = rejected.get(reason, 0) + n
    return g.process(events, rejected=rejected)
