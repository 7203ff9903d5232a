"""Key-theft evidence and fusion: signals → one risk score, a severity and readable reasons.

`Evidence` is a key's open "suspicion window": what was new (networks, countries, user
agents, regions, model families), how much traffic and spend came with it, probe errors.
It exists only while something is unusual, so quiet keys carry none of it.

Fusion is a noisy-OR over three groups: identity (who is calling: network, country, UA,
region novelty), behaviour (volume and cost surge against the key's seasonal baseline,
expensive-model shift, probe errors, concurrent networks, off-hours, new model family, the
calibrated multivariate score) and the audit kill chain. Behaviour without a change of
identity is how launches and runaway loops look, so it is capped below the alert threshold
(or at medium when it is more than volume): a stolen key shows a new caller or a kill chain.

>>> ev = Evidence(0)
>>> _ = ev.note_net(10, 1, 0.9), ev.note_net(11, 2, 0.9), ev.note("countries", "RU", 1.0)
>>> ev.novel_req = 12
>>> sig = identity_signals(ev)
>>> risk, _ = fuse(sig, {}, 0.0)
>>> round(risk, 2), severity(risk)
(0.85, 'high')
>>> fuse({}, {"volume": 1.0}, 0.0)[0] < 0.4      # a runaway loop: volume alone is not theft
True
"""

from __future__ import annotations

from keywatch.models.alerts import Severity, severity_for

IDENTITY_W = {"network": 1.0, "country": 1.0, "user_agent": 0.45, "region": 0.35,
              "probation": 0.9}  # a surge carried by networks accepted without alerts, not yet trusted
BEHAVIOUR_W = {"volume": 0.45, "cost": 0.35, "expensive": 0.45, "errors": 0.6, "concurrency": 0.5,
               "off_hours": 0.3, "model": 0.3, "hst": 0.3}
VOLUME_ONLY = ("volume", "cost")
FIRST_SIGHT = 0.42  # a clearly new network on a settled key: a medium alert at once


_NONE: frozenset = frozenset()  # an evidence set until its first value (see `Evidence`)


class Evidence:
    """What is suspicious about a key now. Its sets of new values start as one shared empty
    frozenset and become sets at their first value: most evidence is behaviour only (a busy new
    key's volume, say) and never notes one, and six empty sets cost 1.3 KB a key."""

    __slots__ = ("start_ts", "last_ts", "last_calc", "last_report", "reported", "risk", "new16", "ips",
                 "countries", "uas", "regions", "models", "w", "novel_req", "novel_cost", "req", "cost",
                 "exp_cost", "errors", "sig", "chain_reason", "ident", "n_items")

    def __init__(self, ts: int) -> None:
        self.start_ts = self.last_ts = ts
        self.last_calc = self.last_report = 0
        self.reported = 0.0
        self.risk = 0.0
        self.new16: set[int] | frozenset = _NONE
        self.ips: set[int] | frozenset = _NONE
        self.countries: set[str] | frozenset = _NONE
        self.uas: set[str] | frozenset = _NONE
        self.regions: set[str] | frozenset = _NONE
        self.models: set[str] | frozenset = _NONE
        self.w: dict[str, float] = {}  # attribute → strongest novelty weight seen
        self.novel_req = 0
        self.novel_cost = 0.0
        self.req = 0
        self.cost = 0.0
        self.exp_cost = 0.0  # expected spend over the window (baseline)
        self.errors: dict[str, int] = {}
        self.sig: dict[str, float] = {}
        self.chain_reason = ""
        self.n_items = 0  # distinct new things noted: a new one triggers a fresh assessment
        self.ident = 0.0  # risk from identity and kill chain only: what protects the baseline

    def note_net(self, n16: int, ip: int, weight: float) -> bool:
        new = n16 not in self.new16
        if new:
            self.n_items += 1
        if type(self.new16) is frozenset:  # the first network (a pickled `_NONE` is a frozenset too)
            self.new16 = set()
        if type(self.ips) is frozenset:
            self.ips = set()
        if len(self.new16) < 64:
            self.new16.add(n16)
        if len(self.ips) < 256:
            self.ips.add(ip)
        self.w["network"] = max(self.w.get("network", 0.0), weight)
        return new

    def note(self, attr: str, value: str, weight: float) -> bool:
        s = getattr(self, attr)
        new = value not in s
        if new:
            self.n_items += 1
        if new and len(s) < 32:
            if type(s) is frozenset:
                s = set()
                setattr(self, attr, s)
            s.add(value)
        key = {"countries": "country", "uas": "user_agent", "regions": "region", "models": "model"}[attr]
        self.w[key] = max(self.w.get(key, 0.0), weight)
        return new


def identity_signals(ev: Evidence) -> dict[str, float]:
    out = {}
    w = ev.w
    if ev.new16 and w.get("network", 0) > 0:
        n = len(ev.new16)
        persist = min(1.0, 0.5 + ev.novel_req / 20.0)
        out["network"] = w["network"] * (1 - 0.5 ** n) * persist
    if ev.countries and w.get("country", 0) > 0:
        out["country"] = w["country"] * (1 - 0.45 ** len(ev.countries))
    if ev.uas and w.get("user_agent", 0) > 0:
        out["user_agent"] = w["user_agent"]
    if ev.regions and w.get("region", 0) > 0:
        out["region"] = w["region"]
    return out


def noisy_or(sig: dict[str, float], weights: dict[str, float]) -> float:
    p = 1.0
    for k, v in sig.items():
        p *= 1.0 - max(0.0, min(1.0, v)) * weights.get(k, 1.0)
    return 1.0 - p


def corroborated(behaviour: dict[str, float]) -> bool:
    """Behaviour that a developer on a VPN or a new office line does not show: a real surge, a
    shift to expensive or new model families, probe errors, many networks at once."""
    b = behaviour
    return (b.get("volume", 0) >= 0.2 or b.get("cost", 0) >= 0.25 or b.get("expensive", 0) >= 0.3
            or b.get("errors", 0) >= 0.3 or b.get("concurrency", 0) > 0 or b.get("model", 0) >= 0.3)


def fuse(identity: dict[str, float], behaviour: dict[str, float], chain: float, ev: Evidence | None = None,
         blind: bool = False, exp_rpm: float = 0.0, dur_min: float = 0.0) -> tuple[float, dict[str, float]]:
    """(risk in [0, 1], the weighted signal map recorded on the alert).

    `ev` (the evidence) lets one new caller be judged as such: one new network (and at most one
    new country), same SDK family, nothing else unusual is how VPNs and new ISPs look → medium at
    most; the first sight of a clearly new network is medium at once (detected, not yet alarming).
    `exp_rpm × dur_min`: requests the key usually makes over the evidence window; when its known callers
    alone make far more (or the new caller is a small share), the surge is the key's own (a
    schedule, a launch), not the new caller's.
    `blind`: the key has no network telemetry (usage-API buckets): a shift to new, expensive
    model families with a spend surge is then the theft signal.

    >>> ev = Evidence(0); _ = ev.note_net(10, 1, 1.0), ev.note("countries", "NL", 1.0)
    >>> round(fuse(identity_signals(ev), {}, 0.0, ev)[0], 2)                         # VPN-like
    0.65
    >>> fuse(identity_signals(ev), {"expensive": 0.8, "volume": 0.5}, 0.0, ev)[0] >= 0.7
    True
    >>> fuse({}, {"model": 1.0, "expensive": 0.9, "cost": 0.8}, 0.0, None, blind=True)[0] >= 0.7
    True
    """
    return _fuse(identity, behaviour, chain, ev, blind, exp_rpm, dur_min)[:2]


def _fuse(identity: dict[str, float], behaviour: dict[str, float], chain: float, ev: Evidence | None,
          blind: bool, exp_rpm: float, dur_min: float) -> tuple[float, dict[str, float], float]:
    """`fuse` + the identity risk it starts from (`identity_risk`), for the detector's hot path."""
    i = ident_risk = identity_risk(identity, chain)
    b = noisy_or(behaviour, BEHAVIOUR_W)
    risk = 1.0 - (1.0 - i) * (1.0 - b)
    i = noisy_or(identity, IDENTITY_W)
    b = behaviour
    # A new *expensive* family (model novelty ≥ 0.9 only for those) with a real surge, no network data.
    open_blind = blind and b.get("model", 0) >= 0.9 and max(b.get("cost", 0), b.get("volume", 0), b.get("expensive", 0)) >= 0.3
    if open_blind:
        risk = max(risk, 0.75)
    elif i < 0.3 and chain < 0.5:
        rich = noisy_or({k: v for k, v in behaviour.items() if k not in VOLUME_ONLY}, BEHAVIOUR_W)
        risk = min(risk, 0.5 if rich >= 0.5 else 0.35)
    exp_req = exp_rpm * dur_min
    if ev is not None and chain < 0.3 and ev.new16:
        one_caller = len(ev.new16) <= 1 and len(ev.countries) <= 1 and "user_agent" not in identity
        if (exp_req > 0 and ev.req - ev.novel_req > 2.0 * exp_req + 5) or ev.novel_req < 0.25 * ev.req:
            b = {k: v for k, v in b.items() if k not in VOLUME_ONLY}
        strong = ev.w.get("network", 0) >= 0.9
        if one_caller and not corroborated(b):
            risk = min(risk, 0.65)
        elif strong and dur_min >= 10 and ev.novel_req >= max(10.0, 0.4 * ev.req) and ev.req - ev.novel_req >= max(
                1.0, 0.3 * exp_req) and (b.get("volume", 0) >= 0.3 or b.get("cost", 0) >= 0.3 or b.get(
                "expensive", 0) >= 0.5 or b.get("errors", 0) >= 0.5 or b.get("concurrency", 0) > 0):
            risk = max(risk, 0.72)  # a new caller beside the usual ones for 10 min, and a real surge or shift: high
        if strong:
            risk = max(risk, FIRST_SIGHT)
    signals = {**{k: round(v * IDENTITY_W[k], 3) for k, v in identity.items()},
               **{k: round(v * BEHAVIOUR_W[k], 3) for k, v in behaviour.items() if v > 0},
               **({"kill_chain": round(chain, 3)} if chain > 0 else {})}
    return risk, signals, ident_risk


def identity_risk(identity: dict[str, float], chain: float) -> float:
    """Who is calling (and the kill chain), without volume: new callers protect the baseline."""
    return 1.0 - (1.0 - noisy_or(identity, IDENTITY_W)) * (1.0 - chain)


def severity(risk: float) -> Severity:
    return severity_for(risk)


def reasons(ev: Evidence, detail: dict[str, str], signals: dict[str, float]) -> list[str]:
    """Readable evidence, strongest first."""
    out: list[tuple[float, str]] = []
    if ev.new16 or ev.countries:
        n = ev.novel_req
        text = (f"{n} request{'s' if n != 1 else ''}" if n else "calls") + f" from {len(ev.ips)} new IP{'s' if len(ev.ips) != 1 else ''}"
        if ev.new16:
            text += f" in {len(ev.new16)} new network{'s' if len(ev.new16) != 1 else ''}"
        if ev.countries:
            cs = sorted(ev.countries)
            text += f" and {len(cs)} new countr{'ies' if len(cs) != 1 else 'y'} ({', '.join(cs[:6])})"
        out.append((signals.get("network", 0) + signals.get("country", 0) + 1.0, text))
    if ev.uas:
        out.append((signals.get("user_agent", 0), "new user agent " + ", ".join(sorted(ev.uas)[:3])))
    if ev.regions:
        out.append((signals.get("region", 0), "new region " + ", ".join(sorted(ev.regions)[:3])))
    if ev.models and signals.get("model", 0) > 0:
        out.append((signals.get("model", 0), "new model famil" + ("ies " if len(ev.models) > 1 else "y ") + ", ".join(sorted(ev.models)[:4])))
    if ev.errors:
        codes = ", ".join(k for k, _ in sorted(ev.errors.items(), key=lambda kv: -kv[1])[:3])
        out.append((signals.get("errors", 0), f"{sum(ev.errors.values())} failed calls ({codes})"))
    if ev.chain_reason:
        out.append((signals.get("kill_chain", 0) + 0.5, ev.chain_reason))
    for name, text in detail.items():
        if signals.get(name, 0) > 0.05:
            out.append((signals[name], text))
    out.sort(key=lambda x: -x[0])
    return [t for _, t in out][:8]
