"""The dedupe window: the last N kept event ids, held as 8-byte digests.

A set and a queue of the ids themselves cost ≈ 100 B per id with short ids and ≈ 135 B with a
provider's (`chatcmpl-…`, 37 characters): the string, its set slot, its queue slot. That is
20–26 MB for the default 200k ids (`KEYWATCH_DEDUPE_WINDOW_EVENTS`), once per partition core,
so a worker's fixed memory grew with its partitions. Here an id is its 64-bit digest (xxHash's
XXH3 with the window's own random seed; stable across processes, so a snapshot keeps the
window), 20–40 B per id in all (4.1–7.7 MB for 200k, by how many came since the last sort):

* `ring` — the last `capacity` kept digests, slot `i` for the i-th kept (mod `capacity`):
  what a snapshot stores (1.6 MB for 200k);
* `sorted`, `slot` — the ring's digests as of its last rebuild, sorted, and the ring slot of
  each: one binary search per batch finds a digest, and the ring still holding it at that slot
  says it has not been forgotten since;
* `bits` — a bit per value of the digests' top bits as of that rebuild (256 KB for 200k): most
  new ids find theirs clear and skip the binary search, whose array is not in cache;
* `added` — the digests kept since that rebuild (a set: the ring is sorted again once it holds
  `capacity // 4`: ≈ 3 ms for 200k, once every 50k ids kept).

A digest is in the ring at most once (only ids not in the window are kept), so that is exact.
Two distinct ids share a digest with probability 2⁻⁶⁴: at 200k ids in the window, once in
≈ 10¹⁴ events an id would be taken for a repeat. The seed is random per window (and kept in its
snapshot), so ids cannot be made to collide without knowing it.

Decisions are those of a set of the last `capacity` kept ids, checked against the window as it
was when the batch began plus the batch's own earlier ids, then trimmed to `capacity` after it
(what models/core.py did with the ids themselves; tests/core/test_dedupe.py compares the two).

>>> w = DedupeWindow()
>>> w.keep(["a", "b", "a"], capacity=2), w.keep(["b", "c"], capacity=2), w.keep(["a", "b"], capacity=2)
([True, True, False], [False, True], [True, False])
>>> len(w), w.ids_in_order().shape
(2, (2,))
"""

from __future__ import annotations

import os

import numpy as np
from xxhash import xxh3_64_digest

_EMPTY = np.zeros(0, np.uint64)
_NO_SLOTS = np.zeros(0, np.int32)
_NO_BITS = np.zeros(0, np.uint8)


def digests(ids: list[str], seed: int) -> np.ndarray:
    """Each id's 64-bit XXH3 digest (≈ 50 ns an id; BLAKE2s took ≈ 300)."""
    return np.frombuffer(b"".join([xxh3_64_digest(i.encode("utf-8", "surrogatepass"), seed) for i in ids]), np.uint64)


class DedupeWindow:
    def __init__(self) -> None:
        self.seed = int.from_bytes(os.urandom(8), "little")
        self.cap = 0  # the capacity: the ring grows to it, then wraps
        self.ring = _EMPTY
        self.n = 0  # digests ever kept: the next goes to slot n % capacity
        self.sorted, self.slot = _EMPTY, _NO_SLOTS
        self.bits, self.shift = _NO_BITS, np.uint64(63)
        self.added: set[int] = set()

    def __len__(self) -> int:
        return min(self.n, self.cap)

    def ids_in_order(self) -> np.ndarray:
        """The window's digests, oldest first."""
        cap = self.cap
        if self.n <= cap:
            return self.ring[:self.n].copy()
        i = self.n % cap
        return np.concatenate([self.ring[i:], self.ring[:i]])

    def keep(self, ids: list[str], capacity: int) -> list[bool]:
        """For each id, in order: True if it is new (and now in the window), False for a repeat —
        of an id in the window, or of an earlier one of `ids`."""
        if capacity != self.cap:
            self.load(self.ids_in_order(), capacity)
        d = digests(ids, self.seed)
        dl = d.tolist()
        srt = self.sorted
        was = None
        if len(srt):
            # The bit map first (in cache, unlike the sorted digests): most new ids stop there.
            top = d >> self.shift
            maybe = np.flatnonzero((self.bits[top >> 3] >> (top & 7).astype(np.uint8)) & 1)
            if len(maybe):
                dm = d[maybe]
                at = np.searchsorted(srt, dm)
                at[at == len(srt)] = 0
                hit = (srt[at] == dm) & (self.ring[self.slot[at]] == dm)  # found, and not overwritten since
                if hit.any():
                    was = np.zeros(len(d), bool)
                    was[maybe[hit]] = True
        added = self.added
        if was is None and added.isdisjoint(dl) and len(set(dl)) == len(dl):
            out, new, kept = [True] * len(dl), d, dl  # the common case: all new
        else:
            out, batch, kept = [], set(), []
            wl = was.tolist() if was is not None else [False] * len(dl)
            for x, w in zip(dl, wl):
                dup = w or x in added or x in batch
                out.append(not dup)
                if not dup:
                    batch.add(x)
                    kept.append(x)
            new = np.array(kept, np.uint64)
        self._push(new, kept)
        return out

    def _push(self, new: np.ndarray, new_list: list[int]) -> None:
        k, cap, n = len(new), self.cap, self.n
        if not k or not cap:
            return
        if k >= cap:  # as many new ids as the window holds: only the last `capacity` stay
            self.ring, self.n = new[-cap:].copy(), cap
            self._rebuild()
            return
        if n + k > len(self.ring) and len(self.ring) < cap:  # not full yet: grow, doubling
            grown = np.zeros(min(cap, max(256, 2 * len(self.ring), n + k)), np.uint64)
            grown[:n] = self.ring[:n]
            self.ring = grown
        start = n % cap
        first = min(k, cap - start)  # slots start … start+first−1, then 0 … k−first−1
        self.ring[start:start + first] = new[:first]
        if k > first:
            self.ring[:k - first] = new[first:]
        self.n = n + k
        # `added` holds under `capacity` digests at a batch's start, all still in the ring.
        self.added.update(new_list)
        if len(self.added) >= min(cap, max(64, cap // 4)):
            self._rebuild()

    def _rebuild(self) -> None:
        held = self.ring[:len(self)]
        slot = np.argsort(held)
        self.slot = slot.astype(np.int32) if len(held) < 2**31 else slot
        self.sorted = held[slot]
        # A bit per value of a digest's top bits, 8 to 16 bits per digest the window holds
        # (256 KB for 200k): ≈ 9 % of new ids find their bit set and go on to the binary search.
        width = max(6, len(held).bit_length() + 3)
        self.shift = np.uint64(64 - width)
        on = np.zeros(1 << width, bool)
        on[held >> self.shift] = True
        self.bits = np.packbits(on, bitorder="little")
        self.added = set()

    def load(self, ids: np.ndarray, capacity: int) -> None:
        """The window holding the digests `ids` (oldest first), or their last `capacity`."""
        self.cap = capacity
        self.ring = np.array(ids[-capacity:] if capacity else _EMPTY, np.uint64)
        self.n = len(self.ring)
        self._rebuild()

    def load_ids(self, ids: list[str], capacity: int) -> None:
        """The window holding `ids` (oldest first): a snapshot from before digests."""
        self.load(digests(ids, self.seed), capacity)

    def __getstate__(self) -> dict:
        return {"ids": self.ids_in_order(), "capacity": self.cap, "seed": self.seed}

    def __setstate__(self, st: dict) -> None:
        self.__init__()
        self.seed = st["seed"]
        self.load(st["ids"], st["capacity"])
