"""Per-key and per-population online baselines for key-theft detection, in bounded memory.

`KeyBaseline` learns, from the key's own stream: its networks (address, /24, /16), countries,
user-agent families and versions, regions and model families (bounded sets: `KeyIds`); requests
and spend per minute by hour of day × weekday/weekend (EWMA per slot, zeros included for
silent hours); the share of expensive models, error ratio and output/input token ratio; and
how many networks it uses at once. `settled()` says how much of that history to trust.
`PopBaseline` is the same identity history for a whole project: a new key borrows it.

>>> b = KeyBaseline("openai", "p")
>>> t = 1_793_577_600_000
>>> for i in range(600): b.learn_event(t + i * 60_000, 1, 0.01, False, False, 0.3)
>>> round(b.expected(t + 600 * 60_000)[0], 2) > 0, round(b.settled(t + 600 * 60_000), 2)
(True, 0.42)
"""

from __future__ import annotations

import math
from array import array

from keywatch.models.keyids import ATTRS, KeyIds, PopIds, pack_sets, unpack_sets
from keywatch.models.netnovelty import SeenSet

HOUR_MS = 3_600_000
SLOT_ALPHA = 0.35  # per-day weight of a new observation in an hour-of-week slot
# The hour-slot profile of a key that has not closed an hour yet: all zeros, one copy shared by
# every such key (≈ 0.6 KB each otherwise) and never written to. `KeyBaseline._roll`, the one
# writer, gives a key its own arrays before its first write.
_ZERO_F = array("f", bytes(4 * 48))  # requests and spend alike
_ZERO_N = array("B", bytes(48))


def slot_of(ts_ms: int) -> int:
    """0–47: hour of day, +24 on Saturday/Sunday (UTC; a key's own profile absorbs its zone)."""
    hour = ts_ms // HOUR_MS
    weekday = (hour // 24 + 3) % 7  # 1970-01-01 was a Thursday
    return int(hour % 24 + (24 if weekday >= 5 else 0))


class IdentitySets:
    """Where a key (or project) is used from and with what.

    A project's, and a key's in snapshots from before `KeyIds` (models/keyids.py, which a key's
    sets are now). Pickles as `pack_sets` packs them, as `KeyIds` does.
    """

    __slots__ = ATTRS

    def __getstate__(self):
        return pack_sets([(s.cap, s.vals, s.last) for s in (getattr(self, name) for name in self.__slots__)])

    def __setstate__(self, state) -> None:
        if not isinstance(state, bytes):  # older pickles: (None, {slot: SeenSet})
            for name, v in state[1].items():
                setattr(self, name, v)
            return
        for name, (cap, vals, hours) in zip(self.__slots__, unpack_sets(state)):
            s = SeenSet(cap, vals.typecode if vals.typecode == "I" else "L")
            s.vals.extend(vals.tolist())  # "Q" (wide) into "L": same values, another type code
            s.last.extend(hours.tolist())
            setattr(self, name, s)

    def __init__(self, scale: int = 1) -> None:
        self.ips = SeenSet(16 * scale)
        self.n24 = SeenSet(12 * scale)
        self.n16 = SeenSet(8 * scale)
        self.countries = SeenSet(6 * scale)
        self.ua_fam = SeenSet(6 * scale)
        self.ua_ver = SeenSet(8 * scale)
        self.models = SeenSet(10 * scale)
        self.regions = SeenSet(4 * scale)


class KeyBaseline:
    __slots__ = ("provider", "project", "first_ts", "last_ts", "active_min", "last_min", "ids",
                 "slot_req", "slot_cost", "slot_n", "cur_hour", "cur_req", "cur_cost", "mean_rpm",
                 "mean_cpm", "exp_share", "err_rate", "log_ratio", "conc", "learned", "qh")

    def __init__(self, provider: str, project: str | None) -> None:
        self.provider = provider
        self.project = project
        self.first_ts = self.last_ts = 0
        self.active_min = 0  # distinct minutes with learned traffic
        self.last_min = -1
        self.ids = KeyIds()  # a key's sets, packed (models/keyids.py); a project's: `IdentitySets`
        self.slot_req, self.slot_cost, self.slot_n = _ZERO_F, _ZERO_F, _ZERO_N  # shared until `_roll` writes
        self.cur_hour = -1
        self.cur_req = 0.0
        self.cur_cost = 0.0
        self.mean_rpm = 0.0
        self.mean_cpm = 0.0
        self.exp_share = 0.0
        self.err_rate = 0.0
        self.log_ratio = 0.0
        self.conc = 1.0  # usual number of /16 networks active in one 5-minute span
        self.learned = 0  # requests learned
        self.qh = (-1, False)  # quiet_hour cache: (hour, answer)

    # Pickled as one packed record (+ the identity sets): per-field names and float headers
    # would otherwise cost more than the values in a snapshot of many keys.
    _F = ("first_ts", "last_ts", "active_min", "last_min", "cur_hour", "learned")
    _D = ("cur_req", "cur_cost", "mean_rpm", "mean_cpm", "exp_share", "err_rate", "log_ratio", "conc")

    def __getstate__(self):
        head = array("q", [getattr(self, f) for f in self._F] + [self.qh[0], int(self.qh[1])])
        return (self.provider, self.project, self.ids, head.tobytes() + array("d", [getattr(self, f) for f in self._D]).tobytes(),
                self.slot_req.tobytes() + self.slot_cost.tobytes() + self.slot_n.tobytes())

    def __setstate__(self, state) -> None:
        if len(state) == 2 and state[0] is None:  # older pickles: (None, {slot: value})
            for k, v in state[1].items():
                setattr(self, k, v)
            if isinstance(self.ids, IdentitySets):
                self.ids = KeyIds.from_sets(self.ids)
            return
        self.provider, self.project, ids, packed, slots = state
        self.ids = KeyIds.from_sets(ids) if isinstance(ids, IdentitySets) else ids  # snapshots from before the packing
        nf = len(self._F) + 2
        head, d = array("q", packed[:8 * nf]), array("d", packed[8 * nf:])
        for f, v in zip(self._F, head):
            setattr(self, f, v)
        self.qh = (head[nf - 2], bool(head[nf - 1]))
        for f, v in zip(self._D, d):
            setattr(self, f, v)
        if not any(slots):  # no hour closed yet
            self.slot_req, self.slot_cost, self.slot_n = _ZERO_F, _ZERO_F, _ZERO_N
        else:
            self.slot_req, self.slot_cost, self.slot_n = array("f", slots[:192]), array("f", slots[192:384]), array("B", slots[384:])

    # --- learning ----------------------------------------------------------------------------
    def _roll(self, hour: int) -> None:
        if self.cur_hour < 0:
            self.cur_hour = hour
            return
        h = self.cur_hour
        steps = 0
        if self.slot_n is _ZERO_N and h < hour:  # the first write: the key's own arrays
            self.slot_req, self.slot_cost, self.slot_n = array("f", _ZERO_F), array("f", _ZERO_F), array("B", _ZERO_N)
        while h < hour and steps < 168:  # close the finished hour, then silent hours as zeros
            s = slot_of(h * HOUR_MS)
            x_req, x_cost = (self.cur_req / 60.0, self.cur_cost / 60.0) if h == self.cur_hour else (0.0, 0.0)
            if self.slot_n[s] == 0:
                self.slot_req[s], self.slot_cost[s] = x_req, x_cost
            else:
                self.slot_req[s] += SLOT_ALPHA * (x_req - self.slot_req[s])
                self.slot_cost[s] += SLOT_ALPHA * (x_cost - self.slot_cost[s])
            self.slot_n[s] = min(255, self.slot_n[s] + 1)
            a = 1.0 / min(168.0, 24.0 + self.active_min / 10.0)
            self.mean_rpm += a * (x_req - self.mean_rpm)
            self.mean_cpm += a * (x_cost - self.mean_cpm)
            h += 1
            steps += 1
        self.cur_hour = hour
        self.cur_req = self.cur_cost = 0.0

    def skip_to(self, ts_ms: int) -> None:
        """Protected time (an incident is open): move on without learning what happened."""
        hour = ts_ms // HOUR_MS
        if hour > self.cur_hour:
            self.cur_hour = hour
            self.cur_req = self.cur_cost = 0.0

    def learn_event(self, ts: int, requests: int, cost: float, expensive: bool, error: bool, log_ratio: float | None) -> None:
        if not self.first_ts:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)
        hour = ts // HOUR_MS
        if hour != self.cur_hour:
            self._roll(hour)
        self.cur_req += requests
        self.cur_cost += cost
        minute = ts // 60_000
        if minute != self.last_min:
            self.active_min += 1
            self.last_min = minute
        a = max(0.002, 1.0 / (self.learned + 1)) if self.learned < 500 else 0.002
        self.learned += requests
        self.exp_share += a * ((1.0 if expensive else 0.0) - self.exp_share)
        self.err_rate += a * ((1.0 if error else 0.0) - self.err_rate)
        if log_ratio is not None:
            self.log_ratio += a * (log_ratio - self.log_ratio)

    # --- reading -----------------------------------------------------------------------------
    def settled(self, now: int) -> float:
        """0 → brand new, 1 → enough history (a day of age and ~2 hours of active minutes)."""
        if not self.first_ts:
            return 0.0
        age = (now - self.first_ts) / (24 * HOUR_MS)
        return max(0.0, min(1.0, age)) * min(1.0, self.active_min / 120.0)

    def expected(self, ts: int) -> tuple[float, float]:
        """(requests, spend) per minute expected at `ts`: the hour slot's, else the key's means, at
        least a fifth of the mean (and a floor). Written for the hot path, `max(a, b)` as `b if b > a
        else a` (what `max` returns); tests/keytheft/test_key_memory.py holds the plain reading."""
        hour = ts // HOUR_MS
        s = hour % 24 + (24 if (hour // 24 + 3) % 7 >= 5 else 0)  # `slot_of`
        mean = self.mean_rpm
        if self.slot_n[s]:
            base = 0.0 if 0.0 > mean else mean
            v, c = self.slot_req[s], self.slot_cost[s]
        else:
            x = self.cur_req / 60.0
            base = x if x > mean else mean
            v, c = base, self.mean_cpm
        m = 0.2 * base
        rpm = m if m > v else v
        if 0.003 > rpm:
            rpm = 0.003
        m = 0.2 * self.mean_cpm
        cpm = m if m > c else c
        if 1e-5 > cpm:
            cpm = 1e-5
        return rpm, cpm

    def quiet_hour(self, ts: int) -> bool:
        """True when the key has clear working hours and `ts` is outside them."""
        hour = ts // HOUR_MS
        if self.qh[0] != hour:
            self.qh = (hour, self._quiet_hour(ts))
        return self.qh[1]

    def _quiet_hour(self, ts: int) -> bool:
        if min(self.slot_n) < 1 and sum(1 for n in self.slot_n[:24] if n) < 24:
            return False
        s = slot_of(ts)
        peak = max(self.slot_req) or 0.0
        if peak <= 0:
            return False
        quiet = sum(1 for v in self.slot_req[:24] if v < 0.03 * peak)
        return quiet >= 8 and self.slot_req[s] < 0.03 * peak

    def summary(self) -> dict:
        return {
            "provider": self.provider, "project": self.project, "first_ts": self.first_ts, "last_ts": self.last_ts,
            "active_minutes": self.active_min, "requests_learned": self.learned,
            "mean_requests_per_min": round(self.mean_rpm, 4), "mean_cost_per_min": round(self.mean_cpm, 6),
            "expensive_share": round(self.exp_share, 3), "error_ratio": round(self.err_rate, 4),
            "output_input_log_ratio": round(self.log_ratio, 3), "usual_concurrent_networks": round(self.conc, 2),
            "known": {"ips": self.ids.count("ips"), "nets_24": self.ids.count("n24"), "nets_16": self.ids.count("n16"),
                      "countries": self.ids.count("countries"), "ua_families": self.ids.count("ua_fam"),
                      "models": self.ids.count("models"), "regions": self.ids.count("regions")},
            "hourly_requests_per_min": [round(v, 3) for v in self.slot_req[:24]],
        }


class PopBaseline:
    """A project's identity history and per-key rate, borrowed by its new keys. Shared with other
    workers (models/keytheft_share.py): `told`, how much of `learned` they know of; `out`, the
    callers learned since they were last told (None until then; not snapshotted)."""

    __slots__ = ("first_ts", "learned", "ids", "key_rpm", "recent_hour", "recent", "told", "out")

    def __init__(self) -> None:
        self.first_ts = 0
        self.learned = 0
        self.ids = PopIds()  # eight bounded sets, packed (models/keyids.py)
        self.key_rpm = 0.0
        self.recent_hour = -1
        # The callers (item tuples) learned this hour: by value, not `id()` — a freed caller's
        # address is soon another's, which would then go unlearned until the next hour. A dict
        # used as a set: ≈ 40 bytes an entry against a set's ≈ 60 (a set grows fourfold).
        self.recent: dict[tuple, None] = {}
        self.told = 0
        self.out: dict[tuple, int] | None = None

    # `recent` is stored empty (older versions expect the fields): a caller learned again in its
    # hour changes only what was evicted from the sets since (re-inserted), and older pickles
    # hold it as `id()`s of another process's objects, which meant nothing after a load either.
    def __getstate__(self):
        st = {k: getattr(self, k) for k in self.__slots__[:-1]}
        st["recent_hour"], st["recent"] = -1, set()
        return None, st

    def __setstate__(self, state) -> None:
        self.out, self.told = None, 0  # `told`: a pickle from before sharing, which no one was told of
        for k, v in state[1].items():
            setattr(self, k, v)
        if isinstance(self.ids, IdentitySets):  # how `PopIds` pickles, and snapshots from before it
            self.ids = PopIds.from_sets(self.ids)
        self.recent_hour, self.recent = -1, {}

    def settled(self, now: int) -> float:
        if not self.first_ts:
            return 0.0
        return max(0.0, min(1.0, (now - self.first_ts) / (12 * HOUR_MS))) * min(1.0, self.learned / 300.0)


def log_ratio(inp: int, out: int) -> float | None:
    return math.log((out + 1.0) / (inp + 1.0)) if inp or out else None
