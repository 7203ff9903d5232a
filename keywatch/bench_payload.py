"""What a tracked key's state holds as numbers, against the bytes its objects take.

Resident memory per key (keywatch/bench_memory.py) is what a worker's objects take. Part of it
is what the models keep by design — every float and int, 8 bytes; an `array`'s items; a numpy
array's bytes; a string's characters: the *payload*, what even a compiled layout of the same
state would hold. The rest is the objects' overhead: headers, pointers, dict and set tables, 24
bytes for each Python float. This walks a core's state component by component (a detector's
attribute; an object two components share counts in the first) and gives both per key, for
bench_memory's new keys, busy keys in 50 projects and busy keys each alone in its project.

It tells what ≤ 2 KB per key in memory would take. Where the payload is under 2 KB (new keys),
a tighter layout could get there; where it is over (busy keys), only a model that keeps less
could — which changes detection results.

A row bank's (models/rowbank.py) arrays count among the numbers in proportion to its rows in
use (spare rows are allocated, so they count in the objects' bytes, but are not state). The
dedupe window (`core._window`, a fixed bound, not per key) is apart, as `fixed`. The numbers are
counted on the core as a snapshot restores it (pickled and loaded again), so the caches a
snapshot leaves out (this hour's callers, row caches) do not count. They are a floor for the
state as the models define it, not for any layout: an index from key id to row, say, is not
counted, and each object counts once (a small int, which Python shares, once in all).

`python -m keywatch.bench_payload [--new-keys 100000] [--busy-keys 10000]` prints JSON (≈ 1.75 min).

>>> from array import array
>>> import numpy as np
>>> from keywatch.bench_memory import payload_of
>>> payload_of(1.5), payload_of("key_01"), payload_of(array("I", [1, 2, 3])), payload_of(np.zeros(4))
(8, 6, 12, 32)
>>> from keywatch.models.rowbank import RowBank
>>> class Bank(RowBank):                          # a row bank: 2 rows of 8 in use
...     def __init__(self): self.n, self.cap, self.free, self.x = 3, 8, [1], np.zeros((8, 4))
>>> walk_sizes(Bank())[1]                         # 2 of 8 rows of 4 float64 (64); n, cap, a free row (24)
88
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle

from keywatch.bench_core import _settings, synthetic_state
from keywatch.bench_memory import busy_state, walk_sizes


def components(core) -> dict[str, tuple[int, int]]:
    """Each detector attribute's (allocated, payload) bytes, then `fixed`: the dedupe window."""
    seen, out = {id(core)}, {}
    for d in core.detectors:
        seen.add(id(d))
        names = vars(d) if hasattr(d, "__dict__") else {a: getattr(d, a) for a in d.__slots__ if hasattr(d, a)}
        for name, value in names.items():
            out[f"{type(d).__name__}.{name}"] = walk_sizes(value, seen=seen)
    out["fixed"] = walk_sizes(core._window, seen=seen)
    return out


def per_key(core, keys: int, top: int = 8) -> dict:
    """Bytes per key of `core`'s state: its objects' (caches included), the numbers of its state
    (`payload`: of the core as a snapshot restores it, so without the caches it does not store),
    pickled (as a snapshot stores it); the dedupe window apart. Then the `top` components by
    their objects' bytes."""
    blob, window = pickle.dumps(core, protocol=5), pickle.dumps(core._window, protocol=5)
    live, state = components(core), components(pickle.loads(blob))  # noqa: S301 - our own, just made
    fixed = live.pop("fixed")
    state.pop("fixed")
    biggest = sorted(live, key=lambda name: -live[name][0])[:top]
    return {"keys": keys,
            "allocated_bytes_per_key": round(sum(a for a, _ in live.values()) / keys),
            "payload_bytes_per_key": round(sum(p for _, p in state.values()) / keys),
            "live_payload_bytes_per_key": round(sum(p for _, p in live.values()) / keys),  # caches' numbers too
            "pickled_bytes_per_key": round((len(blob) - len(window)) / keys),
            "fixed_dedupe_window_mb": round(fixed[0] / 2**20, 1),
            "components": {name: {"allocated": round(live[name][0] / keys),
                                  "payload": round(state.get(name, (0, 0))[1] / keys)} for name in biggest}}


def payload_report(new_keys: int = 100_000, busy_keys: int = 10_000, minutes: int = 150) -> dict:
    """`per_key` for new keys, busy keys in 50 projects and busy keys alone in their projects, at
    `keywatch bench`'s sizes by default."""
    settings = _settings(None)
    out = {}
    for name, keys, build in (("new", new_keys, lambda: synthetic_state(settings, new_keys)),
                              ("busy", busy_keys, lambda: busy_state(settings, busy_keys, minutes)),
                              ("busy_alone_in_project", busy_keys,
                               lambda: busy_state(settings, busy_keys, minutes, projects=busy_keys))):
        core = build()
        kt = core.detector("key_theft")
        out[name] = per_key(core, kt.tracked_keys() if kt is not None else keys)
        del core, kt
        gc.collect()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-keys", type=int, default=100_000, help="new keys (default 100000)")
    ap.add_argument("--busy-keys", type=int, default=10_000, help="busy keys, each way (default 10000)")
    ap.add_argument("--minutes", type=int, default=150, help="busy keys' minutes of calls (default 150)")
    args = ap.parse_args(argv)
    out = payload_report(args.new_keys, args.busy_keys, args.minutes)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
