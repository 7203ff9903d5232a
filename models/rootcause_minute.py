"""One past minute of root-cause spend, packed flat (`RootCause.packed`'s values).

A minute's spend is per group (a provider's project), per contributor (key, model, region).
Packed as a dict of groups, each with its own tuple of contributors and array of $, a minute
cost ≈ 200 bytes per group on top of 16 per contributor: nothing where a project has hundreds
of keys, but a project with one busy key paid ≈ 26 KB for its two hours of minutes (`keywatch
bench`'s busy keys one per project). Here a minute is four flat sequences whatever its groups:
their ids (`RootCause._gid`) in ascending order, where each group's contributors end, and the
contributors and their spend, group after group, each group's in the order they first had
spend: 8 bytes per group, 16 per contributor.

>>> m = PackedMinute.pack({7: {("k1", "gpt-4o", None): 1.5}, 2: {("k2", "o1", "eu"): 2.0, ("k3", "o1", "eu"): 0.5}})
>>> list(m.gids), list(m.ends), m.get(2), m.get(7), m.get(5)
([2, 7], [2, 3], ((('k2', 'o1', 'eu'), ('k3', 'o1', 'eu')), array('d', [2.0, 0.5])), ((('k1', 'gpt-4o', None),), array('d', [1.5])), None)
>>> m.groups() == {2: {("k2", "o1", "eu"): 2.0, ("k3", "o1", "eu"): 0.5}, 7: {("k1", "gpt-4o", None): 1.5}}
True
"""

from __future__ import annotations

from array import array
from bisect import bisect_left


class PackedMinute:
    """A minute's spend by group id and contributor, in four flat sequences (see the module)."""

    __slots__ = ("gids", "ends", "cons", "spend")

    def __init__(self, gids: array, ends: array, cons: tuple, spend: array) -> None:
        self.gids, self.ends, self.cons, self.spend = gids, ends, cons, spend

    @classmethod
    def pack(cls, by_gid: dict[int, dict[tuple, float]], share: dict | None = None) -> "PackedMinute":
        """From {group id: {contributor: $}}; `share` (`RootCause._cons`) holds the one tuple to
        keep per contributor (a contributor new to it is added as itself)."""
        gids, ends, cons, spend = array("I"), array("I"), [], array("d")
        for gid in sorted(by_gid):
            per = by_gid[gid]
            gids.append(gid)
            cons.extend(per if share is None else [share.setdefault(c, c) for c in per])
            spend.extend(per.values())
            ends.append(len(cons))
        return cls(gids, ends, tuple(cons), spend)

    def get(self, gid: int) -> tuple[tuple, array] | None:
        """(contributors, their $) of group `gid`, None if it had no spend this minute."""
        gids = self.gids
        i = bisect_left(gids, gid)
        if i == len(gids) or gids[i] != gid:
            return None
        lo, hi = self.ends[i - 1] if i else 0, self.ends[i]
        return self.cons[lo:hi], self.spend[lo:hi]

    def groups(self) -> dict[int, dict[tuple, float]]:
        """{group id: {contributor: $}} again (spend for a past minute: not the detector's way)."""
        out, lo = {}, 0
        for gid, hi in zip(self.gids, self.ends):
            out[gid] = dict(zip(self.cons[lo:hi], self.spend[lo:hi]))
            lo = hi
        return out

    def __getstate__(self) -> tuple:
        return self.gids, self.ends, self.cons, self.spend

    def __setstate__(self, st: tuple) -> None:
        self.gids, self.ends, self.cons, self.spend = st
