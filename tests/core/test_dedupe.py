"""The core's event_id dedupe: a window of the last N kept ids, or none (N = 0: the worker's
global core, whose input the partition cores have already deduplicated)."""

from __future__ import annotations

from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent


def ev(i: int) -> UsageEvent:
    return UsageEvent(event_id=f"e{i}", ts=1795622400000 + i, provider="openai", key_id="k", model="m")


def test_window_drops_repeats_across_batches_until_it_forgets_them():
    core = DetectionCore([], dedupe_capacity=3)
    out = core.process([ev(1), ev(2), ev(1)])
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e1", "e2"], 1)
    out = core.process([ev(2), ev(3), ev(4)])  # e2 still in the window; e1 falls out of it
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e3", "e4"], 1)
    out = core.process([ev(1), ev(4)])
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e1"], 1)


def test_no_window_drops_repeats_within_a_batch_only_and_remembers_nothing():
    core = DetectionCore([], dedupe_capacity=0)
    out = core.process([ev(1), ev(2), ev(1), ev(2), ev(3)])
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e1", "e2", "e3"], 2)
    out = core.process([ev(1), ev(2)])  # the same ids in a later batch are new to it
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e1", "e2"], 0)
    assert not core._seen and not core._order
