"""Sharing key theft's project populations between workers (models/keytheft_share.py): what is
sent, what is merged, and that nothing is counted twice or sent back."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from keywatch.models.features import PopBaseline
from keywatch.models.keyids import ATTRS, tag
from keywatch.models.keytheft_identity import _ident_items, pop_learn
from keywatch.models.keytheft_share import PopulationShare, decode_delta, encode_delta

HOUR = 3_600_000


def _items(ip: str, ua: str = "openai-python/1.50.0", country: str = "US", model: str = "gpt-4o") -> tuple:
    return _ident_items(ip, country, ua, None, model)[2]


def _exchange(workers: list[tuple[PopulationShare, dict]]) -> int:
    """Every worker collects; every other worker merges (as the topic delivers); deltas sent."""
    sent = [(share, share.collect(pops)) for share, pops in workers]
    for share, deltas in sent:
        for other, pops in workers:
            if other is not share:
                for d in deltas:
                    other.merge(pops, decode_delta(encode_delta(d)))  # through the wire format
    return sum(len(d) for _, d in sent)


def test_requests_add_up_once_across_three_workers_and_merges_are_not_sent_back():
    ws = [(PopulationShare(n), {}) for n in "abc"]
    for i, (_, pops) in enumerate(ws):
        pop = pops.setdefault("p", PopBaseline())
        pop_learn(pop, _items(f"34.{i}.0.1"), 10 * HOUR, 10 * (i + 1))
    assert _exchange(ws) == 3
    for _, pops in ws:
        pop = pops["p"]
        assert pop.learned == 60  # 10 + 20 + 30, each once
        assert {34 << 8 | i for i in range(3)} <= set(pop.ids.values("n16"))
    assert _exchange(ws) == 0  # what was merged is not sent on: the exchange is quiet
    ws[0][1]["p"].learned += 5  # more requests of a known caller (`pop_learn`'s shortcut)
    assert _exchange(ws) == 1 and all(pops["p"].learned == 65 for _, pops in ws)
    pop_learn(ws[1][1]["p"], _items("34.9.0.1"), 11 * HOUR, 1)  # a new caller, the next hour
    assert _exchange(ws) == 1 and all(34 << 8 | 9 in pops["p"].ids.values("n16") for _, pops in ws)


def test_a_population_is_sent_whole_once_and_then_what_it_learns():
    share, pops = PopulationShare("a"), {"p": PopBaseline()}
    pop_learn(pops["p"], _items("35.2.0.1"), 2 * HOUR, 7)  # learned before anything was recorded
    assert pops["p"].out is None
    [d] = share.collect(pops)
    assert (d.pop, d.learned, d.first_ts) == ("p", 7, 2 * HOUR)
    assert ("n16", 35 << 8 | 2, 2) in d.items and not any(a in ("ips", "ua_ver") for a, _, _ in d.items)
    assert pops["p"].out == {}  # recorded from now on
    pop_learn(pops["p"], _items("36.3.0.1"), 3 * HOUR, 1)
    [d] = share.collect(pops)
    assert d.learned == 1 and {v for a, v, _ in d.items if a == "n16"} == {36 << 8 | 3}


def test_a_restored_population_resends_its_items_not_its_requests():
    share, pops = PopulationShare("a"), {"p": PopBaseline()}
    pop_learn(pops["p"], _items("34.1.0.1"), HOUR, 50)
    share.collect(pops)
    pops["p"].out[("x",)] = 1
    back = pickle.loads(pickle.dumps(pops["p"]))  # a snapshot, restored after a restart
    assert back.out is None and back.told == back.learned == 50
    assert list(back.ids.values("n16")) == list(pops["p"].ids.values("n16"))
    [d] = PopulationShare("a2").collect({"p": back})
    assert d.learned == 0 and ("n16", 34 << 8 | 1, 1) in d.items
    old = PopBaseline.__new__(PopBaseline)  # a snapshot from before sharing: no one was told of it
    old.__setstate__((None, {k: getattr(back, k) for k in PopBaseline.__slots__ if k not in ("told", "out")}))
    assert old.out is None and old.told == 0
    [d] = PopulationShare("a3").collect({"p": old})
    assert d.learned == 50


def test_an_older_remote_item_does_not_evict_a_newer_one_and_a_newer_hour_refreshes():
    share, pops = PopulationShare("b"), {"p": PopBaseline()}
    ids = pops["p"].ids
    cap = ids.CAPS[ATTRS.index("regions")]
    for v in range(cap):
        ids.add(tag("regions", 1000 + v), 50)
    share.merge(pops, decode_delta(b'{"pop":"p","learned":0,"first_ts":0,"key_rpm":0,"items":[["regions",7,40]]}'))
    assert 7 not in ids.values("regions")
    share.merge(pops, decode_delta(
        b'{"pop":"p","learned":0,"first_ts":0,"key_rpm":0,"items":[["regions",1000,60],["regions",8,61]]}'))
    regions = dict(zip(ids.values("regions"), ids.hours("regions")))
    assert regions[1000] == 60 and 8 in regions and len(regions) == cap


@pytest.mark.parametrize("raw", [
    b'{"pop":"p","learned":-1,"first_ts":0,"key_rpm":0,"items":[]}',
    b'{"pop":"","learned":1,"first_ts":0,"key_rpm":0,"items":[]}',
    b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":0,"items":[["ips",1,2]]}',
    b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":0,"items":[["n16",-1,2]]}',
    b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":0,"items":[["n16",4294967296,2]]}',  # 33 bits: no set holds it
    b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":0,"items":[["n16",1,4294967296]]}',
    b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":NaN,"items":[]}',
    b'not json',
])
def test_bad_deltas_are_rejected(raw):
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decode_delta(raw)


def test_only_other_workers_of_the_same_group_are_heard():
    a, b, other = PopulationShare("a", "kw"), PopulationShare("b", "kw"), PopulationShare("c", "another-deployment")
    pops = {"p": PopBaseline()}
    pop_learn(pops["p"], _items("34.1.0.1"), HOUR, 3)
    [d] = a.collect(pops)
    assert (d.origin, d.group) == ("a", "kw")
    assert b.wants(d) and not a.wants(d) and not other.wants(d)


def test_a_caller_at_a_freed_callers_address_is_still_learned_by_its_project():
    """A project remembers this hour's callers by value: a caller whose tuple takes the address
    of one freed since (CPython reuses it at once) is a new caller, not one learned already."""
    from keywatch.models.netnovelty import net_parts

    pop = PopBaseline()
    later = list(_items("52.7.7.7"))
    first = tuple(list(_items("34.1.2.3")))
    pop_learn(pop, first, HOUR, 1)
    del first  # unless the project holds it, its place goes to the next tuple made (CPython)
    second = tuple(later)  # and by `id()` this caller was then learned already
    pop_learn(pop, second, HOUR + 10, 1)
    assert net_parts("52.7.7.7")[2] in pop.ids.values("n16")
    pop_learn(pop, tuple(later), HOUR + 20, 1)  # the same caller again (another tuple): learned already
    assert len(pop.recent) == 2 and pop.learned == 3
    back = pickle.loads(pickle.dumps(pop))  # this hour's callers are stored empty: a load learns them again
    assert type(pop.__getstate__()[1]["recent"]) is set  # stored as older code has it (it adds to a set)
    assert back.recent == {} and back.recent_hour == -1 and list(back.ids.values("n16")) == list(pop.ids.values("n16"))
