"""A project's identity sets packed (`PopIds`, session 24): the same sets as the eight `SeenSet`s
of `IdentitySets(scale=4)` they replace, under learning, eviction and other workers' merges, in
a fraction of the memory; pickled in the old class and format, so either version loads them."""

from __future__ import annotations

import gc
import pickle
import random
import tracemalloc

from keywatch.models.features import IdentitySets, PopBaseline
from keywatch.models.keyids import ATTRS, MASK, PopIds, tag


def _old_merge(sets: IdentitySets, attr: str, v: int, hour: int) -> None:
    """`PopulationShare.merge` on an `IdentitySets`, as it was before `PopIds`."""
    seen = getattr(sets, attr)
    if v in seen.vals:
        i = seen.vals.index(v)
        if seen.last[i] < hour:
            seen.last[i] = hour
    elif len(seen.vals) < seen.cap or hour >= min(seen.last):
        seen.add(v, hour)


def _same(ids: PopIds, sets: IdentitySets) -> bool:
    return all(ids.values(a) == list(getattr(sets, a).vals) and ids.hours(a) == list(getattr(sets, a).last)
               for a in ATTRS)


def test_pop_ids_keep_the_values_identity_sets_kept():
    rnd = random.Random(8)
    ids, sets = PopIds(), IdentitySets(scale=4)
    for step in range(8000):
        attr = rnd.choice(ATTRS)
        v, hour = rnd.randrange(90), 498_000 + step // 20
        if rnd.random() < 0.7:  # learnt here (`pop_learn`): evicts the least recent when full
            ids.add(tag(attr, v), hour)
            getattr(sets, attr).add(v, hour)
        else:  # from another worker, often older than what is held
            hour -= rnd.randrange(40)
            ids.merge(tag(attr, v), hour)
            _old_merge(sets, attr, v, hour)
        if step % 400 == 0:
            assert _same(ids, sets), step
            assert [tag(a, v) in ids for a in ATTRS for v in range(90)] == \
                   [v in getattr(sets, a).vals for a in ATTRS for v in range(90)]
    assert _same(ids, sets) and ids.count("ips") == 64 and ids.count("regions") == 16  # full sets: evictions ran


def test_a_population_pickles_as_before_and_loads_either_way():
    pop = PopBaseline()
    for v in range(30):
        pop.ids.add(tag("models", v), 498_000 + v)
        pop.ids.add(tag("n16", v * 7), 498_000 + v)
    raw = pickle.dumps(pop)
    assert b"PopIds" not in raw and b"IdentitySets" in raw  # what older versions know
    back = pickle.loads(raw)
    assert isinstance(back.ids, PopIds) and back.ids.values("models") == pop.ids.values("models")
    assert back.ids.hours("n16") == pop.ids.hours("n16")
    old = PopBaseline.__new__(PopBaseline)  # a population pickled before: eight `SeenSet`s
    sets = IdentitySets(scale=4)
    for v in range(30):
        sets.models.add(v, 498_000 + v)
        sets.n16.add(v * 7, 498_000 + v)
    st = pop.__getstate__()
    st[1]["ids"] = sets
    old.__setstate__(pickle.loads(pickle.dumps(st)))
    assert isinstance(old.ids, PopIds) and _same(old.ids, sets)


def test_a_small_project_holds_its_sets_in_a_fraction_of_the_memory():
    small = (tag("n24", 1), tag("n24", 2), tag("n16", 1), tag("countries", 5), tag("ua_fam", 9), tag("models", 3))

    def size(make, add) -> float:  # a small project: two networks, a country, an SDK, a model
        gc.collect()
        tracemalloc.start()
        try:
            pops = [make() for _ in range(2000)]
            for p in pops:
                for t in small:
                    add(p, t)
            return tracemalloc.get_traced_memory()[0] / len(pops)
        finally:
            tracemalloc.stop()

    packed = size(PopIds, lambda p, t: p.add(t, 498_000))
    before = size(lambda: IdentitySets(scale=4), lambda p, t: getattr(p, ATTRS[t >> 32]).add(t & MASK, 498_000))
    assert packed < 600 < 1500 < before, (packed, before)
