"""What a tracked key holds in memory: callers cached only for their hour, its identity sets
packed in two arrays (and a project's in 4-byte ones), evidence sets only once they hold a
value, one cost-spike route per key (not per key and model)."""

from __future__ import annotations

import pickle
import random

import msgspec
from array import array

from keywatch.models.core import DetectionCore
from keywatch.models.costspike import CostSpikeDetector
from keywatch.models.features import IdentitySets, KeyBaseline
from keywatch.models.keyids import ATTRS, KeyIds, tag
from keywatch.models.keytheft_signals import _NONE, Evidence
from keywatch.models.netnovelty import SeenSet, net_parts

from .test_signals import MIN, T0, settled_core, theft_alerts, usage

HOUR = 60 * MIN


def _plain_expected(b, ts: int) -> tuple[float, float]:
    """What `KeyBaseline.expected` computes, read plainly: the hour slot's rates once it has one,
    else the key's means (requests: this hour's so far if more), at least a fifth of the mean."""
    from keywatch.models.features import slot_of

    s = slot_of(ts)
    base = max(b.mean_rpm, b.cur_req / 60.0 if b.slot_n[s] == 0 else 0.0)
    rpm = max(b.slot_req[s] if b.slot_n[s] >= 1 else base, 0.2 * base, 0.003)
    cpm = max(b.slot_cost[s] if b.slot_n[s] >= 1 else b.mean_cpm, 0.2 * b.mean_cpm, 1e-5)
    return rpm, cpm


def test_sweep_drops_callers_cached_in_an_earlier_hour_and_detection_goes_on():
    core = settled_core(minutes=2 * 1440)
    det = core.detector("key_theft")
    det.cold_after_ms = 0  # k1 stays unpacked, for this test to see its caches (tests/keytheft/test_cold_keys.py)
    st = det.keys[("openai", "k1")]
    end = T0 + 2 * 1440 * MIN
    assert st.fresh is not None and st.last_items  # the host's caller, cached this hour
    known = pickle.dumps(st.base.ids)
    # Another key's event 70 minutes on passes the sweep mark: k1's cached callers are of an earlier hour.
    core.process([usage(0, end + 70 * MIN, key="k2")])
    assert st.fresh is None and st.last_items == ()
    assert pickle.dumps(st.base.ids) == known  # what the key learned stays
    # The known host is still known (no evidence), and learned again for its new hour …
    out = core.process([usage(i, end + 71 * MIN + i * MIN, key="k1") for i in range(5)])
    assert st.ev is None and not theft_alerts(out) and st.fresh is not None
    # … and a stranger is still caught.
    out = core.process([usage(i, end + 80 * MIN + i * 5_000, key="k1", ip=f"45.9.9.{i}", country="KP") for i in range(60)])
    assert st.ev is not None or theft_alerts(out)


def test_identity_sets_are_4_byte_arrays_and_read_older_8_byte_pickles():
    ids = IdentitySets()
    ids.n16.add(net_parts("52.1.0.9")[2], 498_000)
    assert ids.n16.vals.itemsize == 4 and ids.n16.last.itemsize == 4
    back = pickle.loads(pickle.dumps(ids))
    assert list(back.n16.vals) == list(ids.n16.vals) and back.n16.vals.itemsize == 4
    old = SeenSet.__new__(SeenSet)  # a set pickled before: "L" arrays, 8 bytes per entry
    old.__setstate__((8, array("L", [0x3401, 0xFFFFFFFF]).tobytes(), array("L", [498_000, 498_001]).tobytes()))
    assert list(old.vals) == [0x3401, 0xFFFFFFFF] and list(old.last) == [498_000, 498_001]
    assert old.vals.itemsize == 4 and old.add(0x3402, 498_002) and len(old) == 3
    wide = IdentitySets(scale=4)  # a value past 32 bits (none is made today) pickles wide and comes back
    wide.n16.vals, wide.n16.last = array("L", [1 << 33]), array("L", [498_000])
    back = pickle.loads(pickle.dumps(wide))
    assert list(back.n16.vals) == [1 << 33] and list(back.n16.last) == [498_000] and back.n16.cap == 32


def test_cost_spike_routes_one_per_key_and_model_rows_get_their_spend():
    det = CostSpikeDetector()
    core = DetectionCore([det])
    models = ("gpt-4o", "gpt-4o-mini", "o1")
    core.process([usage(i, T0 + i * 1_000, key=f"k{i % 2}", model=models[i % 3]) for i in range(30)])
    routes, by_model = det._routes
    assert sorted(routes) == [("openai", "p", "k0"), ("openai", "p", "k1")]
    assert sorted(by_model) == [("openai", m) for m in sorted(models)]
    for m in models:  # every event's spend reaches its model's row (0.002 each, 10 per model)
        assert abs(det.cur[det.rows[("model", "openai", m)]] - 0.02) < 1e-9
    assert abs(det.cur[det.rows[("key", "openai", "p", "k0")]] - 0.03) < 1e-9
    assert abs(det.cur[det.rows[("project", "openai", "p")]] - 0.06) < 1e-9
    key_tier = CostSpikeDetector(levels=("key",))  # the streaming worker's partition cores
    DetectionCore([key_tier]).process([usage(i, T0 + i * 1_000, model=models[i % 3]) for i in range(9)])
    assert list(key_tier._routes[0]) == [("openai", "p", "k1")] and not key_tier._routes[1]


def test_cost_spike_routes_start_again_each_hour_and_key_rows_are_compact():
    """An idle key keeps no route past its hour; its spend goes to the same rows when it calls
    again. A key's one row is its number, several a tuple (a list keeps room for four), also
    after a list from an older snapshot, and an expired key row leaves it."""
    det = CostSpikeDetector(idle_expire_min=180)
    core = DetectionCore([det])
    core.process([usage(i, T0 + i * MIN, key=f"k{i % 2}") for i in range(4)])
    rows = dict(det.rows)
    assert sorted(det._routes[0]) == [("openai", "p", "k0"), ("openai", "p", "k1")]
    core.process([usage(i, T0 + 61 * MIN + i * MIN, key="k0") for i in range(3)])  # the next hour: k1 idle
    assert list(det._routes[0]) == [("openai", "p", "k0")] and det.rows == rows
    core.process([usage(9, T0 + 65 * MIN, key="k1")])
    assert abs(det.cur[rows[("key", "openai", "p", "k1")]] - 0.002) < 1e-12 and det.rows == rows
    assert det.key_rows[("openai", "k0")] == rows[("key", "openai", "p", "k0")]  # one row: the number itself
    det.key_rows[("openai", "k0")] = [det.key_rows[("openai", "k0")]]  # as an older snapshot has it
    core.process([_in_p2(usage(10, T0 + 66 * MIN, key="k0"))])  # a second key row for k0
    assert det.key_rows[("openai", "k0")] == (rows[("key", "openai", "p", "k0")], det.rows[("key", "openai", "p2", "k0")])
    # k0 calls in p2 only, past midnight, when rows idle over 180 minutes expire: its p row, and k1's
    core.process([_in_p2(usage(i, T0 + 70 * MIN + i * 10 * MIN, key="k0")) for i in range(140)])
    assert det.key_rows[("openai", "k0")] == det.rows[("key", "openai", "p2", "k0")]
    st = det.__getstate__()  # snapshots hold tuples, as before
    assert st["key_rows"][("openai", "k0")] == (det.rows[("key", "openai", "p2", "k0")],)
    assert pickle.loads(pickle.dumps(det)).key_rows == det.key_rows
    assert ("key", "openai", "p", "k0") not in det.rows
    assert ("openai", "k1") not in det.key_rows


def _in_p2(e):
    return msgspec.structs.replace(e, project="p2")


def test_packed_key_ids_behave_as_eight_seen_sets():
    """Random inserts and refreshes (few values per set, hours that tie) into `KeyIds` and into
    the eight `SeenSet`s it replaces: after every step each set holds the same values, in the
    same order, with the same hours, and the same one was evicted."""
    rnd = random.Random(7)
    sets, ids, hour = IdentitySets(), KeyIds(), 498_000
    for step in range(4000):
        attr = rnd.choice(ATTRS)
        v = rnd.randrange(40) if step % 3 else rnd.getrandbits(32)
        hour += rnd.random() < 0.1
        seen = getattr(sets, attr)
        full_and_new = len(seen) >= seen.cap and v not in seen
        seen.add(v, hour)
        assert ids.add(tag(attr, v), hour) == full_and_new
        assert ids.values(attr) == list(seen.vals) and ids.hours(attr) == list(seen.last), (step, attr)
    assert all(ids.has(a) for a in ATTRS)
    back = pickle.loads(pickle.dumps(ids))  # IdentitySets' byte format: snapshots read either
    assert ids.__getstate__() == sets.__getstate__() == KeyIds.from_sets(sets).__getstate__()
    assert all(back.values(a) == ids.values(a) and back.hours(a) == ids.hours(a) for a in ATTRS)


def test_key_baselines_pickled_with_eight_sets_load_packed():
    """A snapshot or `key_baselines` row from before the packing holds an `IdentitySets`."""
    st = settled_core(minutes=600).detector("key_theft").keys[("openai", "k1")]
    sets = IdentitySets()
    for a in ATTRS:
        for v, h in zip(st.base.ids.values(a), st.base.ids.hours(a)):
            getattr(sets, a).add(v, h)
    state = st.base.__getstate__()
    old = KeyBaseline.__new__(KeyBaseline)
    old.__setstate__((state[0], state[1], sets, *state[3:]))
    assert isinstance(old.ids, KeyIds) and old.summary() == st.base.summary()
    assert all(old.ids.values(a) == st.base.ids.values(a) and old.ids.hours(a) == st.base.ids.hours(a) for a in ATTRS)
    assert old.ids.__getstate__() == st.base.ids.__getstate__() and old.ids.tags == st.base.ids.tags


def test_evidence_sets_stay_shared_until_a_value_is_noted():
    """Behaviour-only evidence (most of it: a busy new key's volume) holds no set of its own;
    the first new value makes one, also after a pickle round trip."""
    ev = Evidence(T0)
    names = ("new16", "ips", "countries", "uas", "regions", "models")
    assert all(getattr(ev, n) is _NONE for n in names)
    ev = pickle.loads(pickle.dumps(ev))  # the shared empty set comes back as another frozenset
    assert ev.note("countries", "KP", 0.9) and ev.note_net(0x2D09, 0x2D090909, 0.8) and not ev.note("countries", "KP", 0.9)
    assert ev.countries == {"KP"} and ev.new16 == {0x2D09} and ev.ips == {0x2D090909} and ev.n_items == 2
    assert type(ev.countries) is set and ev.models == frozenset() and Evidence(T0).models is _NONE


def test_a_large_bank_grows_by_a_quarter_not_twice():
    """Spare rows of a `SeasonalBank` are ≈ 1.8 KB each: past 4096 rows it grows by a quarter
    (a doubled bank of 100k key rows held 31k spare), its rows and their numbers kept."""
    from keywatch.models.forecast import SeasonalBank

    b = SeasonalBank()
    rows = [b.add() for _ in range(5000)]
    b.lvl_mu[4095] = 2.5
    assert rows == list(range(5000)) and b.cap == 5120 and b.hod.shape[-1] == 5120 and b.hod_mu.shape == (5120, 24)
    assert [b.add() for _ in range(121)][-1] == 5120 and b.cap == 6400 and b.lvl_mu[4095] == 2.5


def test_keys_share_one_zero_hour_profile_until_they_close_an_hour():
    t = T0
    fresh, other = KeyBaseline("openai", "p"), KeyBaseline("openai", "p")
    assert fresh.slot_req is other.slot_req and fresh.slot_n is other.slot_n  # one shared copy
    # The same events into a key holding its own arrays from the start: every figure must match.
    own = KeyBaseline("openai", "p")
    own.slot_req, own.slot_cost, own.slot_n = array("f", bytes(192)), array("f", bytes(192)), array("B", bytes(48))
    for i in range(3 * 24 * 60):
        for b in (fresh, own):
            b.learn_event(t + i * MIN, 1 + i % 7, 0.01 * (i % 5), i % 3 == 0, False, 0.3)
        if i == 30:  # within the first hour: still shared, and a pickle of it loads shared
            assert fresh.slot_n is other.slot_n
            assert pickle.loads(pickle.dumps(fresh)).slot_n is other.slot_n
    assert fresh.slot_n is not other.slot_n and pickle.dumps(fresh) == pickle.dumps(own)
    assert [fresh.expected(t + h * HOUR) for h in range(72)] == [own.expected(t + h * HOUR) for h in range(72)]
    # … and the hot path's arithmetic is the plain reading of the expectation, in every hour slot
    shaped = KeyBaseline("openai", "p")  # working hours only: silent slots fall to a fifth of the mean
    for i in range(10 * 24 * 60):
        if 9 <= i // 60 % 24 < 17:
            shaped.learn_event(t + i * MIN, 2 + i % 3, 0.02 * (i % 4), False, False, 0.1)
    shaped.learn_event(t + 10 * 24 * 60 * MIN + 5 * MIN, 3, 0.5, False, False, 0.1)  # an hour under way
    for b in (fresh, other, shaped):
        assert [b.expected(t + h * HOUR + 7) for h in range(-2, 200)] == [_plain_expected(b, t + h * HOUR + 7) for h in range(-2, 200)]
    assert not any(other.slot_req) and not any(other.slot_cost) and not any(other.slot_n)  # never written to
    assert any(pickle.loads(pickle.dumps(fresh)).slot_n)  # a key that learned loads its own profile
