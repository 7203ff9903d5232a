"""`EventTimeOrder` (stream/globalcore.py) keeps its events in sorted runs between releases: it
must release exactly what one stable sort of everything waiting gives, across partitions that
lag, go idle, exceed `max_pending`, and across a pickle of an instance of before the runs."""

from __future__ import annotations

import bisect
import pickle
import random
from dataclasses import dataclass

import pytest

from keywatch.stream.globalcore import EventTimeOrder, _ts


@dataclass
class Ev:
    ts_ms: int
    n: int  # arrival number: ties must come out in arrival order


class FlatOrder(EventTimeOrder):
    """The reference: every release sorts everything that waits (the order before the runs)."""

    def ready(self, now, idle_s):
        waiting = [e for r in self.runs for e in r] + self.pending
        limit = self._limit(now, idle_s)
        return bool(waiting) and (limit is None or min(map(_ts, waiting)) <= limit)

    def release(self, now, idle_s, max_pending=1_000_000):
        waiting = [e for r in self.runs for e in r] + self.pending
        self.runs, self.pending = [], []
        waiting.sort(key=_ts)
        limit = self._limit(now, idle_s)
        n = len(waiting) if limit is None else max(bisect.bisect_right(waiting, limit, key=_ts), len(waiting) - max_pending)
        if n < len(waiting):
            self.runs = [waiting[n:]]
        return waiting[:n]


@pytest.mark.parametrize("seed", range(12))
def test_runs_release_what_one_sort_of_everything_gives(seed: int):
    rng = random.Random(seed)
    new, ref = EventTimeOrder(), FlatOrder()
    new.MAX_RUNS = rng.choice([2, 64])  # the merge of too many runs is exercised too
    max_pending = rng.choice([50, 1_000_000])
    clock, n, released = 0.0, 0, 0
    heads = {p: 0 for p in range(4)}
    for _step in range(300):
        clock += rng.choice([0.1, 0.1, 0.1, 3.0])  # now and then every partition goes idle
        for p in rng.sample(range(4), rng.randint(0, 4)):
            if p == 3 and rng.random() < 0.8:
                continue  # partition 3 lags far behind
            evs = []
            for _ in range(rng.randint(1, 15)):
                heads[p] += rng.randint(0, 3)  # ties across and within partitions
                evs.append(Ev(heads[p] - rng.randint(0, 4), n))  # not sorted within a batch either
                n += 1
            new.add(p, evs, clock)
            ref.add(p, list(evs), clock)
        assert new.ready(clock, 2.0) == ref.ready(clock, 2.0)
        got, want = new.release(clock, 2.0, max_pending), ref.release(clock, 2.0, max_pending)
        assert [(e.ts_ms, e.n) for e in got] == [(e.ts_ms, e.n) for e in want]
        released += len(got)
        if rng.random() < 0.1:  # a snapshot and restore in between
            new = pickle.loads(pickle.dumps(new))
    assert released > n // 2
    assert [(e.ts_ms, e.n) for e in new.release(clock + 10, 2.0)] == [(e.ts_ms, e.n) for e in ref.release(clock + 10, 2.0)]


def test_an_instance_pickled_before_the_runs_restores_and_releases_in_order():
    old = EventTimeOrder()
    old.add(0, [Ev(5, 0), Ev(1, 1)], now=0.0)
    state = dict(old.__dict__)
    del state["runs"]  # what a snapshot of before the runs holds
    state.pop("low", None)
    restored = EventTimeOrder.__new__(EventTimeOrder)
    restored.__setstate__(state)
    assert restored.ready(10.0, 2.0)
    assert [e.ts_ms for e in restored.release(10.0, 2.0)] == [1, 5]
    assert not restored.ready(10.0, 2.0) and restored.runs == [] and restored.low is None
