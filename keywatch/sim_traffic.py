"""Simulator traffic: a key's everyday usage, attackers' usage, and audit (control-plane) calls.

Everything is vectorised per source: Poisson counts per minute, then per-request columns drawn
in one numpy call each. Benign changes (SDK or model upgrade, a new CI runner, growth, a
launch) are expressed as edits on the key's profile (`KeyProfile.extra`) applied here.

>>> import numpy as np
>>> from keywatch.sim_keys import make_projects, make_key
>>> rng = np.random.default_rng(1)
>>> key = make_key(rng, 0, make_projects(rng, 1)[0], provider="openai", bucket_share=0.0)
>>> b = key_traffic(rng, key, 1793577600000, 1440, "s0k0")
>>> len(b) > 0 and b.rows(0, 1)[0]["kind"] == "usage"
True
"""

from __future__ import annotations

import numpy as np

from keywatch.sim_keys import Block, KeyProfile, model_price, shape, ua_string

MIN_MS = 60_000


def _cost(models: list[str], mi: np.ndarray, tin: np.ndarray, tout: np.ndarray) -> np.ndarray:
    pin = np.array([model_price(m)[0] for m in models])[mi]
    pout = np.array([model_price(m)[1] for m in models])[mi]
    return np.round((tin * pin + tout * pout) / 1e6, 6)


def key_traffic(rng: np.random.Generator, key: KeyProfile, start_ms: int, n_min: int, tag: str) -> Block:
    """The key's own (legitimate) traffic over `n_min` minutes from `start_ms`."""
    minutes = np.arange(n_min)
    rate = key.peak_rpm * shape(key.pattern, minutes, start_ms, key.project.tz)
    mult = key.extra.get("rate_mult")
    if mult is not None:
        rate = rate * mult
    rate[: key.start_min] = 0.0
    ex = key.extra
    if "end_min" in ex:  # the key is retired (rotated out) from this minute on
        rate[ex["end_min"]:] = 0.0
    counts = rng.poisson(rate)
    models = list(key.models)
    if "model_switch" in ex:  # model upgrade within the family from minute m on
        models.append(ex["model_switch"][2])
    ips = list(key.ips) + ([ex["new_ip"][1]] if "new_ip" in ex else [])
    uas = [key.ua] + ([ua_string(key.provider, *ex["ua_switch"][1:])] if "ua_switch" in ex else [])
    const = {"kind": "usage", "provider": key.provider, "key_id": key.key_id, "project": key.project.name,
             "principal": key.principal, "region": key.region}
    if key.bucketed:
        # A usage API: one bucket per active minute, no caller network or user agent.
        m = np.nonzero(counts)[0]
        n = counts[m]
        mi = rng.choice(len(key.models), size=len(m), p=key.model_p)
        if "model_switch" in ex:
            mi = np.where((m >= ex["model_switch"][0]) & (np.array(key.models)[mi] == ex["model_switch"][1]), len(models) - 1, mi)
        tin = np.round(n * key.in_tok * rng.lognormal(0, 0.3, len(m))).astype(np.int64)
        tout = np.round(n * key.out_tok * rng.lognormal(0, 0.3, len(m))).astype(np.int64)
        return Block(start_ms + m * MIN_MS, {**const, "source": "provider_usage"},
                     {"model": mi, "requests": n, "input_tokens": tin, "output_tokens": tout,
                      "cost_usd": _cost(models, mi, tin, tout)}, {"model": models}, tag)
    m = np.repeat(minutes, counts)
    n = len(m)
    ts = start_ms + m * MIN_MS + rng.integers(0, MIN_MS, n)
    mi = rng.choice(len(key.models), size=n, p=key.model_p)
    if "model_switch" in ex:
        sw, old, _new = ex["model_switch"]
        mi = np.where((m >= sw) & (np.array(key.models)[mi] == old), len(models) - 1, mi)
    ip = rng.integers(0, len(key.ips), n)
    if "new_ip" in ex:  # a new CI runner in a known network takes a share of the traffic
        sw, _ip, share = ex["new_ip"]
        ip = np.where((m >= sw) & (rng.random(n) < share), len(ips) - 1, ip)
    country = None
    if "dynamic" in ex or "fleet" in ex:
        ip, ips = _many_ips(rng, ex, m, n, n_min)
    if "vpn" in ex:  # a developer's share of the traffic goes through a VPN exit for a while
        v0, v1, vip, vcc, share = ex["vpn"]
        on = (m >= v0) & (m < v1) & (rng.random(n) < share)
        ips = ips + [vip]
        ip = np.where(on, len(ips) - 1, ip)
        country = on.astype(np.int64)
    ua = np.zeros(n, dtype=np.int64)
    if "ua_switch" in ex:
        ua = np.where(m >= ex["ua_switch"][0], 1, 0)
    tin = np.round(key.in_tok * rng.lognormal(0, 0.5, n)).astype(np.int64)
    tout = np.round(key.out_tok * rng.lognormal(0, 0.5, n)).astype(np.int64)
    err = rng.random(n) < key.err_rate
    status = np.where(err, rng.choice([429, 500, 400], size=n, p=[0.6, 0.3, 0.1]), 200)
    code = np.where(err, np.where(status == 429, 1, np.where(status == 500, 2, 3)), 0)
    tout = np.where(err, 0, tout)
    cols = {"model": mi, "input_tokens": tin, "output_tokens": tout, "cost_usd": _cost(models, mi, tin, tout),
            "source_ip": ip, "user_agent": ua, "status": status, "error_code": code}
    vocab = {"model": models, "source_ip": ips, "user_agent": uas,
             "error_code": [None, "rate_limit_exceeded", "server_error", "ValidationException"]}
    const = {**const, "source": "gateway", "country": key.project.country, "operation": "chat"}
    if country is not None:
        const.pop("country")
        cols["country"] = country
        vocab["country"] = [key.project.country, ex["vpn"][3]]
    return Block(ts, const, cols, vocab, tag)


def _many_ips(rng: np.random.Generator, ex: dict, m: np.ndarray, n: int, n_min: int) -> tuple[np.ndarray, list[str]]:
    """Residential/mobile users (a new address per ISP every few hours) or a CI fleet (any host of a /16)."""
    if "fleet" in ex:  # CI runners: a fresh host of the fleet's /16 for every job
        a, b = ex["fleet"]
        ips = [f"{a}.{b}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 250))}" for _ in range(400)]
        return rng.integers(0, len(ips), n), ips
    nets, weights, period = ex["dynamic"]
    n_per = n_min // period + 1
    ips = [f"{a}.{b}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 250))}" for _ in range(n_per) for a, b in nets]
    net = rng.choice(len(nets), size=n, p=np.asarray(weights) / np.sum(weights))
    return (m // period) * len(nets) + net, ips


def attacker_traffic(rng: np.random.Generator, key: KeyProfile, t0: int, t1: int, tag: str, *, rpm: float,
                     ips: list[str], countries: list[str], uas: list[str], models: list[str],
                     fail_share: float = 0.0, in_tok: float = 1500.0, out_tok: float = 700.0,
                     ramp_s: float = 0.0) -> Block:
    """Requests made with the stolen key between t0 and t1 (ms) at about `rpm` per minute."""
    dur_min = max(1.0, (t1 - t0) / MIN_MS)
    n = max(1, int(rng.poisson(rpm * dur_min)))
    ts = np.sort(t0 + (rng.random(n) * (t1 - t0)).astype(np.int64))
    if ramp_s > 0:  # attackers often start slow (testing the key), then open the tap
        ts = np.sort(t0 + ((ts - t0) / (t1 - t0)) ** 1.5 * (t1 - t0)).astype(np.int64)
    ts[0] = t0
    ip = rng.integers(0, len(ips), n)
    country_of_ip = np.array([i % len(countries) for i in range(len(ips))])
    mi = rng.integers(0, len(models), n)
    tin = np.round(in_tok * rng.lognormal(0, 0.5, n)).astype(np.int64)
    tout = np.round(out_tok * rng.lognormal(0, 0.5, n)).astype(np.int64)
    fail = rng.random(n) < fail_share
    status = np.where(fail, rng.choice([400, 403, 404], size=n), 200)
    code = np.where(fail, np.where(status == 403, 1, np.where(status == 404, 2, 3)), 0)
    tout = np.where(fail, 0, tout)
    cost = np.where(fail, 0.0, _cost(models, mi, tin, tout))
    return Block(ts, {"kind": "usage", "provider": key.provider, "key_id": key.key_id, "project": key.project.name,
                      "principal": key.principal, "source": "gateway", "operation": "chat", "region": key.extra.get("attack_region", key.region)},
                 {"model": mi, "input_tokens": tin, "output_tokens": tout, "cost_usd": cost, "source_ip": ip,
                  "country": country_of_ip[ip], "user_agent": rng.integers(0, len(uas), n), "status": status,
                  "error_code": code},
                 {"model": models, "source_ip": ips, "country": countries, "user_agent": uas,
                  "error_code": [None, "AccessDeniedException", "model_not_found", "ValidationException"]}, tag)


def audit_calls(key: KeyProfile, calls: list[tuple[int, str]], tag: str, *, ip: str, country: str | None, ua: str,
                error_code: str | None = None, with_key: bool = True) -> Block:
    """Control-plane calls `(ts_ms, action)` made with the key (CloudTrail-like; `with_key=False`:
    the record names only the principal, as many audit trails do)."""
    ts = np.array([t for t, _ in calls], dtype=np.int64)
    actions = [a for _, a in calls]
    return Block(ts, {"kind": "audit", "provider": key.provider, "key_id": key.key_id if with_key else None,
                      "project": key.project.name,
                      "principal": key.principal, "source": "cloudtrail", "source_ip": ip, "country": country,
                      "user_agent": ua, "region": key.region, "error_code": error_code},
                 {"action": np.arange(len(calls))}, {"action": actions}, tag)


def attacker_ips(rng: np.random.Generator, octets: tuple[int, ...], n: int, n_nets: int | None = None) -> list[str]:
    """`n` addresses spread over `n_nets` distinct /16 networks from the given first octets."""
    n_nets = n_nets or n
    nets = [(int(rng.choice(octets)), int(rng.integers(0, 256))) for _ in range(n_nets)]
    return [f"{a}.{b}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 250))}" for a, b in (nets[i % n_nets] for i in range(n))]


def bucket_traffic(rng: np.random.Generator, key: KeyProfile, t0_min: int, t1_min: int, start_ms: int, tag: str, *,
                   rpm: float, models: list[str], in_tok: float = 1500.0, out_tok: float = 700.0) -> Block:
    """Extra usage-API buckets (no caller network, no user agent) for minutes t0…t1 of `models`."""
    m = np.arange(t0_min, t1_min)
    counts = rng.poisson(rpm, len(m))
    counts[0] = max(1, counts[0])
    keep = counts > 0
    m, n = m[keep], counts[keep]
    mi = rng.integers(0, len(models), len(m))
    tin = np.round(n * in_tok * rng.lognormal(0, 0.3, len(m))).astype(np.int64)
    tout = np.round(n * out_tok * rng.lognormal(0, 0.3, len(m))).astype(np.int64)
    return Block(start_ms + m * MIN_MS, {"kind": "usage", "provider": key.provider, "key_id": key.key_id,
                                         "project": key.project.name, "source": "provider_usage"},
                 {"model": mi, "requests": n, "input_tokens": tin, "output_tokens": tout,
                  "cost_usd": _cost(models, mi, tin, tout)}, {"model": models}, tag)
