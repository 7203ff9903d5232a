"""Per-key runtime state for key-theft detection: decayed counters, the current minute, evidence.

`KeyState` = the learned `KeyBaseline` + what is happening now: requests, spend, expensive
requests and probe errors in exponentially decayed counters (5 min, 10 min, 60 min time
constants, so a surge is visible on every event without keeping the events), the networks
active in the last 5 minutes, the current key-minute window, `Evidence` when suspicious, and
the networks on probation (`Probation`: accepted from evidence, still low-trust). Identity
novelty lives in `keytheft_identity`, the probation rules in `keytheft_probation`.

>>> st = KeyState(KeyBaseline("openai", "p"))
>>> for i in range(30): st.count(1_000 + i * 1_000, 1, 0.5, True, False)
>>> sig, why = st.behaviour(31_000, 0.1, 0.01, st.base)
>>> sig["volume"] > 0.5, why["volume"].startswith("volume")
(True, True)
"""

from __future__ import annotations

import base64
import math
import pickle
import zlib
from array import array

from keywatch.models.features import KeyBaseline
from keywatch.models.keyids import tag
from keywatch.models.keytheft_nets import flat16, touch16
from keywatch.models.keytheft_probation import Probation
from keywatch.models.keytheft_signals import Evidence
from keywatch.models.netnovelty import country_code, h32

PROBE_CODES = frozenset({
    "ValidationException", "AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "ResourceNotFoundException",
    "model_not_found", "invalid_api_key", "permission_denied", "insufficient_quota", "invalid_request_error",
    "not_found_error", "permission_error", "authentication_error", "DeploymentNotFound"})
T5, T10, T60 = 300_000.0, 600_000.0, 3_600_000.0
_T5, _T10, _T60 = int(T5), int(T10), int(T60)  # the same time constants (ms), exact as ints


def _ramp(x: float, lo: float, hi: float) -> float:
    return 0.0 if x <= lo else (1.0 if x >= hi else (x - lo) / (hi - lo))


def volume_signal(c5: float, c60: float, exp_rpm: float) -> tuple[float, float]:
    """Surge of the 5- and 60-minute decayed request counts over the seasonal expectation."""
    e5, e60 = exp_rpm * 5.0, exp_rpm * 60.0
    if c5 < 2.0 * e5 and c60 < 2.0 * e60:  # the common case: nothing to see
        return 0.0, max(c5 / e5, c60 / e60)
    r5, r60 = c5 / e5, c60 / e60
    s5 = _ramp(math.log2(r5), 1.0, 4.0) * _ramp(c5 - e5, 0.0, 10.0) if r5 > 0 else 0.0
    s60 = _ramp(math.log2(r60), 1.0, 4.0) * _ramp(c60 - e60, 0.0, 10.0) if r60 > 0 else 0.0
    return max(s5, s60), max(r5, r60)


def surge(c5: float, c60: float, exp_rpm: float) -> float:
    """`volume_signal(c5, c60, exp_rpm)[0]` with the same arithmetic, for the hot paths: a ratio
    ≤ 2 has log2 ≤ 1, where the first ramp (and so the product) is 0 without computing it."""
    e5, e60 = exp_rpm * 5.0, exp_rpm * 60.0
    if c5 < 2.0 * e5 and c60 < 2.0 * e60:
        return 0.0
    s5 = s60 = 0.0
    r = c5 / e5
    if r > 2.0:
        x, d = math.log2(r), c5 - e5
        s5 = (0.0 if x <= 1.0 else (1.0 if x >= 4.0 else (x - 1.0) / 3.0)) * (0.0 if d <= 0.0 else (1.0 if d >= 10.0 else d / 10.0))
    r = c60 / e60
    if r > 2.0:
        x, d = math.log2(r), c60 - e60
        s60 = (0.0 if x <= 1.0 else (1.0 if x >= 4.0 else (x - 1.0) / 3.0)) * (0.0 if d <= 0.0 else (1.0 if d >= 10.0 else d / 10.0))
    return s60 if s60 > s5 else s5  # `max(s5, s60)`


def why_text(why: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v[0].format(*v[1]) for k, v in why.items()}


def offhours_signal(c60: float) -> float:
    return _ramp(c60, 1.0, 6.0)


class KeyState:
    __slots__ = ("base", "ev", "flags", "c5", "c10", "c60", "k60", "e60", "err10", "t_last", "recent16",
                 "win_min", "win_req", "win_cost", "win_exp", "win_err", "win_novel", "hst", "suppress_until",
                 "last_items", "prob", "fresh")

    def __init__(self, base: KeyBaseline) -> None:
        self.base = base
        self.ev: Evidence | None = None
        self.flags = 0  # 1: network telemetry seen, 2: token counts seen
        self.c5 = self.c10 = self.c60 = self.k60 = self.e60 = self.err10 = 0.0
        self.t_last = 0
        self.recent16: tuple = ()  # networks (/16) of the last calls and when: `touch16`
        self.win_min = -1
        self.win_req = self.win_exp = self.win_err = self.win_novel = 0
        self.win_cost = 0.0
        self.hst = 0.0
        self.suppress_until = 0
        self.last_items: tuple = ()
        self.prob: Probation | None = None  # networks accepted from evidence, still low-trust
        self.fresh: tuple | None = None  # (hour, identities whose items are all known and seen that hour)

    # Pickled as one packed record (field names and value headers cost more than the values);
    # `last_items` and `fresh` are caches, not stored: at worst one call re-learns what is already known.
    _D = ("c5", "c10", "c60", "k60", "e60", "err10", "win_cost", "hst")
    _I = ("flags", "t_last", "win_min", "win_req", "win_exp", "win_err", "win_novel", "suppress_until")

    def __getstate__(self):
        r = self.recent16  # stored as the dict it was (older code loads it)
        return (self.base, self.ev, dict(zip(r[::2], r[1::2])) or None,
                array("d", [getattr(self, f) for f in self._D]).tobytes() + array("q", [getattr(self, f) for f in self._I]).tobytes(),
                self.prob)

    def __setstate__(self, state) -> None:
        self.last_items = ()
        self.fresh = None
        self.prob = None
        if len(state) == 2 and state[0] is None:  # older pickles: (None, {slot: value})
            for k, v in state[1].items():
                setattr(self, k, v)
            self.recent16 = flat16(getattr(self, "recent16", None))
            return
        self.base, self.ev, recent, packed = state[:4]
        self.prob = state[4] if len(state) > 4 else None  # snapshots from before probation have none
        self.recent16 = flat16(recent)
        nd = 8 * len(self._D)
        for f, v in zip(self._D, array("d", packed[:nd])):
            setattr(self, f, v)
        for f, v in zip(self._I, array("q", packed[nd:])):
            setattr(self, f, v)

    def count(self, ts: int, requests: int, cost: float, expensive: bool, probe: bool) -> None:
        """Decay the counters to `ts`, then add one usage record (the per-event hot path: the
        decay and the add share one expression, and zero counters skip their multiply)."""
        t_last = self.t_last
        dt = ts - t_last
        if dt > 0 and t_last:
            exp = math.exp  # int / int below: as exact as dividing by the float constants, cheaper
            f10, f60 = exp(-dt / _T10), exp(-dt / _T60)
            self.c5 = self.c5 * exp(-dt / _T5) + requests
            self.c10 = self.c10 * f10 + requests
            if self.err10:  # 0 stays 0
                self.err10 *= f10
            self.c60 = self.c60 * f60 + requests
            self.k60 = self.k60 * f60 + cost
            if self.e60:
                self.e60 *= f60
            self.t_last = ts
        else:
            if ts > t_last:
                self.t_last = ts
            self.c5 += requests
            self.c10 += requests
            self.c60 += requests
            self.k60 += cost
        if expensive:
            self.e60 += requests
        if probe:
            self.err10 += 1

    def touch_net(self, n16: int, ts: int) -> None:
        self.recent16 = touch16(self.recent16, n16, ts)

    def nets_active(self, ts: int) -> int:
        """Networks seen in the 5 minutes up to `ts` (`ts - t <= 300_000` for integer times);
        usually all of them, and one."""
        r = self.recent16
        if not r:
            return 0
        lim = ts - 300_000
        seen = r[1::2]
        if min(seen) >= lim:
            return len(seen)
        return len([t for t in seen if t >= lim])

    def open_evidence(self, ts: int) -> Evidence:
        self.ev = Evidence(ts)
        return self.ev

    def reset_window(self, minute: int) -> None:
        self.win_min = minute
        self.win_req = self.win_exp = self.win_err = self.win_novel = 0
        self.win_cost = 0.0

    def behaviour(self, ts: int, exp_rpm: float, exp_cpm: float, base: KeyBaseline, text: bool = True) -> tuple[dict, dict]:
        """(signals, reasons). `text=False`: reasons as (template, args), formatted by `why_text`
        only when a finding is reported (most assessments report nothing)."""
        sig: dict[str, float] = {}
        why: dict = {}
        vol, ratio = volume_signal(self.c5, self.c60, exp_rpm)
        if vol > 0:
            sig["volume"] = vol
            why["volume"] = ("volume {:.1f}× the key's usual for this hour", (ratio,))
        e_cost = exp_cpm * 60.0
        if self.k60 > 2 * e_cost and self.k60 - e_cost > 0.5:
            sig["cost"] = _ramp(math.log2(self.k60 / e_cost), 1.0, 4.0) * _ramp(self.k60 - e_cost, 0.5, 5.0)
            why["cost"] = ("spend ${:.2f} in the last hour vs ${:.2f} usual", (self.k60, e_cost))
        if self.c60 > 0:
            share = min(1.0, self.e60 / self.c60)
            s = _ramp(share - base.exp_share, 0.3, 0.8) * _ramp(self.e60, 1.0, 8.0)
            if s > 0:
                sig["expensive"] = s
                why["expensive"] = ("expensive models {:.0%} of requests (usual {:.0%})", (share, base.exp_share))
        if self.err10 >= 2:
            s = _ramp(self.err10, 2.0, 12.0) * (1.0 if self.err10 > 0.3 * self.c10 else 0.4)
            sig["errors"] = s
        n = self.nets_active(ts)
        if n >= 3:
            s = _ramp(n - base.conc, 1.0, 5.0)
            if s > 0:
                sig["concurrency"] = s
                why["concurrency"] = ("used from {} networks at once (usual {:.0f})", (n, base.conc))
        if self.ev is not None and self.ev.models:
            sig["model"] = self.ev.w.get("model", 0.0)
        if self.hst > 0:
            sig["hst"] = self.hst
            why["hst"] = ("unusual minute for this key (multivariate score {:.2f})", (self.hst,))
        return sig, (why_text(why) if text else why)

    def learn_items(self, items: tuple, ts: int) -> None:
        hour = ts // 3_600_000
        last = self.last_items
        if last and last[0] == hour and last[1] is items:  # same caller as last time, this hour
            return
        self.last_items = (hour, items)
        ids = self.base.ids
        vals, seen = ids.vals, ids.last
        fresh = self.fresh
        for t in items:  # `KeyIds.add`, inlined for the common case: already known
            try:
                seen[vals.index(t)] = hour
            except ValueError:
                if ids.insert(t, hour):  # a full set evicted: maybe what another identity relied on
                    fresh = None
        # Now every item is known with last-seen `hour`. Until the next eviction from the sets
        # (an insertion into a full one) or another hour, learning this identity again changes nothing but
        # `last_items`, and none of its items is new to the key: `fresh` lists such identities.
        if fresh is None or fresh[0] != hour:
            self.fresh = (hour, (items,))
        elif items not in fresh[1]:
            self.fresh = (hour, fresh[1] + (items,)) if len(fresh[1]) < 8 else (hour, (items,))

    def accept_evidence(self, ts: int, probation: bool = True) -> None:
        """What was new becomes known. `probation`: accepted for lack of alerts, not vetted by an
        analyst: the networks are rate-limited and stay low-trust (`Probation`) until they earn it."""
        ev = self.ev
        if ev is None:
            return
        fresh = self.fresh
        self.fresh = None  # insertions below may evict known values
        hour = ts // 3_600_000
        ids = self.base.ids
        nets = ev.new16
        if probation and nets:
            prob = self.prob if self.prob is not None else Probation()
            nets = prob.admit(sorted(nets), ts, ev.novel_req, ev.req)
            if len(prob):
                self.prob = prob
        for v in ev.ips:  # a refused network's addresses stay new too (IPv4: address >> 16 is its /16)
            if nets is ev.new16 or (v >> 16) in nets:
                ids.add(tag("ips", v), hour)
        for v in nets:
            ids.add(tag("n16", v), hour)
        for c in ev.countries:
            ids.add(tag("countries", country_code(c)), hour)
        for u in ev.uas:
            ids.add(tag("ua_fam", h32(u)), hour)
        for r in ev.regions:
            ids.add(tag("regions", h32(r)), hour)
        for m in ev.models:
            ids.add(tag("models", h32(m)), hour)
        self.ev = None
        if fresh is not None:  # callers known before and untouched by the insertions stay fresh
            self.fresh = still_fresh(ids, fresh)

    def coverage(self) -> dict[str, bool]:
        return {"network": bool(self.flags & 1), "volume": True, "content": bool(self.flags & 2)}


def still_fresh(ids, fresh: tuple) -> tuple | None:
    """`fresh` (hour, identities) without the identities that an item evicted or re-dated since:
    the rest still meet `KeyState.fresh`'s terms (every item known, last seen that hour)."""
    hour = fresh[0]
    vals, last = ids.vals, ids.last
    keep = []
    for items in fresh[1]:
        for t in items:
            if t not in vals or last[vals.index(t)] != hour:
                break
        else:
            keep.append(items)
    return (hour, tuple(keep)) if keep else None


def dump_state(st: KeyState) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(st, protocol=5))).decode()


def load_state(blob: str) -> KeyState:
    return pickle.loads(zlib.decompress(base64.b64decode(blob)))
