"""`EventTimeOrder` (stream/globalcore.py) keeps its events in sorted runs between releases: it
must release exactly what one stable sort of everything waiting gives, across partitions that
lag, go idle, exceed `max_pending`, and across snapshots (its events are packed with msgpack),
also of an instance of before the runs."""

from __future__ import annotations

import bisect
import pickle
import random

import msgspec
import pytest

from keywatch.models.events import AuditEvent, BillingEvent, UsageEvent
from keywatch.stream.globalcore import EventTimeOrder, _ts

T0 = 1795622400000


def Ev(ts: int, n: int) -> UsageEvent:
    """An event at T0 + ts; n is its arrival number: ties must come out in arrival order."""
    return UsageEvent(event_id=f"e{n}", ts=T0 + ts, provider="openai", key_id="k", model="m")


def seq(events) -> list[tuple[int, str]]:
    return [(e.ts_ms, e.event_id) for e in events]


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
                evs.append(Ev(max(0, heads[p] - rng.randint(0, 4)), n))  # not sorted within a batch either
                n += 1
            new.add(p, evs, clock)
            ref.add(p, list(evs), clock)
        assert new.ready(clock, 2.0) == ref.ready(clock, 2.0)
        got, want = new.release(clock, 2.0, max_pending), ref.release(clock, 2.0, max_pending)
        assert seq(got) == seq(want)
        released += len(got)
        if rng.random() < 0.1:  # a snapshot and restore in between
            new = pickle.loads(pickle.dumps(new))
    assert released > n // 2
    assert seq(new.release(clock + 10, 2.0)) == seq(ref.release(clock + 10, 2.0))


def test_a_snapshot_keeps_every_field_of_waiting_events():
    usage = UsageEvent(event_id="u", ts="2026-11-25T16:00:00.5Z", provider="openai", key_id="k", model="m", cost_usd=0.1,
                       price_source="table", source_ip="10.0.0.1", status=500, latency_ms=2.5, input_tokens=7)
    usage.user_agent = "x" * 2000  # scrubbed text may outgrow its schema bound (1024)
    audit = AuditEvent(event_id="a", ts=T0 + 5, provider="aws", key_id="k", action="CreateAccessKey", country="US")
    bill = BillingEvent(event_id="b", ts=T0, provider="openai", project="p", amount_usd=-3.5, period_end=T0 + 86_400_000)
    order = EventTimeOrder()
    order.add(0, [usage, audit], now=0.0)
    order.add(1, [bill], now=0.0)
    order.release(0.0, 2.0)  # partition 1 (at T0) holds the usage and audit events back, in a run
    order.add(1, [Ev(0, 9)], now=0.0)  # and one more waits unsorted
    restored = pickle.loads(pickle.dumps(order))
    assert restored.low == order.low and restored.marks == order.marks
    got = restored.release(100.0, 2.0)
    assert [msgspec.to_builtins(e) for e in got] == [msgspec.to_builtins(e) for e in (Ev(0, 9), audit, usage)]
    assert [type(e) for e in got] == [UsageEvent, AuditEvent, UsageEvent]


def test_an_instance_pickled_before_the_runs_restores_and_releases_in_order():
    old = EventTimeOrder()
    old.add(0, [Ev(5, 0), Ev(1, 1)], now=0.0)
    state = dict(old.__dict__)  # what a snapshot of before the runs holds: events as they are
    del state["runs"]
    state.pop("low", None)
    restored = EventTimeOrder.__new__(EventTimeOrder)
    restored.__setstate__(state)
    assert restored.ready(10.0, 2.0)
    assert seq(restored.release(10.0, 2.0)) == [(T0 + 1, "e1"), (T0 + 5, "e0")]
    assert not restored.ready(10.0, 2.0) and restored.runs == [] and restored.low is None
