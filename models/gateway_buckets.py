"""Gateway bypass's buckets: per key, the live ones as a flat list, the settled ones packed.

A key's buckets are kept for the detector's retention (3 days: provider usage can arrive late),
so a key seen both ways every hour holds ≈ 75 of them. Live buckets are one flat list per key,
[start, value, start, value, …] by start, one value for both sources: while only the gateway
has reported, one int, requests + (tokens << `TOK`); once the provider has, a list indexed by
`B_*`, its counts one such int too. (A (key, bucket) dict per source took ≈ 1.5× the memory.)

A bucket is *settled* once the event-time clock is past its end plus the lag allowance: it has
been judged, and only a late event can touch it again. Settled buckets are packed: per key one
bytes string, a format byte and then fixed-size records by start, ≈ 12–36 B a bucket instead of
≈ 280 B of Python objects. A late event for a packed bucket unpacks it into the live list first,
so the detector reads and judges live buckets only, and packing changes no finding.

A key's records are packed in the narrowest format that holds all of them exactly (`FORMATS`;
taking or dropping records leaves the rest in theirs):

* `GATEWAY` (12 B): only the gateway has reported (the usual case of a key whose provider usage
  is not ingested): start in seconds, requests and tokens below 2^32.
* `NARROW` (36 B): the provider too: its counts below 2^32, cost a float64, its first event time
  as milliseconds after the start, provider and project an index into the detector's `labels`.
* `WIDE` (60 B): anything else (counts up to 2^64, a start not on a whole second).

A record read back is the (start, value) that was packed, in every format.

>>> labels, index = [None], {}
>>> blob = pack_records([(10_000, 5 + (7 << TOK)), (20_000, [1, 2 + (3 << TOK), 0.5, 20_021, "openai", "p"])], labels, index)
>>> blob[0] == NARROW, len(blob) == 1 + 2 * FORMATS[NARROW].size, last_start(blob), labels
(True, True, 20000, [None, ('openai', 'p')])
>>> rest, value = take(blob, 20_000, labels)
>>> count(rest), value == [1, 2 + (3 << TOK), 0.5, 20_021, "openai", "p"], take(rest, 20_000, labels)[1]
(1, True, None)
>>> rest[0] == NARROW, pack_records([(10_000, 5 + (7 << TOK))], labels, index)[0] == GATEWAY
(True, True)
"""

from __future__ import annotations

import struct
from typing import Any

TOK, REQ = 64, (1 << 64) - 1
B_GATEWAY, B_PROVIDER, B_COST, B_FIRST, B_PROVIDER_NAME, B_PROJECT = range(6)
# Record formats, by the format byte that starts a blob. Every record is read as the wide one's
# fields: start, gateway requests, gateway tokens, provider requests, provider tokens, cost,
# first provider event time, label (0: gateway only).
WIDE, NARROW, GATEWAY = range(3)
FORMATS = (struct.Struct("<qQQQQdqI"), struct.Struct("<IIIIIdII"), struct.Struct("<III"))
_U32 = 1 << 32
_STARTS = (struct.Struct("<q"), struct.Struct("<I"), struct.Struct("<I"))
_SCALE = (1, 1000, 1000)  # a start is stored in ms (wide) or in seconds


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


def _fields(start: int, v, labels: list, index: dict) -> tuple:
    """A (start, value) pair as a wide record's fields; a new (provider, project) joins `labels`."""
    if v.__class__ is int:
        return start, v & REQ, v >> TOK, 0, 0, 0.0, 0, 0
    gw, p, cost, first, provider, project = v
    lab = index.get((provider, project))
    if lab is None:
        lab = index[(provider, project)] = len(labels)
        labels.append((provider, project))
    return start, gw & REQ, gw >> TOK, p & REQ, p >> TOK, cost, first, lab


def _fit(rows) -> int:
    """The narrowest format that holds every one of `rows` (wide fields) exactly."""
    fmt = GATEWAY
    for start, gr, gt, pr, pt, _, first, lab in rows:
        if start % 1000 or not 0 <= start < _U32 * 1000 or gr >= _U32 or gt >= _U32:
            return WIDE
        if lab:
            if pr >= _U32 or pt >= _U32 or not 0 <= first - start < _U32:
                return WIDE
            fmt = NARROW
    return fmt


def _encode(fmt: int, rows) -> bytes:
    rec = FORMATS[fmt].pack
    if fmt == WIDE:
        return b"".join([rec(*r) for r in rows])
    if fmt == NARROW:
        return b"".join([rec(r[0] // 1000, r[1], r[2], r[3], r[4], r[5], r[6] - r[0] if r[7] else 0, r[7]) for r in rows])
    return b"".join([rec(r[0] // 1000, r[1], r[2]) for r in rows])


def _decode(blob: bytes, at: int) -> tuple:
    """The wide fields of the record at byte offset `at`."""
    fmt = blob[0]
    if fmt == NARROW:
        s, gr, gt, pr, pt, cost, off, lab = FORMATS[NARROW].unpack_from(blob, at)
        return s * 1000, gr, gt, pr, pt, cost, s * 1000 + off if lab else 0, lab
    if fmt == GATEWAY:
        s, gr, gt = FORMATS[GATEWAY].unpack_from(blob, at)
        return s * 1000, gr, gt, 0, 0, 0.0, 0, 0
    return FORMATS[WIDE].unpack_from(blob, at)


def _rows(blob: bytes) -> list[tuple]:
    size = FORMATS[blob[0]].size
    return [_decode(blob, at) for at in range(1, len(blob), size)]


def _blob(rows: list[tuple]) -> bytes:
    fmt = _fit(rows)
    return bytes((fmt,)) + _encode(fmt, rows)


def pack_records(items, labels: list, index: dict) -> bytes:
    """(start, value) pairs, by start, as a blob; new (provider, project) pairs join `labels`."""
    return _blob([_fields(start, v, labels, index) for start, v in items])


def unpack_record(blob: bytes, at: int, labels: list) -> tuple[int, Any]:
    """(start, value) of the record at byte offset `at`."""
    start, gr, gt, pr, pt, cost, first, lab = _decode(blob, at)
    if not lab:
        return start, gr + (gt << TOK)
    provider, project = labels[lab]
    return start, [gr + (gt << TOK), pr + (pt << TOK), cost, first, provider, project]


def count(blob: bytes) -> int:
    """How many records `blob` holds."""
    return (len(blob) - 1) // FORMATS[blob[0]].size if blob else 0


def _start(blob: bytes, i: int) -> int:
    fmt = blob[0]
    return _STARTS[fmt].unpack_from(blob, 1 + i * FORMATS[fmt].size)[0] * _SCALE[fmt]


def first_start(blob: bytes) -> int:
    return _start(blob, 0)


def last_start(blob: bytes) -> int:
    return _start(blob, count(blob) - 1)


def _find(blob: bytes, start: int) -> int:
    """Index of the first record whose start is ≥ `start` (binary search: records are by start)."""
    lo, hi = 0, count(blob)
    while lo < hi:
        mid = (lo + hi) // 2
        if _start(blob, mid) < start:
            lo = mid + 1
        else:
            hi = mid
    return lo


def take(blob: bytes, start: int, labels: list) -> tuple[bytes, Any]:
    """(`blob` without bucket `start`, its value), or (`blob`, None) if it has no such bucket;
    b"" once no record is left."""
    i = _find(blob, start)
    if i >= count(blob) or _start(blob, i) != start:
        return blob, None
    size = FORMATS[blob[0]].size
    at = 1 + i * size
    rest = blob[:at] + blob[at + size:]
    return rest if len(rest) > 1 else b"", unpack_record(blob, at, labels)[1]


def drop_before(blob: bytes, cutoff: int) -> bytes:
    """`blob` without the buckets that start before `cutoff` (b"" if none is left)."""
    rest = blob[:1] + blob[1 + _find(blob, cutoff) * FORMATS[blob[0]].size:]
    return rest if len(rest) > 1 else b""


def merge(blob: bytes, items: list, labels: list, index: dict) -> bytes:
    """`blob` with the (start, value) pairs `items` (by start) added, all by start: in the
    blob's format while the new ones fit it, else all in the narrowest format that holds them."""
    rows = [_fields(start, v, labels, index) for start, v in items]
    if not blob:
        return _blob(rows)
    fmt = blob[0]
    if last_start(blob) < rows[0][0] and _fit(rows) >= fmt:  # the usual case: newer than every packed one
        return blob + _encode(fmt, rows)  # (formats go narrower as their number goes up)
    return _blob(sorted(_rows(blob) + rows, key=lambda r: r[0]))


def from_wide(blob: bytes) -> bytes:
    """A blob as session 20 packed it (60-byte wide records, no format byte), in today's form."""
    return _blob(_rows(bytes((WIDE,)) + blob)) if blob else b""


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
