"""Per-key runtime state for key-theft detection: decayed counters, the current minute, evidence.

`KeyState` = the learned `KeyBaseline` + what is happening now: requests, spend, expensive
requests and probe errors in exponentially decayed counters (5 min, 10 min, 60 min time
constants, so a surge is visible on every event without keeping the events), the networks
active in the last 5 minutes, the current key-minute window, and `Evidence` when suspicious.

>>> st = KeyState(KeyBaseline("openai", "p"))
>>> for i in range(30): st.count(1_000 + i * 1_000, 1, 0.5, True, False)
>>> sig, why = st.behaviour(31_000, 0.1, 0.01, st.base)
>>> sig["volume"] > 0.5, why["volume"].startswith("volume")
(True, True)
>>> novelty(1.0, 1.0, False), novelty(0.0, 1.0, True), novelty(0.0, 1.0, False)
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import base64
import math
import pickle
import zlib
from array import array

from keywatch.models.features import KeyBaseline, PopBaseline
from keywatch.models.keytheft_signals import Evidence
from keywatch.models.netnovelty import country_code, h32, model_info, net_parts, ua_parts

PROBE_CODES = frozenset({
    "ValidationException", "AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "ResourceNotFoundException",
    "model_not_found", "invalid_api_key", "permission_denied", "insufficient_quota", "invalid_request_error",
    "not_found_error", "permission_error", "authentication_error", "DeploymentNotFound"})
T5, T10, T60 = 300_000.0, 600_000.0, 3_600_000.0


def novelty(key_settled: float, pop_settled: float, in_pop: bool, pop_weight: float = 1.0) -> float:
    """How unusual a value new to the key is: trust the key's own history as far as it is
    settled, and the project's for the rest (a new key used from the project's networks is fine)."""
    return key_settled * (0.35 if in_pop else 1.0) + (1.0 - key_settled) * (0.0 if in_pop else pop_settled * pop_weight)


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


def why_text(why: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v[0].format(*v[1]) for k, v in why.items()}


def offhours_signal(c60: float) -> float:
    return _ramp(c60, 1.0, 6.0)


class KeyState:
    __slots__ = ("base", "ev", "flags", "c5", "c10", "c60", "k60", "e60", "err10", "t_last", "recent16",
                 "win_min", "win_req", "win_cost", "win_exp", "win_err", "win_novel", "hst", "suppress_until",
                 "last_items")

    def __init__(self, base: KeyBaseline) -> None:
        self.base = base
        self.ev: Evidence | None = None
        self.flags = 0  # 1: network telemetry seen, 2: token counts seen
        self.c5 = self.c10 = self.c60 = self.k60 = self.e60 = self.err10 = 0.0
        self.t_last = 0
        self.recent16: dict[int, int] = {}
        self.win_min = -1
        self.win_req = self.win_exp = self.win_err = self.win_novel = 0
        self.win_cost = 0.0
        self.hst = 0.0
        self.suppress_until = 0
        self.last_items: tuple = ()

    # Pickled as one packed record (field names and value headers cost more than the values);
    # `last_items` is a cache, not stored: at worst one call re-learns what is already known.
    _D = ("c5", "c10", "c60", "k60", "e60", "err10", "win_cost", "hst")
    _I = ("flags", "t_last", "win_min", "win_req", "win_exp", "win_err", "win_novel", "suppress_until")

    def __getstate__(self):
        return (self.base, self.ev, self.recent16 or None,
                array("d", [getattr(self, f) for f in self._D]).tobytes() + array("q", [getattr(self, f) for f in self._I]).tobytes())

    def __setstate__(self, state) -> None:
        self.last_items = ()
        if len(state) == 2 and state[0] is None:  # older pickles: (None, {slot: value})
            for k, v in state[1].items():
                setattr(self, k, v)
            return
        self.base, self.ev, recent, packed = state
        self.recent16 = recent or {}
        nd = 8 * len(self._D)
        for f, v in zip(self._D, array("d", packed[:nd])):
            setattr(self, f, v)
        for f, v in zip(self._I, array("q", packed[nd:])):
            setattr(self, f, v)

    def count(self, ts: int, requests: int, cost: float, expensive: bool, probe: bool) -> None:
        dt = ts - self.t_last
        if dt > 0 and self.t_last:
            f5, f10, f60 = math.exp(-dt / T5), math.exp(-dt / T10), math.exp(-dt / T60)
            self.c5 *= f5
            self.c10 *= f10
            self.err10 *= f10
            self.c60 *= f60
            self.k60 *= f60
            self.e60 *= f60
        self.t_last = max(self.t_last, ts)
        self.c5 += requests
        self.c10 += requests
        self.c60 += requests
        self.k60 += cost
        if expensive:
            self.e60 += requests
        if probe:
            self.err10 += 1

    def touch_net(self, n16: int, ts: int) -> None:
        r = self.recent16
        r[n16] = ts
        if len(r) > 16:
            del r[min(r, key=r.__getitem__)]

    def nets_active(self, ts: int) -> int:
        return sum(1 for t in self.recent16.values() if ts - t <= 300_000)

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
        for attr, v in items:  # `SeenSet.add`, inlined for the common case: already known
            seen = getattr(ids, attr)
            try:
                seen.last[seen.vals.index(v)] = hour
            except ValueError:
                seen.add(v, hour)

    def accept_evidence(self, ts: int) -> None:
        """Analyst said benign: what was new becomes known."""
        ev = self.ev
        if ev is None:
            return
        hour = ts // 3_600_000
        ids = self.base.ids
        for v in ev.ips:
            ids.ips.add(v, hour)
        for v in ev.new16:
            ids.n16.add(v, hour)
        for c in ev.countries:
            ids.countries.add(country_code(c), hour)
        for u in ev.uas:
            ids.ua_fam.add(h32(u), hour)
        for r in ev.regions:
            ids.regions.add(h32(r), hour)
        for m in ev.models:
            ids.models.add(h32(m), hour)
        self.ev = None

    def coverage(self) -> dict[str, bool]:
        return {"network": bool(self.flags & 1), "volume": True, "content": bool(self.flags & 2)}


_IDENT: dict[tuple, tuple] = {}


def _ident_items(ip, country, ua, region, model) -> tuple:
    """(network parts, novelty checks, items to learn) for one identity; cached: few distinct."""
    net = net_parts(ip) if ip else None
    checks, items = [], []
    if net is not None:
        items += [("ips", net[0]), ("n24", net[1]), ("n16", net[2])]
    if country:
        checks.append(("countries", country_code(country), "countries", country, 1.0, 1.0))
    if ua:
        fam, ver = ua_parts(ua)
        checks.append(("ua_fam", h32(fam), "uas", fam, 0.5, 1.0))
        items.append(("ua_ver", h32(fam + "/" + ver)))
    if region:
        checks.append(("regions", h32(region), "regions", region, 0.5, 1.0))
    if model:
        mh, mfam, expensive = model_info(model)
        checks.append(("models", mh, "models", mfam, 0.5, 1.0 if expensive else 0.6))
    items += [(c[0], c[1]) for c in checks]
    out = (net, tuple(checks), tuple(items))
    if len(_IDENT) > 100_000:
        _IDENT.clear()
    _IDENT[(ip, country, ua, region, model)] = out
    return out


def pop_learn(pop: PopBaseline, items: tuple, ts: int, requests: int) -> None:
    if not pop.first_ts:
        pop.first_ts = ts
    pop.learned += requests
    hour = ts // 3_600_000
    if pop.recent_hour != hour:
        pop.recent_hour = hour
        pop.recent.clear()
    elif id(items) in pop.recent:  # this caller was learned this hour already
        return
    pop.recent.add(id(items))
    ids = pop.ids
    for attr, v in items:
        if attr != "ips" and attr != "ua_ver":
            getattr(ids, attr).add(v, hour)


def dump_state(st: KeyState) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(st, protocol=5))).decode()


def load_state(blob: str) -> KeyState:
    return pickle.loads(zlib.decompress(base64.b64decode(blob)))


def identity_novelty(st: KeyState, pop: PopBaseline, ev: Evidence | None, ts: int, ip: str | None,
              country: str | None, ua: str | None, region: str | None, model: str | None) -> tuple[float, tuple]:
    """Novelty of one call's identity; returns (strongest novelty, items to learn)."""
    k = (ip, country, ua, region, model)
    hit = _IDENT.get(k)
    if hit is None:
        hit = _ident_items(*k)
    net, checks, items = hit
    base = st.base
    ids = base.ids
    best = 0.0
    ks = ps = -1.0
    if net is not None:
        a, n24, n16 = net
        st.flags |= 1
        r = st.recent16  # `touch_net`, inlined
        r[n16] = ts
        if len(r) > 16:
            del r[min(r, key=r.__getitem__)]
        if a not in ids.ips.vals and n24 not in ids.n24.vals and n16 not in ids.n16.vals:
            ks, ps = base.settled(ts), pop.settled(ts)
            # A key never seen with network data (usage-API buckets so far) has no history of its
            # own to compare with: like a new key, it borrows its project's.
            w = novelty(ks if len(ids.n16.vals) else 0.0, ps, n16 in pop.ids.n16.vals)
            if w > 0.1:
                ev = ev or st.open_evidence(ts)
                ev.note_net(n16, a, w)
                best = w
    for attr, hv, ev_attr, label, pw, scale in checks:
        if hv not in (known := getattr(ids, attr).vals):
            if ks < 0:
                ks, ps = base.settled(ts), pop.settled(ts)
            # A new key may well use another SDK, region or model than its project: `pw`.
            w = novelty(ks if len(known) else 0.0, ps, hv in getattr(pop.ids, attr).vals, pw) * scale
            if w > 0.1:
                ev = ev or st.open_evidence(ts)
                ev.note(ev_attr, label, w)
                if attr != "models" and w > best:
                    best = w
    if checks and (country or ua):
        st.flags |= 1
    return best, items
