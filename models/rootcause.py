"""Root cause of a spend spike: which keys, models and regions explain the excess.

Per (provider, project) the detector keeps the last two hours of spend per minute broken down
by (key, model, region), and a slowly decaying baseline share of each such contributor. The
excess of contributor c over a spike window is `actual_c − share_c × expected_total`; the
ranking is by excess $, with its share of the total excess in %.

A minute takes spend in dicts; once the next one starts it is packed (`packed`,
models/rootcause_minute.py): its groups' ids, then their contributors (one shared tuple each) and
spend in flat sequences, ≈ 16 bytes per contributor instead of ≈ 125, and 8 per group instead of
≈ 200. A key active every minute has 120 such minutes: with its shares, ≈ 2.7 instead of 16.7 KB
(`keywatch bench`'s busy keys, keywatch/bench_memory.py), ≈ 4 instead of 30 KB if it is its
project's only key.

>>> rc = RootCause()
>>> for m in range(100):
...     rc.add(m, ("openai", "p"), ("k1", "gpt-4o", "us"), 1.0); rc.add(m, ("openai", "p"), ("k2", "gpt-4o", "eu"), 1.0)
...     rc.learn(m, ("openai", "p"))
>>> rc.add(100, ("openai", "p"), ("k2", "o1", "eu"), 30.0)
>>> out = rc.explain(("openai", "p"), 100, 100, expected_total=2.0)
>>> out["keys"][0]["value"], out["models"][0]["value"], out["regions"][0]["value"]
('k2', 'o1', 'eu')
"""

from __future__ import annotations

from collections import defaultdict

from keywatch.models.rootcause_minute import PackedMinute

KEEP_MINUTES = 120
CONTRIBUTORS_MAX = 500_000  # the shared contributor tuples (`_cons`): past it the table starts again
SHARE_DECAY = 0.998  # per minute: a baseline share remembers ~8 hours
_DECAY: dict[int, float] = {}  # minutes since a share's last update → SHARE_DECAY ** minutes
_DECAY1 = SHARE_DECAY ** 1


class RootCause:
    def __init__(self) -> None:
        self.minutes: dict[int, dict[tuple, dict[tuple, float]]] = {}  # minutes taking spend
        self.packed: dict[int, PackedMinute] = {}  # earlier minutes, packed
        self._groups: list[tuple] = []  # group id → group (ids of `packed`'s groups)
        self._gid: dict[tuple, int] = {}  # group → its id
        self._cons: dict[tuple, tuple] = {}  # contributor → its one shared tuple (a cache)
        self._epoch: int | None = None  # `_cons` is rebuilt when minute // KEEP_MINUTES changes
        # group → contributor → share: complex(value, minute last learnt), one 32-byte object where
        # a [value, minute] list and its float took 96 (a float64 holds a minute exactly)
        self.shares: dict[tuple, dict[tuple, complex]] = {}
        self.newest: int | None = None  # the latest minute started (older than it − KEEP_MINUTES: dropped)
        # Spend per contributor of a spike window so far, (group, first, key) → (last, spend): a
        # spike open for an hour is explained every minute, and adding its newest minute to the
        # running sums gives the same numbers as summing the whole window again (same order).
        # Holds because a minute gets no spend once a later one has started (the detector adds
        # to the current minute only).
        self._acc: dict[tuple, tuple[int, dict]] = {}
        self._ordered = True  # `minutes` keys ascend in insertion order (see `minute`)

    def __getstate__(self) -> dict:
        st = {k: v for k, v in self.__dict__.items() if k not in ("_acc", "_cons", "_epoch", "_gid", "packed")}  # caches
        # Packed minutes as plain tuples, under a name of their own: session 23's code reads
        # `packed` as dicts of groups, so a rollback loads an empty one (explanations then lack
        # up to two hours of past minutes) rather than failing on a class it does not have.
        st["packed"] = {}
        st["packed_flat"] = [(m, *p.__getstate__()) for m, p in self.packed.items()]
        return st

    def __setstate__(self, st: dict) -> None:
        st = dict(st)
        flat = st.pop("packed_flat", None)
        self.__dict__.update(st)
        self._acc, self._cons, self._epoch = {}, {}, None
        self.__dict__.setdefault("_groups", [])
        self._gid = {g: i for i, g in enumerate(self._groups)}
        if flat is not None:
            self.packed = {m: PackedMinute(*rest) for m, *rest in flat}
        else:  # older pickles: per packed minute a dict of groups (or none: every minute in dicts)
            self.packed = {m: PackedMinute.pack({self._gid_of(g): dict(zip(*v)) for g, v in p.items()})
                           for m, p in st.get("packed", {}).items()}
        if "newest" not in st:  # older pickles
            self.newest = max(self.minutes, default=None)
        for sh in self.shares.values():  # older pickles: [value, minute] lists
            if sh and next(iter(sh.values())).__class__ is list:
                for c, v in sh.items():
                    sh[c] = complex(v[0], v[1])
        if "_ordered" not in st:  # older pickles (a dict pickles in insertion order)
            keys = list(self.minutes)
            self._ordered = keys == sorted(keys)

    def minute(self, minute: int) -> dict[tuple, dict[tuple, float]]:
        """The spend of `minute` (group → contributor → $), started (and the oldest minutes
        dropped) if new: what `add` adds into, for callers that add many events at once."""
        minutes = self.minutes
        per = minutes.get(minute)
        if per is None:
            back = self.packed.pop(minute, None)
            if back is not None:  # spend for a packed minute (not the detector's way): dicts again
                self._ordered = False
                per = minutes[minute] = {self._groups[i]: d for i, d in back.groups().items()}
                return per
            per = minutes[minute] = {}
            cut = minute - KEEP_MINUTES
            packed = self.packed
            if self.newest is None or minute > self.newest:
                if self.newest in minutes:  # complete: later minutes take all new spend
                    self._pack(self.newest)
                self.newest = minute
                while packed:  # packed in ascending order: the ones to drop are a prefix
                    old = next(iter(packed))
                    if old >= cut:
                        break
                    del packed[old]
                if self._ordered:
                    # Keys ascend in insertion order (the detector's minutes only ever advance):
                    # the ones to drop are a prefix, no need to look at all ~120 of them.
                    while True:
                        old = next(iter(minutes))
                        if old >= cut:
                            return per
                        del minutes[old]
            else:
                self._ordered = False
            for old in [m for m in minutes if m < cut]:
                del minutes[old]
            for old in [m for m in packed if m < cut]:
                del packed[old]
        return per

    def _pack(self, minute: int) -> None:
        cons = self._cons
        epoch = minute // KEEP_MINUTES
        if epoch != self._epoch or len(cons) > CONTRIBUTORS_MAX:
            # Every KEEP_MINUTES the table starts again from the minutes still kept: the tuples
            # of contributors gone quiet go with their minutes (0.4 KB a key, at 100k keys that
            # each called a few times, most of them long idle).
            self._epoch = epoch
            cons = self._cons = {c: c for p in self.packed.values() for c in p.cons}
        gid = self._gid_of
        self.packed[minute] = PackedMinute.pack({gid(g): spend for g, spend in self.minutes.pop(minute).items()}, cons)

    def group(self, group: tuple) -> tuple:
        """The one tuple kept for `group`: callers hold it instead of an equal tuple each (a key's
        route to its project's spend, models/costspike_rows.py: 56 bytes a key)."""
        return self._groups[self._gid_of(group)]

    def _gid_of(self, group: tuple) -> int:
        """`group`'s id, given at its first packed minute. Groups are kept, as their shares are."""
        i = self._gid.get(group)
        if i is None:
            i = self._gid[group] = len(self._groups)
            self._groups.append(group)
        return i

    def _spend(self, minute: int, group: tuple):
        """(contributor, $) pairs of `group` in `minute`, in the order they first had spend."""
        per = self.minutes.get(minute)
        if per is not None:
            g = per.get(group)
            return g.items() if g else ()
        p = self.packed.get(minute)
        gid = self._gid.get(group)
        g = p.get(gid) if p is not None and gid is not None else None
        return zip(*g) if g is not None else ()

    def add(self, minute: int, group: tuple, contributor: tuple, usd: float) -> None:
        per = self.minutes.get(minute)
        if per is None:
            per = self.minute(minute)
        g = per.get(group)
        if g is None:
            g = per[group] = {}
        g[contributor] = g.get(contributor, 0.0) + usd

    def learn(self, minute: int, group: tuple) -> None:
        """Fold one (normal) minute of a group into its baseline shares."""
        self.learn_many(minute, [group])

    def learn_many(self, minute: int, groups: list[tuple]) -> None:
        """Fold `minute` of each group into its baseline shares (the detector's per-minute call):
        the minute's spend looked up once, the decay factor of each gap computed once."""
        per = self.minutes.get(minute)
        if not per:
            if minute not in self.packed:
                return
            per = None  # packed (not the detector's way: it folds a minute at its end)
        keep, shares = 1 - SHARE_DECAY, self.shares
        # A share is `value + minute·j`: adding the minute's imaginary part to the new value makes
        # it (a float plus a complex is exact in its real part: +0.0), cheaper than `complex()`.
        mj, last = minute * 1j, float(minute - 1)
        for group in groups:
            if per is not None:
                spend = per.get(group)
                if not spend:
                    continue
                pairs = spend.items()
            else:
                gid = self._gid.get(group)
                p = self.packed[minute].get(gid) if gid is not None else None
                if p is None:
                    continue
                pairs = zip(*p)
            sh = shares.get(group)
            if sh is None:
                sh = shares[group] = {}
            for c, usd in pairs:
                cur = sh.get(c)
                if cur is None:
                    sh[c] = usd * keep + mj
                    continue
                if cur.imag == last:  # learnt the minute before: the usual case
                    decay = _DECAY1
                else:
                    dm = minute - int(cur.imag)
                    decay = _DECAY.get(dm)
                    if decay is None:
                        decay = _DECAY[dm] = SHARE_DECAY ** dm
                sh[c] = cur.real * decay + usd * keep + mj
            if len(sh) > 5000:
                self._forget(sh)

    @staticmethod
    def _forget(sh: dict) -> None:
        """Bounded: forget the smallest contributors."""
        for c, _ in sorted(sh.items(), key=lambda kv: kv[1].real)[:2500]:
            del sh[c]

    def _actual(self, group: tuple, first: int, last: int, key: str | None) -> dict:
        """Spend per contributor (of `key` only, if given) over minutes first..last."""
        ck = (group, first, key)
        done, actual = self._acc.get(ck, (None, None))
        # The running sums hold only if no minute of the window was dropped since (else: anew).
        if done is None or done > last or (self.newest is not None and first < self.newest - KEEP_MINUTES):
            done, actual = first - 1, defaultdict(float)
        for m in range(done + 1, last + 1):
            for c, usd in self._spend(m, group):
                if key is None or c[0] == key:
                    actual[c] += usd
        if len(self._acc) > 64:  # windows not explained in the last minute are over
            self._acc = {k: v for k, v in self._acc.items() if v[0] >= last - 1}
        self._acc[ck] = (last, actual)
        return actual

    def explain(self, group: tuple, first: int, last: int, expected_total: float, key: str | None = None, top: int = 5) -> dict:
        actual = self._actual(group, first, last, key)
        sh = {c: v.real * SHARE_DECAY ** (last - int(v.imag)) for c, v in self.shares.get(group, {}).items()
              if key is None or c[0] == key}
        total_sh = sum(sh.values())
        contrib = dict.fromkeys(set(actual) | set(sh), 0.0)
        for c in contrib:
            base = expected_total * sh.get(c, 0.0) / total_sh if total_sh > 0 else 0.0
            contrib[c] = actual.get(c, 0.0) - base
        total_excess = sum(v for v in contrib.values() if v > 0) or 1.0
        out = {}
        for i, dim in enumerate(("keys", "models", "regions")):
            agg: dict[str, float] = defaultdict(float)
            for c, v in contrib.items():
                agg[c[i] or "?"] += v
            ranked = sorted(((k, v) for k, v in agg.items() if v > 0), key=lambda kv: -kv[1])[:top]
            out[dim] = [{"value": k, "excess_usd": round(v, 4), "pct": round(100 * v / total_excess, 1)} for k, v in ranked]
        return out


def summary(rc: dict) -> list[str]:
    """One reason line per dimension: `top key k2 +$28.00 (93% of excess)`."""
    lines = []
    for dim, label in (("keys", "key"), ("models", "model"), ("regions", "region")):
        if rc.get(dim):
            t = rc[dim][0]
            lines.append(f"top {label} {t['value']} +${t['excess_usd']:.2f} ({t['pct']:.0f}% of excess)")
    return lines
