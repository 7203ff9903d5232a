"""Series rows of `CostSpikeDetector` (mixed in): creating them and routing events to them,
their `spend_forecast` rows, forgetting idle ones, and the detector's snapshot state.

A series (`(level, provider, project, key_id)` and the like) owns one row of the `SeasonalBank`
and, at project and provider level, one row of the `UnivariateBank` (`uni_row`, −1 until its
first step). Rows are freed when idle and reused; the caches keyed by row (`_routes`, `_tags`)
are dropped then, and are never pickled.

>>> _template(("project", "openai", "p1"))["project"], _template(("model", "openai", "gpt-4o"))["model"]
('p1', 'gpt-4o')
"""

from __future__ import annotations

import numpy as np

from keywatch.models.core import Context
from keywatch.models.reqrate import RequestRates
from keywatch.models.univariate_bank import UnivariateBank

LEVELS = ("key", "project", "provider", "model")


class RowMap:
    """Series row → `UnivariateBank` row (−1: none yet), an int array indexed like the series
    rows that pickles as its few set entries (only project and provider rows have one; a
    snapshot pays nothing per key).

    >>> m = RowMap(4); m[2] = 0; m.grow(40)
    >>> import pickle; back = pickle.loads(pickle.dumps(m)); len(back), back[[1, 2]].tolist()
    (40, [-1, 0])
    """

    def __init__(self, size: int = 16) -> None:
        self.a = np.full(size, -1, np.int64)

    def grow(self, size: int) -> None:
        if len(self.a) < size:
            self.a = np.concatenate([self.a, np.full(size - len(self.a), -1, np.int64)])

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, rows):
        return self.a[rows]

    def __setitem__(self, rows, value) -> None:
        self.a[rows] = value

    def tolist(self) -> list[int]:
        return self.a.tolist()

    def __getstate__(self) -> dict:
        rows = np.nonzero(self.a >= 0)[0]
        return {"size": len(self.a), "set": dict(zip(rows.tolist(), self.a[rows].tolist()))}

    def __setstate__(self, st: dict) -> None:
        self.a = np.full(st["size"], -1, np.int64)
        self.a[list(st["set"])] = list(st["set"].values())


class SeriesRows:
    """Row bookkeeping for `CostSpikeDetector` (a mixin)."""

    def _row(self, skey: tuple) -> int:
        r = self.rows.get(skey)
        if r is None:
            r = self.rows[skey] = self.bank.add()
            self.series[r] = skey
            self.rq.reset(r)
            if len(self.level) < self.bank.cap:
                self.level = np.concatenate([self.level, np.zeros(self.bank.cap - len(self.level), np.int8)])
            self.uni_row.grow(self.bank.cap)
            self.level[r] = LEVELS.index(skey[0])
            self._lvmask = None
            if skey[0] == "key":
                k = (skey[1], skey[3])  # tuples, not lists: a key has one row, and a list spares room for four
                self.key_rows[k] = tuple(self.key_rows.get(k, ())) + (r,)
        return r

    def _route(self, rk: tuple) -> tuple:
        """(series rows of this instance's levels but the model's, key row or −1, root-cause
        group) for one (provider, project, key): rows created in level order, as each event
        would (the model row after them, `process`)."""
        p, proj, key_id = rk
        out = []
        for skey in (("key", p, proj, key_id), ("project", p, proj), ("provider", p)):
            if skey[0] in self.levels:
                out.append(self.rows.get(skey) if skey in self.rows else self._row(skey))
        key_row = self.rows[("key", p, proj, key_id)] if "key" in self.levels else -1
        return tuple(out), key_row, (p, proj)

    def __getstate__(self) -> dict:
        st = dict(self.__dict__)
        st["_routes"] = st["_routes_levels"] = st["_tags"] = None
        st.pop("_lvmask", None)
        return st

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._routes = self._routes_levels = self._tags = self._lvmask = None
        self.__dict__.setdefault("rq", RequestRates())  # snapshots from before request counts
        self.__dict__.setdefault("levels", LEVELS)
        if isinstance(self.uni, dict):  # snapshots from before the bank: one scorer per row
            scorers, self.uni = self.uni, UnivariateBank()
            self.uni_row = RowMap(len(self.level))
            for r, sc in sorted(scorers.items()):
                self.uni_row[r] = self.uni.add()
                self.uni.load_scorer(int(self.uni_row[r]), sc)

    def _emit(self, t, x, exp, upper, ctx: Context, want: np.ndarray) -> None:
        """One `spend_forecast` row per wanted series with spend or an expectation."""
        minute = t * 60
        rows = np.nonzero(want & self.bank.used[: self.bank.n])[0]
        if not len(rows):
            return
        tags = self._tags
        if tags is None:
            tags = self._tags = {}
        rs = rows.tolist()
        for r in rs:
            if r not in tags:
                tags[r] = _template(self.series[r])
        # Copying a per-series template and setting the 4 changing fields is cheaper than
        # building the 9-key dict from scratch (same keys, same order).
        out = []
        for tmpl, a, e, u in zip(map(tags.__getitem__, rs), x[rows].tolist(), exp[rows].tolist(), upper[rows].tolist()):
            d = tmpl.copy()  # then set in place: cheaper than dict(tmpl, **changes), same key order
            d["minute"], d["actual_usd"], d["expected_usd"], d["upper_usd"] = minute, a, e, u
            out.append(d)
        ctx.emit_many("spend_forecast", out)

    def _expire_idle(self, t: int) -> None:
        """Bounded memory: forget series idle longer than `key_idle_expire_s`."""
        for skey, r in list(self.rows.items()):
            if t - self.bank.last_active[r] > self.idle_expire_min and r not in self.incidents:
                del self.rows[skey]
                del self.series[r]
                if skey[0] == "key":
                    k = (skey[1], skey[3])
                    rest = tuple(x for x in self.key_rows.get(k, ()) if x != r)
                    if rest:
                        self.key_rows[k] = rest
                    else:
                        self.key_rows.pop(k, None)
                self.bank.remove(r)
                if self.uni_row[r] >= 0:
                    self.uni.remove(int(self.uni_row[r]))
                    self.uni_row[r] = -1
                self._routes = self._tags = self._lvmask = None  # row numbers are reused: the row caches are stale


def _template(skey: tuple) -> dict:
    """A series' `spend_forecast` row with its labels set (minute and amounts to fill in)."""
    lvl = skey[0]
    return {"minute": 0, "level": lvl, "provider": skey[1], "project": (skey[2] or "") if lvl in ("project", "key") else "",
            "key_id": skey[3] if lvl == "key" else "", "model": skey[2] if lvl == "model" else "",
            "actual_usd": 0.0, "expected_usd": 0.0, "upper_usd": 0.0}
