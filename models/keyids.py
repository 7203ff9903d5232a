"""A key's identity history (`KeyBaseline.ids`), packed: every set in two arrays.

`IdentitySets` (models/features.py) keeps eight `SeenSet`s, eight objects and sixteen arrays:
≈ 2 KB per key, for the ≈ 8 values a key holds (the bench's keys: 7.5 on average). Here each
value is one tagged entry (`tag << 32 | value`, `tag` = the set) of one array, its last-seen
hour at the same place of another: ≈ 0.3 KB. The sets behave as before — each bounded (the
same caps), its least recently seen value evicted, the first such in array order, as in a
`SeenSet`, where a new value takes the evicted one's place. A membership test scans the key's
entries of every set rather than one set's; it runs at a caller's first call of an hour (in
the live bench, < 1 % of calls: `KeyState.fresh` answers the rest).

>>> ids = KeyIds()
>>> ids.add(tag("n16", 0x2201), 498_000), ids.add(tag("n16", 0x2201), 498_001)
(False, False)
>>> tag("n16", 0x2201) in ids, ids.has("n16"), ids.has("ips"), ids.values("n16"), ids.hours("n16")
(True, True, False, [8705], [498001])
>>> for v in range(7): _ = ids.add(tag("n16", v), 498_002)
>>> ids.add(tag("n16", 99), 498_003), 0x2201 in ids.values("n16"), ids.count("n16")  # cap 8: the oldest goes
(True, False, 8)
"""

from __future__ import annotations

from array import array
from typing import Sequence

ATTRS = ("ips", "n24", "n16", "countries", "ua_fam", "ua_ver", "models", "regions")  # `IdentitySets.__slots__`
CAPS = (16, 12, 8, 6, 6, 8, 10, 4)  # `IdentitySets(scale=1)`
TAG = {a: i << 32 for i, a in enumerate(ATTRS)}
BIT = {a: 1 << i for i, a in enumerate(ATTRS)}
MASK = 0xFFFFFFFF


def tag(attr: str, v: int) -> int:
    """`v` (32 bits: `net_parts`, `h32`, `country_code`) tagged with its set."""
    return TAG[attr] | v


def attr_of(tv: int) -> str:
    return ATTRS[tv >> 32]


def pack_sets(parts: list[tuple[int, Sequence[int], Sequence[int]]]) -> bytes:
    """Eight sets, (cap, values, hours) each in `ATTRS` order, as one bytes object: a type code
    ("I": 32-bit; "Q" if a value or hour needs more), then per set its size (1 byte), its cap
    (2 bytes), its values and its hours. A snapshot at 100k keys is mostly this.

    >>> unpack_sets(pack_sets([(16, [7], [498_000])] + [(4, [], [])] * 7))[0]
    (16, array('I', [7]), array('I', [498000]))
    """
    wide = any(len(v) and (max(v) > MASK or max(h) > MASK) for _, v, h in parts)
    code = "Q" if wide else "I"
    out = bytearray(code.encode())
    for cap, vals, hours in parts:
        out += len(vals).to_bytes(1, "little") + cap.to_bytes(2, "little")
        out += array(code, vals).tobytes() + array(code, hours).tobytes()
    return bytes(out)


def unpack_sets(state: bytes) -> list[tuple[int, array, array]]:
    """`pack_sets`' (cap, values, hours) per set."""
    code = chr(state[0])
    w, pos, out = array(code).itemsize, 1, []
    for _ in ATTRS:
        n, cap = state[pos], int.from_bytes(state[pos + 1:pos + 3], "little")
        pos += 3
        out.append((cap, array(code, state[pos:pos + n * w]), array(code, state[pos + n * w:pos + 2 * n * w])))
        pos += 2 * n * w
    return out


class KeyIds:
    """The eight bounded identity sets of one key (see the module)."""

    __slots__ = ("vals", "last", "tags")
    CAPS = CAPS  # each set's bound, in `ATTRS` order

    def __init__(self) -> None:
        self.vals = array("Q")  # tagged values
        self.last = array("I")  # last-seen hours
        self.tags = 0  # a bit per set holding a value (`BIT`): sets never empty again

    def __contains__(self, tv: int) -> bool:
        return tv in self.vals

    def __len__(self) -> int:
        return len(self.vals)

    def has(self, attr: str) -> bool:
        return bool(self.tags & BIT[attr])

    def values(self, attr: str) -> list[int]:
        t = ATTRS.index(attr)
        return [x & MASK for x in self.vals if x >> 32 == t]

    def hours(self, attr: str) -> list[int]:
        t = ATTRS.index(attr)
        return [h for x, h in zip(self.vals, self.last) if x >> 32 == t]

    def count(self, attr: str) -> int:
        return len(self.values(attr))

    def add(self, tv: int, hour: int) -> bool:
        """Insert or refresh `tv` (tagged); True if that evicted another value of its set."""
        vals, last = self.vals, self.last
        try:
            last[vals.index(tv)] = hour
            return False
        except ValueError:
            return self.insert(tv, hour)

    def insert(self, tv: int, hour: int) -> bool:
        """Insert `tv`, known not to be held (`add` less its lookup); True if that evicted."""
        vals, last = self.vals, self.last
        t = tv >> 32
        same = [i for i, x in enumerate(vals) if x >> 32 == t]
        if len(same) >= self.CAPS[t]:
            j = min(same, key=last.__getitem__)  # the first of the least recent, as `SeenSet.add`
            vals[j] = tv
            last[j] = hour
            return True
        vals.append(tv)
        last.append(hour)
        self.tags |= 1 << t
        return False

    # Pickled in `IdentitySets`' format (`pack_sets`): snapshots and `key_baselines` rows of
    # either read the same.
    def __getstate__(self) -> bytes:
        vals: list[list[int]] = [[] for _ in ATTRS]  # per set, in one pass (`values`, `hours` each scan all)
        hours: list[list[int]] = [[] for _ in ATTRS]
        for x, h in zip(self.vals, self.last):
            t = x >> 32
            vals[t].append(x & MASK)
            hours[t].append(h)
        return pack_sets([(self.CAPS[t], vals[t], hours[t]) for t in range(len(ATTRS))])

    def __setstate__(self, state: bytes) -> None:
        self.__init__()
        for t, (_, vals, hours) in enumerate(unpack_sets(state)):
            self.vals.extend((t << 32) | (v & MASK) for v in vals)
            self.last.extend(hours.tolist())
            if len(vals):
                self.tags |= 1 << t

    @classmethod
    def from_sets(cls, sets) -> "KeyIds":
        """From an `IdentitySets` (a key's, in snapshots from before the packing)."""
        ids = cls()
        ids.__setstate__(sets.__getstate__())
        return ids


class PopIds(KeyIds):
    """A project's identity sets (`PopBaseline.ids`), packed as a key's are, each set bounded at
    four times a key's (`IdentitySets(scale=4)`, which they were until session 24: eight
    `SeenSet`s, ≈ 1.8 KB a project however few its values; ≈ 0.3 KB here). They behave as those
    did, the same values evicted. Unlike a key's, each set's entries are kept together, in
    `ATTRS` order (`ends`: where each set ends), so that a test of one set scans only its values:
    a project's sets hold up to 280, a key's 70. A project never learns addresses or SDK versions
    (models/keytheft_identity.py `pop_learn`): those two sets stay empty. Pickled as an
    `IdentitySets`, class and format, so that older versions load snapshots holding it;
    `PopBaseline` turns one back into this.

    >>> ids = PopIds()
    >>> for v in range(40): _ = ids.add(tag("n16", v), 498_000 + v)
    >>> ids.count("n16"), tag("n16", 0) in ids, tag("n16", 8) in ids  # cap 32: the 8 oldest went
    (32, False, True)
    >>> ids.merge(tag("n16", 0), 498_000), tag("n16", 0) in ids  # older than every value held: not kept
    (False, False)
    >>> ids.merge(tag("n16", 0), 498_100), tag("n16", 0) in ids, tag("n16", 8) in ids  # newer: it evicts the oldest
    (True, True, False)
    """

    __slots__ = ("ends",)
    CAPS = tuple(4 * c for c in CAPS)

    def __init__(self) -> None:
        super().__init__()
        self.ends = array("H", bytes(2 * len(ATTRS)))

    def _span(self, t: int) -> tuple[int, int]:
        ends = self.ends
        return (ends[t - 1] if t else 0), ends[t]

    def __contains__(self, tv: int) -> bool:  # per novel value of a key: `_span` inlined
        t, ends = tv >> 32, self.ends
        return tv in self.vals[ends[t - 1] if t else 0:ends[t]]

    def values(self, attr: str) -> list[int]:
        lo, hi = self._span(ATTRS.index(attr))
        return [x & MASK for x in self.vals[lo:hi]]

    def hours(self, attr: str) -> list[int]:
        lo, hi = self._span(ATTRS.index(attr))
        return self.last[lo:hi].tolist()

    def count(self, attr: str) -> int:
        lo, hi = self._span(ATTRS.index(attr))
        return hi - lo

    def add(self, tv: int, hour: int) -> bool:  # per item of a caller new this hour (`pop_learn`)
        t, ends = tv >> 32, self.ends
        try:
            i = self.vals.index(tv, ends[t - 1] if t else 0, ends[t])
        except ValueError:
            return self.insert(tv, hour)
        self.last[i] = hour
        return False

    def insert(self, tv: int, hour: int) -> bool:
        t = tv >> 32
        lo, hi = self._span(t)
        vals, last = self.vals, self.last
        if hi - lo >= self.CAPS[t]:
            seg = last[lo:hi]
            j = lo + seg.index(min(seg))  # the first of the least recent, as `SeenSet.add`
            vals[j] = tv
            last[j] = hour
            return True
        vals.insert(hi, tv)  # the end of its set
        last.insert(hi, hour)
        ends = self.ends
        for u in range(t, len(ends)):
            ends[u] += 1
        self.tags |= 1 << t
        return False

    def merge(self, tv: int, hour: int) -> bool:
        """Learn `tv` as last seen at `hour` from another worker (models/keytheft_share.py): a
        value held is re-dated if `hour` is later; a new one is kept unless its set is full of
        values seen later (an older item never evicts a newer). True if kept or re-dated."""
        t = tv >> 32
        lo, hi = self._span(t)
        try:
            i = self.vals.index(tv, lo, hi)
        except ValueError:
            if hi - lo < self.CAPS[t] or hour >= min(self.last[lo:hi]):
                self.insert(tv, hour)
                return True
            return False
        if self.last[i] < hour:
            self.last[i] = hour
            return True
        return False

    def __setstate__(self, state: bytes) -> None:
        super().__setstate__(state)  # set after set, in `ATTRS` order
        n = 0
        for t, (_, vals, _) in enumerate(unpack_sets(state)):
            n += len(vals)
            self.ends[t] = n

    def __reduce__(self):
        from keywatch.models.features import IdentitySets

        return IdentitySets, (), self.__getstate__()
