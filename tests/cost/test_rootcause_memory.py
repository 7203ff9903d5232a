"""Root-cause spend per minute is packed once the minute is over: the explanations and learned
shares are the same as from dicts, at a fraction of the memory."""

from __future__ import annotations

import gc
import io
import pickle
import random
import tracemalloc
from array import array

import pytest

from keywatch.models.rootcause import KEEP_MINUTES, SHARE_DECAY, RootCause


def _feed(rc: RootCause, minutes: int, contributors: int, seed: int = 3) -> None:
    """Every contributor of two groups spends every minute (the detector's way: the current
    minute only, each minute folded into the shares at its end)."""
    rnd = random.Random(seed)
    groups = [("openai", "p1"), ("openai", "p2")]
    for m in range(minutes):
        per = rc.minute(m)
        for i in range(contributors):
            g = per.setdefault(groups[i % 2], {})
            c = (f"key{i:05d}", ("gpt-4o", "o1")[i % 3 == 0], "us-east-1")
            g[c] = g.get(c, 0.0) + rnd.random() * (20.0 if m > minutes - 5 and i < 3 else 1.0)
        rc.learn_many(m, groups)


def _unpacked() -> RootCause:
    rc = RootCause()
    rc._pack = lambda minute: None  # the minute stays in `minutes`, as before the packing
    return rc


def test_explanations_and_shares_equal_those_from_dicts():
    packed, plain = RootCause(), _unpacked()
    for rc in (packed, plain):
        _feed(rc, 200, 60)
    assert len(packed.minutes) == 1 and len(packed.packed) == KEEP_MINUTES
    assert len(plain.minutes) == KEEP_MINUTES + 1 and not plain.packed
    assert packed.shares == plain.shares
    for first, key in ((195, None), (195, "key00000"), (150, None), (60, "key00001")):  # 60: dropped minutes
        for group in (("openai", "p1"), ("openai", "p2")):
            assert packed.explain(group, first, 199, 40.0, key=key) == plain.explain(group, first, 199, 40.0, key=key)
    back = pickle.loads(pickle.dumps(packed))
    assert back.explain(("openai", "p1"), 195, 199, 40.0) == plain.explain(("openai", "p1"), 195, 199, 40.0)
    # A packed minute folded again, and one spent into (neither is the detector's way), read the same.
    for rc in (packed, plain):
        rc.learn_many(190, [("openai", "p1"), ("openai", "nobody")])
    assert packed.shares == plain.shares and ("openai", "nobody") not in packed.shares
    packed.add(198, ("openai", "p1"), ("key00000", "o1", "us-east-1"), 5.0)
    plain.add(198, ("openai", "p1"), ("key00000", "o1", "us-east-1"), 5.0)
    assert 198 in packed.minutes and packed.explain(("openai", "p1"), 190, 199, 40.0) == plain.explain(("openai", "p1"), 190, 199, 40.0)


@pytest.mark.parametrize("pack", [True, False])
def test_a_contributor_minute_costs_a_fraction_once_packed(pack):
    """16 bytes per packed entry; with the open minute, shares and shared tuples, under 30 — the
    dict form, the control, over 100."""
    rc = RootCause() if pack else _unpacked()
    gc.collect()
    tracemalloc.start()
    try:
        _feed(rc, KEEP_MINUTES + 1, 2000)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_entry = used / ((KEEP_MINUTES + 1) * 2000)
    assert (per_entry < 30) if pack else (per_entry > 100), per_entry


def test_shares_follow_the_list_rule_exactly_and_older_pickles_load():
    """A share is one complex (value, minute last learnt): the same floats as the [value, minute]
    lists before, over gaps of several minutes, and pickles holding such lists load."""
    rc, ref, group, rnd = RootCause(), {}, ("openai", "p1"), random.Random(5)
    keep = 1 - SHARE_DECAY
    for m in range(400):
        for i in range(40):
            if rnd.random() < 0.6:  # most contributors skip most minutes: decay over gaps
                continue
            c, usd = (f"k{i}", "gpt-4o", None), rnd.random()
            rc.add(m, group, c, usd)
            cur = ref.get(c)
            if cur is None:
                ref[c] = [usd * keep, m]
            else:
                cur[0], cur[1] = cur[0] * SHARE_DECAY ** (m - cur[1]) + usd * keep, m
        rc.learn(m, group)
    assert {c: (v.real, int(v.imag)) for c, v in rc.shares[group].items()} == {c: tuple(v) for c, v in ref.items()}
    old = pickle.loads(pickle.dumps(rc))
    old.shares = {g: {c: [v.real, int(v.imag)] for c, v in sh.items()} for g, sh in rc.shares.items()}
    back = pickle.loads(pickle.dumps(old))  # as a snapshot from before
    assert back.shares == rc.shares and back.explain(group, 390, 399, 5.0) == rc.explain(group, 390, 399, 5.0)


def test_contributors_gone_quiet_leave_the_shared_tuple_table():
    """`_cons` (one tuple per contributor, shared by its packed minutes) starts again every
    KEEP_MINUTES from the minutes still kept: contributors quiet for longer are not in it, and
    the ones still active keep one tuple across their minutes."""
    rc = RootCause()
    g = ("openai", "p")
    for m in range(3 * KEEP_MINUTES):
        for i in range(50 if m < 10 else 2):  # 50 contributors, then only two of them
            rc.add(m, g, (f"k{i}", "gpt-4o", "us"), 1.0)
        rc.learn(m, g)
    assert sorted(c[0] for c in rc._cons) == ["k0", "k1"]
    assert len({id(c) for p in rc.packed.values() for c in p.cons}) == 2  # one tuple each across 120 minutes
    assert len(rc.shares[g]) == 50  # the shares stay (they decay, they are not forgotten)


def test_a_minute_costs_little_per_group():
    """Groups with one contributor each (projects with one busy key): a packed minute costs ≈ 8
    bytes per group on top of the contributor's 16, not a dict entry, tuple and array per group
    (≈ 240 bytes in all per group-minute before)."""
    rc = RootCause()
    gc.collect()
    tracemalloc.start()
    try:
        for m in range(KEEP_MINUTES + 1):
            per = rc.minute(m)
            for i in range(1000):
                per[("openai", f"p{i}")] = {(f"key{i}", "gpt-4o", None): 0.01 * (1 + m % 7)}
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_group_minute = used / (KEEP_MINUTES * 1000)
    assert per_group_minute < 60, per_group_minute


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if module not in ("builtins", "array", "copyreg", "collections"):
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def test_snapshots_load_across_the_packed_minute_formats():
    """A snapshot's packed minutes are plain tuples under their own name (session 23's code,
    which reads `packed` as dicts of groups, loads them as none), and a snapshot from that code
    (dicts of groups under `packed`) loads here with the same explanations."""
    rc = RootCause()
    _feed(rc, 150, 40)
    st = rc.__getstate__()
    assert st["packed"] == {} and len(st["packed_flat"]) == KEEP_MINUTES
    _BuiltinsOnly(io.BytesIO(pickle.dumps(st))).load()  # no keywatch class needed to read it
    old = dict(st)  # as session 23 pickled it
    del old["packed_flat"], old["_groups"]
    old["packed"] = {m: {rc._groups[i]: (tuple(d), array("d", d.values())) for i, d in p.groups().items()}
                     for m, p in rc.packed.items()}
    back = RootCause.__new__(RootCause)
    back.__setstate__(pickle.loads(pickle.dumps(old)))
    again = pickle.loads(pickle.dumps(rc))
    for first, key in ((145, None), (100, "key00002"), (30, None)):
        for group in (("openai", "p1"), ("openai", "p2")):
            want = rc.explain(group, first, 149, 30.0, key=key)
            assert back.explain(group, first, 149, 30.0, key=key) == want == again.explain(group, first, 149, 30.0, key=key)
