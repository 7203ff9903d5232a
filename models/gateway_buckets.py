"""Gateway bypass's buckets: per key, the live ones as a flat list, the settled ones packed.

A key's buckets are kept for the detector's retention (3 days: provider usage can arrive late),
so a key seen both ways every hour holds ≈ 75 of them. Live buckets are one flat list per key,
[start, value, start, value, …] by start, one value for both sources: while only the gateway
has reported, one int, requests + (tokens << `TOK`); once the provider has, a list indexed by
`B_*`, its counts one such int too. (A (key, bucket) dict per source took ≈ 1.5× the memory.)

A bucket is *settled* once the event-time clock is past its end plus the lag allowance: it has
been judged, and only a late event can touch it again. Settled buckets are packed: per key one
bytes string of fixed-size records by start (`REC`), ≈ 60 B a bucket instead of ≈ 280 B of
Python objects. A late event for a packed bucket unpacks it into the live list first, so the
detector reads and judges live buckets only, and packing changes no finding. Counts are exact
in the records (each of requests and tokens below 2^64, as in the ints), cost is a float64,
provider and project are an index into the detector's `labels` (0: no provider report yet).

>>> labels, index = [None], {}
>>> blob = pack_records([(10, 5 + (7 << TOK)), (20, [1, 2 + (3 << TOK), 0.5, 21, "openai", "p"])], labels, index)
>>> len(blob) == 2 * REC.size, last_start(blob), labels
(True, 20, [None, ('openai', 'p')])
>>> rest, value = take(blob, 20, labels)
>>> rest == blob[:REC.size], value == [1, 2 + (3 << TOK), 0.5, 21, "openai", "p"], take(rest, 20, labels)[1]
(True, True, None)
"""

from __future__ import annotations

import struct
from typing import Any

TOK, REQ = 64, (1 << 64) - 1
B_GATEWAY, B_PROVIDER, B_COST, B_FIRST, B_PROVIDER_NAME, B_PROJECT = range(6)
# start, gateway requests, gateway tokens, provider requests, provider tokens, cost, first
# provider event time, label (0: gateway only)
REC = struct.Struct("<qQQQQdqI")
_START = struct.Struct("<q")


def slot(kb: list, start: int) -> int:
    """Where bucket `start` is in a key's flat list: its index (the value follows), or, if it
    has none, −1 − the index it goes in at. From the end: the newest buckets are the usual ones.

    >>> kb = [10, "a", 20, "b"]
    >>> slot(kb, 20), slot(kb, 10), slot(kb, 30), slot(kb, 15), slot(kb, 5)
    (2, 0, -5, -3, -1)
    """
    i = len(kb) - 2
    while i >= 0:
        s = kb[i]
        if s == start:
            return i
        if s < start:
            return -3 - i
        i -= 2
    return -1


def pack_records(items, labels: list, index: dict) -> bytes:
    """(start, value) pairs, by start, as records; new (provider, project) pairs join `labels`."""
    out = []
    for start, v in items:
        if v.__class__ is int:
            out.append(REC.pack(start, v & REQ, v >> TOK, 0, 0, 0.0, 0, 0))
            continue
        gw, p, cost, first, provider, project = v
        lab = index.get((provider, project))
        if lab is None:
            lab = index[(provider, project)] = len(labels)
            labels.append((provider, project))
        out.append(REC.pack(start, gw & REQ, gw >> TOK, p & REQ, p >> TOK, cost, first, lab))
    return b"".join(out)


def unpack_record(blob: bytes, at: int, labels: list) -> tuple[int, Any]:
    """(start, value) of the record at byte offset `at`."""
    start, gr, gt, pr, pt, cost, first, lab = REC.unpack_from(blob, at)
    if not lab:
        return start, gr + (gt << TOK)
    provider, project = labels[lab]
    return start, [gr + (gt << TOK), pr + (pt << TOK), cost, first, provider, project]


def first_start(blob: bytes) -> int:
    return _START.unpack_from(blob, 0)[0]


def last_start(blob: bytes) -> int:
    return _START.unpack_from(blob, len(blob) - REC.size)[0]


def _find(blob: bytes, start: int) -> int:
    """Index of the first record whose start is ≥ `start` (binary search: records are by start)."""
    lo, hi, size = 0, len(blob) // REC.size, REC.size
    while lo < hi:
        mid = (lo + hi) // 2
        if _START.unpack_from(blob, mid * size)[0] < start:
            lo = mid + 1
        else:
            hi = mid
    return lo


def take(blob: bytes, start: int, labels: list) -> tuple[bytes, Any]:
    """(`blob` without bucket `start`, its value), or (`blob`, None) if it has no such bucket."""
    i = _find(blob, start) * REC.size
    if i >= len(blob) or _START.unpack_from(blob, i)[0] != start:
        return blob, None
    return blob[:i] + blob[i + REC.size:], unpack_record(blob, i, labels)[1]


def drop_before(blob: bytes, cutoff: int) -> bytes:
    """`blob` without the buckets that start before `cutoff`."""
    return blob[_find(blob, cutoff) * REC.size:]


def merge(blob: bytes, items: list, labels: list, index: dict) -> bytes:
    """`blob` with the (start, value) pairs `items` (by start) added, all by start."""
    if not blob or last_start(blob) < items[0][0]:  # the usual case: newer than every packed one
        return blob + pack_records(items, labels, index)
    old = [unpack_record(blob, i, labels) for i in range(0, len(blob), REC.size)]
    return pack_records(sorted(old + items, key=lambda sv: sv[0]), labels, index)


def merge_sources(gateway: dict, provider: dict) -> dict[str, list]:
    """Live buckets from an older snapshot's per-source dicts: gateway values [requests, tokens]
    lists or ints, provider values [requests, tokens, cost, provider, project, first ms] lists
    or dicts of those names."""
    out: dict[str, dict[int, Any]] = {}
    for (key, start), v in gateway.items():
        out.setdefault(key, {})[start] = v if v.__class__ is int else v[0] + (v[1] << TOK)
    for (key, start), v in provider.items():
        if v.__class__ is dict:
            v = [v["requests"], v["tokens"], v["cost"], v["provider"], v["project"], v["first_ms"]]
        kb = out.setdefault(key, {})
        kb[start] = [kb.get(start, 0), v[0] + (v[1] << TOK), v[2], v[5], v[3], v[4]]
    return {key: [x for s in sorted(kb) for x in (s, kb[s])] for key, kb in out.items()}
