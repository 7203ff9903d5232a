"""The module-level caches let go of idle keys' callers once an hour of event time
(models/caches.py); what state still holds stays shared."""

from __future__ import annotations

from keywatch.bench_core import _settings
from keywatch.bench_memory import idle_state
from keywatch.models import caches, events, keytheft_identity, netnovelty


def _wave_addresses(lo: int, hi: int) -> set[str]:
    """The addresses `new_key_call` gives keys lo..hi-1 in their four minutes (bench_core.py)."""
    return {f"34.{k % 200}.{(k // 200 + m) % 250}.{m % 3 + 1}" for k in range(lo, hi) for m in range(4)}


def test_idle_keys_callers_leave_the_caches_and_held_values_stay_shared(monkeypatch):
    monkeypatch.setattr(caches, "_last_hour", -1)
    monkeypatch.setattr(caches, "DROP_MIN", 1_000)  # waves of 1,000 keys, 4,000 callers
    for cache in (events._SHARED, netnovelty._NET_CACHE, keytheft_identity._IDENT, keytheft_identity._NETS):
        cache.clear()
    core = idle_state(_settings(None), 3_000, waves=3)  # waves 70 minutes apart: the first idle 2 hours
    first, last = _wave_addresses(0, 1_000), _wave_addresses(2_000, 3_000)
    assert not first & last
    assert not first & set(events._SHARED) and not first & set(netnovelty._NET_CACHE)
    assert last <= set(netnovelty._NET_CACHE)  # the last wave called within the hour: cached
    kt = core.detector("key_theft")
    key = next(k for p, k in kt.cold if k == "key_000001")  # an idle key, packed
    assert events._SHARED[key] is key  # its id is held by state: still the one shared object


def test_small_caches_are_kept(monkeypatch):
    """Below `DROP_MIN` entries a cache stays: the first wave's callers, idle two hours, are
    still cached when there are too few to be worth their re-lookups."""
    monkeypatch.setattr(caches, "_last_hour", -1)
    monkeypatch.setattr(caches, "DROP_MIN", 20_000)
    for cache in (events._SHARED, netnovelty._NET_CACHE, keytheft_identity._IDENT, keytheft_identity._NETS):
        cache.clear()
    idle_state(_settings(None), 3_000, waves=3)
    first = _wave_addresses(0, 1_000)
    assert first <= set(events._SHARED) and first <= set(netnovelty._NET_CACHE)
    assert len(keytheft_identity._IDENT) >= 3 * 4_000  # every wave's callers


def test_once_per_new_hour_and_not_in_the_first(monkeypatch):
    monkeypatch.setattr(caches, "_last_hour", -1)
    dropped = []
    monkeypatch.setattr(caches, "drop_unused", lambda: dropped.append(1))
    assert [caches.hourly(h) for h in (500, 500, 501, 501, 499, 503)] == [False, False, True, False, False, True]
    assert len(dropped) == 2
