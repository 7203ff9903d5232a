"""A packed key row is one bytes object holding its project (`cold_entry`), a key with rows in
several projects a tuple of them; snapshots hold `cold` as before, ((project, blob), …) per key."""

from __future__ import annotations

import pickle

from keywatch.models.core import DetectionCore
from keywatch.models.costspike import CostSpikeDetector
from keywatch.models.costspike_cold import cold_entry, split_entry
from keywatch.models.costspike_rows import as_tuple
from keywatch.models.events import UsageEvent

from .sim import DAY0, MIN


def _call(i: int, minute: int, key: str, project: str | None, usd: float) -> UsageEvent:
    return UsageEvent(event_id=f"c{i}", ts=DAY0 + minute * MIN + 5_000, provider="openai", key_id=key, project=project,
                      model="gpt-4o", cost_usd=usd, requests=1)


def _packed_detector() -> tuple[CostSpikeDetector, DetectionCore]:
    """k1 with spend in projects p and q, k2 in no project, k3 busy throughout; k1 and k2 idle after minute 300."""
    det = CostSpikeDetector(warmup_min=60, cold_after_min=60)
    core = DetectionCore([det])
    calls = []
    for m in range(480):
        if m < 300:
            calls += [_call(4 * m, m, "k1", "p", 0.2), _call(4 * m + 1, m, "k1", "q", 0.1), _call(4 * m + 2, m, "k2", None, 0.3)]
        calls.append(_call(4 * m + 3, m, "k3", "p", 0.05))
    core.process(calls)
    return det, core


def test_entries_hold_the_project_and_the_row():
    e = cold_entry("proj-é", b"\x01\x02")
    assert split_entry(e)[0] == "proj-é" and bytes(split_entry(e)[1]) == b"\x01\x02"
    assert split_entry(cold_entry(None, b"x"))[0] is None and as_tuple(e) == (e,)


def test_keys_in_one_project_hold_one_entry_in_several_a_tuple_and_rows_come_back_alike():
    det, core = _packed_detector()
    assert isinstance(det.cold[("openai", "k2")], bytes) and split_entry(det.cold[("openai", "k2")])[0] is None
    k1 = det.cold[("openai", "k1")]
    assert isinstance(k1, tuple) and sorted(split_entry(e)[0] for e in k1) == ["p", "q"]
    assert det.packed_count() == 3 and det.describe()["packed_key_series"] == 3
    ref = CostSpikeDetector(warmup_min=60, cold_after_min=0)  # never packs
    ref_core = DetectionCore([ref])
    ref_core.process([_call(4 * m + j, m, k, p, usd) for m in range(300) for j, (k, p, usd) in
                      enumerate((("k1", "p", 0.2), ("k1", "q", 0.1), ("k2", None, 0.3)))]
                     + [_call(4 * m + 3, m, "k3", "p", 0.05) for m in range(480)])
    assert det.describe_key("k1") == ref.describe_key("k1") and det.describe_key("k2") == ref.describe_key("k2")
    # k1's row of project q comes back with its next call; p's stays packed, alone.
    for d, c in ((det, core), (ref, ref_core)):
        c.process([_call(9000, 480, "k1", "q", 0.1)])
    assert isinstance(det.cold[("openai", "k1")], bytes) and split_entry(det.cold[("openai", "k1")])[0] == "p"
    by_project = lambda d: sorted(d.describe_key("k1")["series"], key=lambda s: s["project"])  # noqa: E731
    assert by_project(det) == by_project(ref) and len(by_project(det)) == 2


def test_snapshots_hold_cold_as_before_and_load_either_way():
    det, _ = _packed_detector()
    st = det.__getstate__()
    assert st["cold"][("openai", "k2")] == ((None, bytes(split_entry(det.cold[("openai", "k2")])[1])),)
    assert {p for p, _ in st["cold"][("openai", "k1")]} == {"p", "q"}
    assert all(isinstance(b, bytes) for got in st["cold"].values() for _, b in got)
    back = pickle.loads(pickle.dumps(det))
    assert back.cold == det.cold and back.describe_key("k1") == det.describe_key("k1")


def test_keys_of_a_project_route_to_one_group_tuple():
    """Each key's cached route holds its project's root-cause group: one shared tuple, not one a key."""
    det = CostSpikeDetector(warmup_min=60)
    DetectionCore([det]).process([_call(i, 0, f"k{i}", "p", 0.1) for i in range(3)] + [_call(9, 0, "k9", "q", 0.1)])
    routes = det._routes[0]
    in_p = [rt[2] for rk, rt in routes.items() if rk[1] == "p"]
    assert len(in_p) == 3 and all(g is det.rc.group(("openai", "p")) for g in in_p)
    assert next(rt[2] for rk, rt in routes.items() if rk[1] == "q") == ("openai", "q")
