"""Caller identity against a key's history: how new is this network, country, SDK, region, model?

Each call's identity is reduced once (cached: a stream has few distinct callers) to its network
parts, the novelty checks to run and the items to learn. A value new to the key is weighed by
how settled the key's own history is, and for the rest by its project's (`novelty`): a new key
used from its project's networks is fine, a settled key used from a network nobody in the
project uses is not. What is new is noted on the key's `Evidence` (quarantined, not learned).

>>> novelty(1.0, 1.0, False), novelty(0.0, 1.0, True), novelty(0.0, 1.0, False)
(1.0, 0.0, 1.0)
>>> from keywatch.models.features import KeyBaseline, PopBaseline
>>> from keywatch.models.keyids import attr_of
>>> from keywatch.models.keytheft_state import KeyState
>>> st, pop = KeyState(KeyBaseline("openai", "p")), PopBaseline()
>>> best, items = identity_novelty(st, pop, None, 1_000, "34.1.2.3", "US", "openai-python/1.50.0", None, "gpt-4o")
>>> best, st.ev is None, [attr_of(t) for t in items][:3]  # a brand-new key: nothing to compare with yet
(0.0, True, ['ips', 'n24', 'n16'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keywatch.models.features import PopBaseline
from keywatch.models.keyids import ATTRS, BIT, TAG, tag
from keywatch.models.keytheft_nets import touch16
from keywatch.models.keytheft_signals import Evidence
from keywatch.models.netnovelty import country_code, h32, model_info, net_parts, ua_parts

if TYPE_CHECKING:
    from keywatch.models.keytheft_state import KeyState


def novelty(key_settled: float, pop_settled: float, in_pop: bool, pop_weight: float = 1.0) -> float:
    """How unusual a value new to the key is: trust the key's own history as far as it is
    settled, and the project's for the rest (a new key used from the project's networks is fine)."""
    return key_settled * (0.35 if in_pop else 1.0) + (1.0 - key_settled) * (0.0 if in_pop else pop_settled * pop_weight)


_IDENT: dict[tuple, tuple] = {}
# Bounds of the caches here: past one, its table starts again (only the time it saves is lost).
IDENT_MAX, TAIL_MAX, NETS_MAX = 100_000, 20_000, 100_000
_N16 = BIT["n16"]
_NOT_LEARNT = (ATTRS.index("ips"), ATTRS.index("ua_ver"))  # sets a project does not learn (`pop_learn`)
# The part of an identity that does not depend on the address — (checks, items to learn but the
# network's, expensive model?) by (country, user agent, region, model) — is built once and
# shared by every identity that has it: most callers differ from each other only in address,
# and a cache entry then holds little more than its network parts (≈ 0.45 KB instead of 1 KB).
_TAIL: dict[tuple, tuple] = {}
_NETS: dict[tuple, tuple] = {}  # (/24, /16) → their items: (tagged /24, tagged /16)


def _tail(country, ua, region, model) -> tuple:
    # A check: (set, value, tagged value, the set's bit in `KeyIds.tags`, evidence field, label,
    # weight for a value the project knows, scale). Items to learn are tagged values (`KeyIds`).
    checks, items = [], []
    if country:
        checks.append(_check("countries", country_code(country), "countries", country, 1.0, 1.0))
    if ua:
        fam, ver = ua_parts(ua)
        checks.append(_check("ua_fam", h32(fam), "uas", fam, 0.5, 1.0))
        items.append(tag("ua_ver", h32(fam + "/" + ver)))
    if region:
        checks.append(_check("regions", h32(region), "regions", region, 0.5, 1.0))
    if model:
        mh, mfam, expensive = model_info(model)
        checks.append(_check("models", mh, "models", mfam, 0.5, 1.0 if expensive else 0.6))
    items += [c[2] for c in checks]
    out = (tuple(checks), tuple(items), model is not None and model_info(model)[2])
    if len(_TAIL) > TAIL_MAX:
        _TAIL.clear()
    _TAIL[(country, ua, region, model)] = out
    return out


def _check(attr: str, v: int, ev_attr: str, label: str, pw: float, scale: float) -> tuple:
    return attr, v, TAG[attr] | v, BIT[attr], ev_attr, label, pw, scale


def _ident_items(ip, country, ua, region, model) -> tuple:
    """(network parts, novelty checks, items to learn, sets the network-telemetry flag?,
    expensive model?) for one identity; cached: few distinct.

    >>> from keywatch.models.keyids import attr_of
    >>> a = _ident_items("34.1.2.3", "US", "openai-python/1.50.0", None, "gpt-4o")
    >>> b = _ident_items("34.9.9.9", "US", "openai-python/1.50.0", None, "gpt-4o")
    >>> c = _ident_items("34.1.2.9", "US", "openai-python/1.50.0", None, "gpt-4o")
    >>> a[2][1] is c[2][1], a[2][2] is c[2][2], a[2] is c[2]  # one /24: its items shared, callers not
    (True, True, False)
    >>> a[1] is b[1], a[2] is b[2], a[2][3:] == b[2][3:], [attr_of(t) for t in a[2]]  # checks shared, items own
    (True, False, True, ['ips', 'n24', 'n16', 'ua_ver', 'countries', 'ua_fam', 'models'])
    """
    net = net_parts(ip) if ip else None
    checks, rest, expensive = _TAIL.get((country, ua, region, model)) or _tail(country, ua, region, model)
    # A caller with an address gets its own `items` tuple, its network's items first (callers
    # are told apart by that tuple's identity); one without shares the tail's: it is the same
    # caller as every other of that tail. Its /24 and /16 items are shared by every address of
    # the /24: keys keep this hour's callers' tuples (`KeyState.fresh`), 0.13 instead of 0.36 KB each.
    if net is not None:
        nets = _NETS.get(net[1:])  # (/24, /16): an IPv6 /48, folded, may equal an IPv4 /24
        if nets is None:
            if len(_NETS) > NETS_MAX:
                _NETS.clear()
            nets = _NETS[net[1:]] = (tag("n24", net[1]), tag("n16", net[2]))
        items = (tag("ips", net[0]),) + nets + rest
    else:
        items = rest
    out = (net, checks, items, net is not None or bool(checks and (country or ua)), expensive)
    if len(_IDENT) > IDENT_MAX:
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
    elif items in pop.recent:  # this caller was learned this hour already
        return
    pop.recent[items] = None
    out = pop.out
    if out is not None:  # shared with other workers: they learn this caller at the next collect
        out[items] = hour
    add = pop.ids.add
    for t in items:
        if t >> 32 not in _NOT_LEARNT:
            add(t, hour)



def identity_novelty(st: KeyState, pop: PopBaseline, ev: Evidence | None, ts: int, ip: str | None,
                     country: str | None, ua: str | None, region: str | None, model: str | None,
                     hit: tuple | None = None) -> tuple[float, tuple]:
    """Novelty of one call's identity (`hit`: its `_ident_items`, if looked up already);
    returns (strongest novelty, items to learn)."""
    if hit is None:
        k = (ip, country, ua, region, model)
        hit = _IDENT.get(k)
        if hit is None:
            hit = _ident_items(*k)
    net, checks, items = hit[:3]
    base = st.base
    ids = base.ids
    known = ids.vals  # the key's values of every set, tagged (`KeyIds`)
    best = 0.0
    ks = ps = -1.0
    if net is not None:
        a, n24, n16 = net
        st.flags |= 1
        r = st.recent16  # `touch_net`, inlined, and `touch16`'s usual case
        st.recent16 = (n16, ts) if len(r) == 2 and r[0] == n16 else touch16(r, n16, ts)
        if items[0] not in known and items[1] not in known and items[2] not in known:  # address, /24, /16
            ks, ps = base.settled(ts), pop.settled(ts)
            # A key never seen with network data (usage-API buckets so far) has no history of its
            # own to compare with: like a new key, it borrows its project's.
            w = novelty(ks if ids.tags & _N16 else 0.0, ps, items[2] in pop.ids)  # items[2]: the /16, tagged
            if w > 0.1:
                ev = ev or st.open_evidence(ts)
                ev.note_net(n16, a, w)
                best = w
    for attr, hv, tv, bit, ev_attr, label, pw, scale in checks:
        if tv not in known:
            if ks < 0:
                ks, ps = base.settled(ts), pop.settled(ts)
            # A new key may well use another SDK, region or model than its project: `pw`.
            w = novelty(ks if ids.tags & bit else 0.0, ps, tv in pop.ids, pw) * scale
            if w > 0.1:
                ev = ev or st.open_evidence(ts)
                ev.note(ev_attr, label, w)
                if attr != "models" and w > best:
                    best = w
    if checks and (country or ua):
        st.flags |= 1
    return best, items
