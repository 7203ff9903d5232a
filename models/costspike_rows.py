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


# A key's rows (`key_rows`) and its packed rows (`cold`, models/costspike_cold.py) are held as
# the one item most keys have (a 1-tuple costs 48 bytes a key), or a tuple of several.
def as_tuple(got) -> tuple:
    """The items of such a value (a list in older snapshots)."""
    return tuple(got) if isinstance(got, (tuple, list)) else (got,)


def single_or_tuple(items: tuple):
    """Such a value for (non-empty) `items`."""
    return items[0] if len(items) == 1 else items


class SeriesRows:
    """Row bookkeeping for `CostSpikeDetector` (a mixin)."""

    def _row(self, skey: tuple, last: int | None = None) -> int:
        """The row of series `skey`, made (or, packed, brought back: stepped through minute
        `last`, by default the last closed one) if it has none."""
        r = self.rows.get(skey)
        if r is None:
            r = self.rows[skey] = self.bank.add()
            self.series[r] = skey
            self.rq.reset(r)  # a reused row's request counts, calibration and totals are another series'
            self.cal.reset(r)
            self.proj.reset(r)
            if len(self.level) < self.bank.cap:
                self.level = np.concatenate([self.level, np.zeros(self.bank.cap - len(self.level), np.int8)])
            self.uni_row.grow(self.bank.cap)
            self.level[r] = LEVELS.index(skey[0])
            self._lvmask = None
            if skey[0] == "key":
                k = (skey[1], skey[3])
                got = self.key_rows.get(k)
                self.key_rows[k] = r if got is None else as_tuple(got) + (r,)
                if self.cold:
                    self._thaw(skey, r, self.cur_minute - 1 if last is None else last)
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
        return tuple(out), key_row, self.rc.group((p, proj))

    def __getstate__(self) -> dict:
        st = dict(self.__dict__)
        st["_routes"] = st["_routes_levels"] = st["_tags"] = None
        st.pop("_lvmask", None)
        st["cold"] = self._cold_state()
        st["key_rows"] = {k: as_tuple(v) for k, v in self.key_rows.items()}  # tuples, as before
        return st

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._routes = self._routes_levels = self._tags = self._lvmask = None
        self.__dict__.setdefault("rq", RequestRates())  # snapshots from before request counts
        self.__dict__.setdefault("levels", LEVELS)
        for name, default in (("cold", {}), ("cold_skips", []), ("cold_after_min", 60)):  # before packed rows
            self.__dict__.setdefault(name, default)
        self._cold_load(self.cold)
        self.key_rows = {k: single_or_tuple(as_tuple(v)) for k, v in self.key_rows.items()}
        if isinstance(self.uni, dict):  # snapshots from before the bank: one scorer per row
            scorers, self.uni = self.uni, UnivariateBank()
            self.uni_row = RowMap(len(self.level))
            for r, sc in sorted(scorers.items()):
                self.uni_row[r] = self.uni.add()
                self.uni.load_scorer(int(self.uni_row[r]), sc)

    def describe_key(self, key_id: str) -> dict:
        """The key's series now, packed ones read from a copy (`_packed_view`)."""
        now = int(self.cur_minute or 0)
        rows = [(skey, self.bank, r, r in self.incidents) for skey, r in self.rows.items() if skey[0] == "key" and skey[3] == key_id]
        rows += [(skey, self._packed_view(blob, now - 1), 0, False) for skey, blob in self._packed_rows(key_id)]
        out = []
        for skey, bank, r, spike_open in rows:
            exp, spread = bank.forecast(now, [r])
            out.append({"provider": skey[1], "project": skey[2], "expected_usd_per_min": round(float(exp[0]), 4),
                        "upper_usd_per_min": round(float(exp[0] + bank.k * spread[0]), 4),
                        "history_min": int(bank.age[r]), "spike_open": spike_open})
        return {"series": out} if out else {}

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
                self._free_row(skey, r)
                self._routes = self._tags = self._lvmask = None  # row numbers are reused: the row caches are stale
        if self.cold:
            self._expire_cold(t)

    def _free_row(self, skey: tuple, r: int) -> None:
        """Series `skey` gives up its row `r` (the caller drops the row caches)."""
        del self.rows[skey]
        del self.series[r]
        if skey[0] == "key":
            k = (skey[1], skey[3])
            rest = tuple(x for x in as_tuple(self.key_rows.get(k, ())) if x != r)
            if rest:
                self.key_rows[k] = single_or_tuple(rest)
            else:
                self.key_rows.pop(k, None)
        self.bank.remove(r)
        if self.uni_row[r] >= 0:
            self.uni.remove(int(self.uni_row[r]))
            self.uni_row[r] = -1


def _template(skey: tuple) -> dict:
    """A series' `spend_forecast` row with its labels set (minute and amounts to fill in)."""
    lvl = skey[0]
    return {"minute": 0, "level": lvl, "provider": skey[1], "project": (skey[2] or "") if lvl in ("project", "key") else "",
            "key_id": skey[3] if lvl == "key" else "", "model": skey[2] if lvl == "model" else "",
            "actual_usd": 0.0, "expected_usd": 0.0, "upper_usd": 0.0}
