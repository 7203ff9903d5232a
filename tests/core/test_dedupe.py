"""The core's event_id dedupe: a window of the last N kept ids, or none (N = 0: the worker's
global core, whose input the partition cores have already deduplicated)."""

from __future__ import annotations

import pickle
import random
from collections import deque

import pytest

from keywatch.bench_memory import deep_size
from keywatch.models.core import DetectionCore
from keywatch.models.dedupe import DedupeWindow
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
    assert len(core._window) == 0


class IdWindow:
    """The window as the ids themselves (models/core.py until session 23): the reference."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.order: deque[str] = deque()

    def keep(self, ids: list[str], capacity: int) -> list[bool]:
        out = []
        for i in ids:
            out.append(i not in self.seen)
            if out[-1]:
                self.seen.add(i)
                self.order.append(i)
        while len(self.order) > capacity:
            self.seen.discard(self.order.popleft())
        return out


@pytest.mark.parametrize("capacity", [1, 3, 64, 300, 5_000])
def test_digest_window_decides_as_a_window_of_the_ids_themselves(capacity):
    """Batches of new ids and repeats — of ids just kept, about to be forgotten, long forgotten,
    and within the batch — past several rebuilds and ring wraps, a snapshot round trip midway
    and a capacity change: every decision the same as the window of ids."""
    rng = random.Random(capacity)
    ref, win, core_ids = IdWindow(), DedupeWindow(), 0
    for b in range(600):
        ids = []
        for _ in range(rng.choice((rng.randint(0, 4), rng.randint(0, 120)))):  # small batches too
            r = rng.random()
            if r < 0.6 or core_ids == 0:
                core_ids += 1
                ids.append(f"evt-{core_ids}")
            else:  # a repeat from near the window's edge or anywhere before
                back = rng.choice([rng.randint(1, capacity + 2), rng.randint(1, core_ids)])
                ids.append(f"evt-{max(1, core_ids - back + 1)}")
        if b == 300:
            win = pickle.loads(pickle.dumps(win))
        cap = capacity if b < 450 else capacity * 2
        assert win.keep(ids, cap) == ref.keep(ids, cap), b
    assert len(win) == len(ref.order)


def test_window_survives_a_snapshot_and_older_snapshots_load():
    core = DetectionCore([], dedupe_capacity=100)
    core.process([ev(i) for i in range(150)])
    back = pickle.loads(pickle.dumps(core))
    out = back.process([ev(49), ev(50), ev(149), ev(150)])  # e49 was forgotten
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e49", "e150"], 2)
    # A session 22 snapshot held the ids in a deque `_order`.
    old = DetectionCore([], dedupe_capacity=100)
    st = {k: v for k, v in old.__dict__.items() if k != "_window"}
    st["_order"] = deque(f"e{i}" for i in range(50, 150))
    old.__setstate__(st)
    out = old.process([ev(49), ev(50), ev(149)])
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e49"], 2)


def test_snapshot_holds_the_window_as_plain_data():
    """No class of models/dedupe.py in a snapshot, and an empty `_order`: session 22's code loads
    it (checked by hand with 0baa5bc), with an empty window."""
    core = DetectionCore([], dedupe_capacity=100)
    core.process([ev(i) for i in range(10)])
    blob = pickle.dumps(core)
    assert b"keywatch.models.dedupe" not in blob
    st = core.__getstate__()
    assert st["_order"] == deque() and "_window" not in st
    # Saved again by that code, the snapshot holds its window's ids: they win over the digests.
    st["_order"] = deque(["e3", "x"])
    back = DetectionCore.__new__(DetectionCore)
    back.__setstate__(st)
    out = back.process([ev(3), ev(4)])
    assert ([e.event_id for e in out.usage], out.duplicates) == (["e4"], 1)


def test_window_memory_is_digests_not_strings():
    """200k provider-style ids: 4–8 MB measured (a set and a queue of the strings took ≈ 26 MB)."""
    win = DedupeWindow()
    for b in range(2_000):
        win.keep([f"chatcmpl-{b:08d}{i:04d}abcdefghijklmnop" for i in range(100)], 200_000)
    assert len(win) == 200_000 and deep_size(win) < 8 * 2**20
