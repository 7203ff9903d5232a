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
        if len(same) >= CAPS[t]:
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
        return pack_sets([(CAPS[t], vals[t], hours[t]) for t in range(len(ATTRS))])

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
