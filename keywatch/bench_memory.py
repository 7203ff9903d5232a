"""Resident memory per tracked key, as a worker holds it (objects, arrays and the caches that grow
with distinct callers, to their bounds), where the pickled size (keywatch/bench_core.py) is what
a snapshot stores. Each figure is the growth of this process's resident set while a core builds
its state, ÷ keys; meant for a fresh process (`keywatch bench` runs each in one): memory another
run freed would be reused and not show. Measured after returning freed heap memory to the OS
(keywatch/memtrim.py), as the worker does every `KEYWATCH_MEMORY_TRIM_S`; `untrimmed_…` is the
growth before that (what the figures were until session 20).

* new keys (`resident_growth`): `synthetic_state`, keys with a few calls each, every call from a
  network new to the key — what a burst of new keys leaves.
* busy keys (`resident_busy`): `busy_state`, keys calling every minute for 2.5 hours from their
  two usual hosts with two models — the steady state of active keys, with the root-cause
  detector's two hours of spend per minute (models/rootcause.py) and an hour boundary passed.
  In 50 projects, so what a project holds is spread over hundreds of keys; with `projects=keys`,
  each key alone in its project, a key carries its project's state too (its spend series, their
  anomaly scorer, root-cause minutes, caller population): the figure of one-key projects.
* mostly idle keys (`resident_idle`): `idle_state`, new keys in waves 70 minutes apart, all but
  the last wave idle for over an hour, as most tracked keys are at any time: their key-theft
  state and cost-spike rows packed (models/keytheft_cold.py, models/costspike_cold.py) into a
  spill file on disk (models/spill.py; `spilled_bytes_per_key`), their freed memory reused by
  the next wave.
* gateway-fronted keys (`resident_gateway`): `gateway_state`, keys seen every hour for 3 days by
  their gateway and in the provider's usage, whose hourly buckets gateway bypass keeps 3 days.
"""

from __future__ import annotations

import gc
import sys
import types
from array import array

import numpy as np

from keywatch.bench_core import MODELS, UAS, _settings, feed, new_key_call, synthetic_state
from keywatch.memtrim import resident_bytes, trim
from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent
from keywatch.models.registry import build_core
from keywatch.models.rowbank import RowBank
from keywatch.models.spill import spill_totals

T0 = 1_793_577_600_000


def busy_state(settings, keys: int, minutes: int = 150, t0: int = T0, projects: int = 50) -> DetectionCore:
    """`keys` keys in `projects` projects, one call a minute each for `minutes` minutes, each key
    from its two hosts (one /24) with its SDK, alternating two models."""
    return feed(build_core(settings), (UsageEvent(
        event_id=f"u{k}-{minute}", ts=t0 + minute * 60_000 + k % 60_000, provider="openai",
        key_id=f"key_{k:06x}", project=f"proj-{k % projects:02d}", model=MODELS[(k + minute % 2) % 4],
        source="gateway", source_ip=f"10.{k % 200}.{k // 200 % 250}.{1 + minute % 2}",
        country="US", user_agent=UAS[k % 3], input_tokens=500, output_tokens=100)
        for minute in range(minutes) for k in range(keys)))


def idle_state(settings, keys: int, waves: int = 10, t0: int = T0) -> DetectionCore:
    """`keys` keys arriving in `waves` waves 70 minutes apart, each key calling four times within
    its wave's first minutes (`synthetic_state`'s calls), then idle: at the end all but the last
    wave have been idle over an hour (`KEYWATCH_KEY_COLD_AFTER_S`) — how most tracked keys are."""
    per = -(-keys // waves)

    def events():
        for w in range(waves):
            lo, hi, start = w * per, min(keys, (w + 1) * per), t0 + w * 70 * 60_000
            for minute in range(70 if w < waves - 1 else 4):
                if minute < 4:
                    yield from (new_key_call(k, minute, start) for k in range(lo, hi))
                else:  # the rest of the wave's 70 minutes: one other key, so minutes and sweeps pass
                    yield new_key_call(keys + w, minute, start)
    return feed(build_core(settings), events())


def gateway_state(settings, keys: int, hours: int = 75, t0: int = T0) -> DetectionCore:
    """`keys` gateway-fronted keys, each seen once an hour for `hours` hours both by its gateway
    and in the provider's usage: gateway bypass keeps 3 days of both kinds of hourly bucket."""
    def events():
        for h in range(hours):
            for k in range(keys):
                ts = t0 + h * 3_600_000 + k % 3_000_000
                caller = {"source_ip": f"10.{k % 200}.{k // 200 % 250}.1", "country": "US", "user_agent": UAS[k % 3]}
                for src, seen in (("gateway", caller), ("provider_usage", {})):  # the provider's usage has no caller
                    yield UsageEvent(event_id=f"{src[0]}{k}-{h}", ts=ts, provider="openai", key_id=f"key_{k:06x}",
                                     project=f"proj-{k % 50:02d}", model=MODELS[k % 4], source=src, input_tokens=500,
                                     output_tokens=100, **seen)
    return feed(build_core(settings), events())


def _growth(build, keys: int, settings) -> dict:
    settings = _settings(settings)
    build_core(settings)  # imports and module-level tables: not per key
    gc.collect()
    trim()
    before = resident_bytes()
    core = build(settings, keys)
    gc.collect()
    untrimmed = resident_bytes()
    trim()  # freed heap memory back to the OS, as the worker does every KEYWATCH_MEMORY_TRIM_S
    after = resident_bytes()
    kt = core.detector("key_theft")
    tracked = kt.tracked_keys() if kt is not None else keys
    dedupe = dedupe_window_bytes(core)
    if before is None or after is None or untrimmed is None:
        return {"keys": tracked, "resident_bytes_per_key": None, "resident_mb": None, "dedupe_window_mb": None,
                "untrimmed_bytes_per_key": None}
    return {"keys": tracked, "resident_bytes_per_key": round((after - before) / max(1, tracked), 1),
            "resident_mb": round((after - before) / 2**20, 1), "dedupe_window_mb": round(dedupe / 2**20, 1),
            "untrimmed_bytes_per_key": round((untrimmed - before) / max(1, tracked), 1),
            "spilled_bytes_per_key": round(spill_totals(core.detectors)[0] / max(1, tracked), 1)}


def dedupe_window_bytes(core: DetectionCore) -> int:
    """Bytes of the core's dedupe window (its last `KEYWATCH_DEDUPE_WINDOW_EVENTS` event ids, as
    digests: models/dedupe.py): part of each figure, but not per key — it stops growing at its
    bound, so a run with fewer keys (the gateway-fronted one) carries more of it per key.

    >>> core = feed(build_core(_settings(None)), [new_key_call(k, 0, T0) for k in range(10)])
    >>> 0 < dedupe_window_bytes(core) < 10_000
    True
    """
    return deep_size(core._window)


def deep_size(*roots) -> int:
    """Bytes of the objects reachable from `roots`, each counted once (classes, functions and
    modules not followed): allocated, not resident, and a numpy view counts its header only.

    >>> shared = "x" * 100
    >>> deep_size([shared, shared]) == deep_size([shared]) + 8
    True
    """
    return walk_sizes(*roots)[0]


_SKIP = (type, types.FunctionType, types.ModuleType, types.BuiltinFunctionType, types.MethodType)


def payload_of(o) -> int:
    """Bytes of numbers or text `o` itself holds (containers: 0; their items count on their own)."""
    if o is None or isinstance(o, bool):
        return 0
    if isinstance(o, (int, float)):
        return 8
    if isinstance(o, complex):
        return 16
    if isinstance(o, (str, bytes)):
        return len(o)
    if isinstance(o, array):
        return o.itemsize * len(o)
    if isinstance(o, np.ndarray):
        return o.nbytes if o.base is None else 0  # a view's bytes are its base's
    return 0


def _rows_in_use(o) -> dict[int, float]:
    """For a row bank, its arrays' ids → the share of their rows in use (rows on the first or, in
    `SeasonalBank`'s layout, the last axis)."""
    if not isinstance(o, RowBank):
        return {}
    cap = o.cap
    share = (o.n - len(o.free)) / cap if cap else 0.0
    return {id(a): share for a in vars(o).values() if isinstance(a, np.ndarray) and cap in (a.shape[:1] + a.shape[-1:])}


def walk_sizes(*roots, seen: set | None = None) -> tuple[int, int]:
    """(allocated bytes, payload bytes) of the objects reachable from `roots` not in `seen`
    (updated: each object counts once); classes, functions and modules are not followed. The
    payload (keywatch/bench_payload.py) is the numbers and text the objects hold (`payload_of`),
    a row bank's arrays in proportion to its rows in use (`_rows_in_use`)."""
    seen = set() if seen is None else seen
    stack, allocated, payload, share = list(roots), 0, 0, {}
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _SKIP):
            continue
        seen.add(id(o))
        share.update(_rows_in_use(o))
        allocated += sys.getsizeof(o)
        payload += round(payload_of(o) * share.get(id(o), 1.0))
        stack.extend(gc.get_referents(o))
    return allocated, payload


def resident_growth(keys: int, settings=None) -> dict:
    """New keys: the resident growth while `synthetic_state` builds `keys` keys, ÷ keys.

    >>> r = resident_growth(300)  # here not a fresh process: the figure itself is not checked
    >>> r["keys"], sorted(r)
    (300, ['dedupe_window_mb', 'keys', 'resident_bytes_per_key', 'resident_mb', 'spilled_bytes_per_key', 'untrimmed_bytes_per_key'])
    """
    return _growth(synthetic_state, keys, settings)


def resident_idle(keys: int, waves: int = 10, settings=None) -> dict:
    """Mostly idle keys: the resident growth while `idle_state` builds `keys` keys, ÷ keys.

    >>> r = resident_idle(50, waves=2)  # not a fresh process: the figure itself is not checked
    >>> r["keys"], r["waves"]
    (51, 2)
    """
    return {**_growth(lambda s, n: idle_state(s, n, waves), keys, settings), "waves": waves}


def resident_gateway(keys: int, hours: int = 75, settings=None) -> dict:
    """Keys seen both ways every hour for 3 days: the resident growth while `gateway_state` builds
    them, ÷ keys.

    >>> r = resident_gateway(20, hours=2)  # not a fresh process: the figure itself is not checked
    >>> r["keys"], r["hours"]
    (20, 2)
    """
    return {**_growth(lambda s, n: gateway_state(s, n, hours), keys, settings), "hours": hours}


def resident_busy(keys: int, minutes: int = 150, settings=None, projects: int = 50) -> dict:
    """Busy keys: the resident growth while `busy_state` builds `keys` keys in `projects`
    projects, ÷ keys.

    >>> r = resident_busy(50, minutes=3, projects=50)  # not a fresh process: the figure itself is not checked
    >>> r["keys"], r["minutes"], r["projects"]
    (50, 3, 50)
    """
    return {**_growth(lambda s, n: busy_state(s, n, minutes, projects=projects), keys, settings), "minutes": minutes,
            "projects": projects}
