"""The hot path's caches change nothing but time: detection with every bounded cache cut to a
few entries (so each starts again many times a minute) gives the same alerts, score rows and
learned project populations as with the usual bounds.

Guards against a cache whose entries are told apart by object identity: a project once kept
this hour's callers by `id()`, and a caller made at a freed caller's address went unlearned
(with that code, this test's score rows and populations differ).
"""

from __future__ import annotations

import msgspec

from keywatch.models import caches, events, keytheft_identity, netnovelty, rootcause
from keywatch.models.events import Event
from keywatch.models.keyids import ATTRS
from keywatch.models.registry import build_core
from keywatch.sim_incidents import ALL_TYPES
from keywatch.simulate import SimConfig, generate

TINY = [(events, "SHARED_MAX", 4), (keytheft_identity, "IDENT_MAX", 3),
        (keytheft_identity, "TAIL_MAX", 3), (keytheft_identity, "NETS_MAX", 3), (netnovelty, "_CACHE_MAX", 3),
        (rootcause, "CONTRIBUTORS_MAX", 3)]
CACHES = [events._SHARED, keytheft_identity._IDENT, keytheft_identity._TAIL, keytheft_identity._NETS,
          netnovelty._NET_CACHE, netnovelty._UA_CACHE, netnovelty._MODEL_CACHE]


def _drop_detector_caches(core) -> None:
    """What snapshots leave out as caches, dropped: key theft's callers of the hour (a key's and
    a project's) and quiet-hour answers, cost spike's routes and root-cause sums and tuples."""
    kt = core.detector("key_theft")
    for st in kt.keys.values():
        st.fresh, st.last_items, st.base.qh = None, (), (-1, False)
    for pop in kt.pops.values():
        pop.recent_hour, pop.recent = -1, {}
    for det in core.detectors:
        if det.name == "cost_spike":
            det._routes = det._tags = det._lvmask = None
            det.rc._acc, det.rc._cons, det.rc._epoch = {}, {}, None


def _detect(settings, docs: list[dict], drop=None, size: int = 2000) -> tuple[list, list, dict]:
    for cache in CACHES:  # each run starts cold, as a new process does
        cache.clear()
    evs = [msgspec.convert(d, Event) for d in docs]  # decoded per run: text sharing is a cache too
    core = build_core(settings)
    alerts, scores = [], []
    for i in range(0, len(evs), size):
        out = core.process(evs[i:i + size])
        alerts += [msgspec.to_builtins(a) for a in out.alerts]
        scores += [msgspec.to_builtins(s) for s in out.scores]
        if drop is not None:
            drop(core)
    pops = {p: {a: sorted(zip(pop.ids.values(a), pop.ids.hours(a))) for a in ATTRS}
            for p, pop in core.detector("key_theft").pops.items()}
    return alerts, scores, pops


def _docs() -> list[dict]:
    # Every incident type, hard ones included: many callers (proxies, residential users, CI fleets).
    return list(generate(SimConfig(keys=30, projects=2, days=2.0, seed=7, warmup_days=1.0, incidents=list(ALL_TYPES))))


def test_detection_is_the_same_with_every_cache_cut_to_a_few_entries(make_settings, monkeypatch):
    settings, docs = make_settings(), _docs()
    usual = _detect(settings, docs)
    for module, name, bound in TINY:
        monkeypatch.setattr(module, name, bound)
    tiny = _detect(settings, docs)
    assert usual[0], "the simulation should raise alerts"
    assert tiny[0] == usual[0]
    assert tiny[1] == usual[1]
    assert tiny[2] == usual[2]


def test_detection_is_the_same_when_the_detectors_caches_are_dropped_after_every_batch(make_settings):
    settings, docs = make_settings(), _docs()
    usual = _detect(settings, docs, size=97)
    assert _detect(settings, docs, _drop_detector_caches, size=97) == usual


def test_detection_is_the_same_when_the_module_caches_let_go_after_every_batch(make_settings):
    """`caches.drop_unused` (hourly in the worker, models/caches.py) after every batch."""
    settings, docs = make_settings(), _docs()
    usual = _detect(settings, docs, size=97)
    assert _detect(settings, docs, lambda core: caches.drop_unused(minimum=0), size=97) == usual
