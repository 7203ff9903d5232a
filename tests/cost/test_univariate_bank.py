"""`UnivariateBank` (issue 8): a bank of N series gives exactly the values of N independent
`UnivariateAnomalyScorer`s — subsets of rows and all rows per step, learn=False steps, rows freed
and reused, pickles, small windows (fronts expiring, blocks folded) — and a cost-spike detector
continues identically after a pickle, also from a snapshot taken before the bank existed."""

import copy
import pickle
import random
import zlib

import numpy as np
import pytest

from keywatch.models.core import DetectionCore
from keywatch.models.costspike import CostSpikeDetector
from keywatch.models.events import UsageEvent
from keywatch.models.univariate import UnivariateAnomalyScorer
from keywatch.models.univariate_bank import BLOCK, BMAX, UnivariateBank

from .sim import DAY0, MIN, steady


def _value(rnd: random.Random, kind: int) -> float:
    v = [10 + rnd.gauss(0, 1),  # noisy level
         rnd.expovariate(1.0) if rnd.random() < 0.5 else 0.0,  # sparse spend, many zeros
         float(rnd.randrange(3)),  # few distinct values: ties in the window maxima
         5.0][kind]  # flat
    return v * 20 if rnd.random() < 0.01 else v  # spikes


def _state(sc: UnivariateAnomalyScorer) -> dict:
    d = {k: v for k, v in vars(sc).items() if k != "cal"}
    return d | {"cal": [(c.short, c.mu, c.var, c.n, list(c.top), c.bmax, c.block) for c in sc.cal]}


@pytest.mark.parametrize("params, steps", [
    ({"memory": 60, "block": 8, "warmup": 5, "refractory": 10}, 2500),  # many expiries and folds
    ({"memory": 7, "block": 16, "warmup": 2, "refractory": 3}, 1500),  # block capped at half of memory
    ({"memory": 300}, 1200),  # defaults otherwise: past `memory`, past warmup
    ({"memory": 300, "block": 7}, 1300),  # blocks across the window's edge
    ({"memory": 40, "block": 1, "warmup": 5}, 1500),  # a block a row: the exact window of session 27
])
def test_bank_equals_independent_scorers(params, steps):
    rnd = random.Random(steps)
    bank = UnivariateBank(**params)
    kw = params
    solo = {bank.add(): UnivariateAnomalyScorer(**kw) for _ in range(6)}
    kind = {r: r % 4 for r in solo}
    for t in range(steps):
        ts = DAY0 + t * MIN + rnd.randrange(3) * 1000
        rows = [r for r in solo if rnd.random() < 0.9]  # some minutes every row (views), some not
        rnd.shuffle(rows)
        xs = [_value(rnd, kind[r]) for r in rows]
        learn = [rnd.random() < 0.8 for _ in rows]
        got = bank.step(np.array(rows, np.int64), ts, np.array(xs), np.array(learn))
        assert got.tolist() == [solo[r].update(ts, x, learn=lv) for r, x, lv in zip(rows, xs, learn)], t
        assert [bank.recent_peak(r) for r in rows] == [solo[r].recent_peak for r in rows]
        if rnd.random() < 0.01:  # a series expires; its row is reused by a new one
            r = rnd.choice(list(solo))
            bank.remove(r)
            del solo[r]
            r = bank.add()
            solo[r], kind[r] = UnivariateAnomalyScorer(**kw), rnd.randrange(4)
        if rnd.random() < 0.005:
            bank = pickle.loads(pickle.dumps(bank))
        if rnd.random() < 0.01:  # the state of a row is the scorer's, deques included
            r = rnd.choice(list(solo))
            assert _state(bank.to_scorer(r)) == _state(solo[r])
            other = UnivariateBank(**params)
            other.add()
            other.load_scorer(other.add(), solo[r])
            assert _state(other.to_scorer(1)) == _state(solo[r])


def _events():
    """Three projects for 2.3 days; p3 stops early (its rows expire and are reused by p4 on day 2)
    and p1 has a spike (incidents: rows that stop learning, findings)."""
    evs = list(steady(2.3, keys=3, seed=5, project="p1"))
    evs += [e for e in steady(0.4, keys=2, seed=6, project="p3")]
    evs += [UsageEvent(event_id=f"p2-{m}", ts=DAY0 + m * MIN + 700, provider="anthropic", key_id="kx", project="p2",
                       model="claude-3-5-sonnet-20240620", cost_usd=0.05 + 0.01 * (m % 7), requests=2)
            for m in range(0, int(2.3 * 1440), 3)]
    evs += [UsageEvent(event_id=f"p4-{m}", ts=DAY0 + m * MIN + 900, provider="openai", key_id="knew", project="p4",
                       model="gpt-4o", cost_usd=0.2, requests=1) for m in range(2 * 1440 + 5, int(2.3 * 1440))]
    start = 1440 + 13 * 60
    evs += [UsageEvent(event_id=f"x{m}", ts=DAY0 + m * MIN + 500, provider="openai", key_id="key1", project="p1",
                       model="o1-2024-12-17", cost_usd=9.0, requests=40) for m in range(start, start + 15)]
    return sorted(evs, key=lambda e: e.ts_ms)


def _run(core: DetectionCore, events) -> list:
    out = []
    for i in range(0, len(events), 3000):
        o = core.process(events[i:i + 3000])
        out.append(([a.to_contract() for a in o.alerts], o.rows, [s for s in o.scores]))
    return out


def _old_format(det: CostSpikeDetector) -> dict:
    """`det`'s state as a snapshot from before the bank: one scorer per series row, projections
    as {row: spend}, root causes without `newest`."""
    st = dict(det.__getstate__())
    bank, rows = st.pop("uni"), st.pop("uni_row")
    st["uni"] = {r: bank.to_scorer(int(u)) for r, u in enumerate(rows.tolist()) if u >= 0}
    proj = st["proj"] = copy.copy(st["proj"])
    for name in ("day", "month"):
        setattr(proj, name, {r: v for r, v in enumerate(getattr(proj, name).tolist()) if v})
    del proj._month
    rc = st["rc"] = copy.copy(st["rc"])
    del rc.newest
    return st


def test_detector_continues_identically_after_pickle():
    events = _events()
    cut = next(i for i, e in enumerate(events) if e.ts_ms >= DAY0 + int(1.4 * 1440) * MIN)  # p3 gone, before the spike

    def fresh():
        return DetectionCore([CostSpikeDetector(min_usd=2, warmup_min=120, idle_expire_min=180)])

    ref = fresh()
    _run(ref, events[:cut])
    det = ref.detector("cost_spike")
    assert det.rows.get(("project", "openai", "p3")) is None and det.uni.n == 5  # expired, its scorer row reused
    want = _run(ref, events[cut:])
    assert any(alerts for alerts, _, _ in want) and ("project", "openai", "p4") in det.rows

    def scorers(core):  # every series' scorer state (outputs alone rarely show a scorer's window)
        d = core.detector("cost_spike")
        return {r: _state(d.uni.to_scorer(int(u))) for r, u in enumerate(d.uni_row.tolist()) if u >= 0}

    a = fresh()
    _run(a, events[:cut])
    b = pickle.loads(pickle.dumps(a))
    assert _run(b, events[cut:]) == want and scorers(b) == scorers(ref)

    c = pickle.loads(pickle.dumps(a))
    cs = c.detector("cost_spike")
    old = pickle.loads(pickle.dumps(_old_format(cs)))  # what an old snapshot unpickles to
    cs.__dict__.clear()
    cs.__setstate__(old)
    assert isinstance(cs.uni, UnivariateBank)
    assert _run(c, events[cut:]) == want and scorers(c) == scorers(ref)


def test_a_session_27_snapshot_loads_and_goes_on_as_its_scorer():
    """Until session 28 a deque held an entry per row (the window exact: what one-row blocks
    give) and a snapshot pushed the current block into it, its planes stopping at `BMAX`; one
    taken then (block 128 until session 24) loads with `BLOCK`-row blocks, its rows read as
    one-row blocks, and goes on exactly as a scorer converted from it."""
    rnd = random.Random(4)
    bank, solo = UnivariateBank(block=1), UnivariateAnomalyScorer(block=1)
    r = bank.add()
    for t in range(700):
        x = _value(rnd, 0)
        assert bank.step(np.array([r]), DAY0 + t * MIN, np.array([x])).tolist() == [solo.update(DAY0 + t * MIN, x)]
    st = bank.__getstate__()
    del st["_bmax_kept"]
    st["block"] = 128
    dtype, shape, _ = st["_packed"]["rec"]  # its block's max, left in the planes (it is in the deques too)
    rec = np.frombuffer(zlib.decompress(st["_packed"]["rec"][2]), dtype).reshape(shape).copy()
    rec[:, BMAX] = 1e9
    st["_packed"]["rec"] = (dtype, shape, zlib.compress(rec.tobytes()))
    old = UnivariateBank.__new__(UnivariateBank)
    old.__setstate__(pickle.loads(pickle.dumps(st)))
    assert old.block == BLOCK and old.rec.shape[1] == 8
    for c in solo.cal:  # the reference: the exact deques as entries, blocks from here on
        c.block = BLOCK
    assert [list(c.top) for c in old.to_scorer(r).cal] == [list(c.top) for c in solo.cal]
    for t in range(700, 1700):
        x = _value(rnd, 0)
        assert old.step(np.array([r]), DAY0 + t * MIN, np.array([x])).tolist() == [solo.update(DAY0 + t * MIN, x)]
    assert _state(old.to_scorer(r)) == _state(solo)
    assert max(len(c.top) for c in solo.cal) <= -(-solo.cal[0].memory // BLOCK) + 1  # bounded once blocks took over


def test_window_entries_are_bounded_by_blocks():
    """A series whose smoothed surprise keeps falling (two values in turn) kept an entry per row
    for days, up to `memory` a record (12,912 entries at 5,000 rows); with blocks at most
    ⌈memory / block⌉ + 1 a record (447 in all here)."""
    bank = UnivariateBank()
    r = bank.add()
    exact = UnivariateAnomalyScorer(block=1, memory=bank.memory)  # the window of session 27
    for t in range(5000):
        x = 0.5 if t % 2 else 0.7
        bank.step(np.array([r]), DAY0 + t * MIN, np.array([x]))
        exact.update(DAY0 + t * MIN, x)
    bound = -(-bank.memory // bank.block) + 1
    assert 0 < bank.dq_len[r].max() <= bound and len(bank.dq_vals) == bank.dq_len[r].sum() < 500
    assert sum(len(c.top) for c in exact.cal) > 12_000


def test_a_second_completed_block_before_a_fold_pushes_the_first():
    """A row completes at most one block between folds (every `block` calls); were the folds
    to lag (here: the call count held back), the bank pushes the waiting block first and still
    equals the scorer."""
    rnd = random.Random(9)
    bank, solo = UnivariateBank(memory=60, block=4, warmup=5), UnivariateAnomalyScorer(memory=60, block=4, warmup=5)
    r = bank.add()
    for t in range(300):
        bank.clock = 1  # never a multiple of the block: no fold but the bank's own
        x = _value(rnd, t % 3)
        assert bank.step(np.array([r]), DAY0 + t * MIN, np.array([x])).tolist() == [solo.update(DAY0 + t * MIN, x)]
    assert _state(bank.to_scorer(r)) == _state(solo)
