"""Simulator incidents: attack styles, a runaway loop, and benign changes, each with ground truth.

`inject(kind, rng, key, ...)` edits the key (benign changes) and/or returns extra blocks
(attacker or loop traffic, audit calls) plus the ground-truth record.
"""

from __future__ import annotations

import numpy as np

from keywatch.sim_keys import ATTACK_COUNTRIES, ATTACK_OCTETS, ATTACK_UAS, PROVIDERS, Block, KeyProfile, shape
from keywatch.sim_traffic import MIN_MS, attacker_ips, attacker_traffic, audit_calls, bucket_traffic

ATTACKS = ("loud_burst", "reseller_proxy", "low_and_slow", "probe_only", "logging_tamper", "new_key_abuse")
BENIGN = ("sdk_upgrade", "model_upgrade", "gradual_growth", "new_ci_runner", "launch", "benign_new_key")
COST = ("runaway_loop",)
# Hard variants (see sim_hard.py): attackers blend in (legitimate countries and cloud networks, the
# victim's SDK), keys without network telemetry, and benign users that look unusual.
HARD_ATTACKS = ("hard_burst", "hard_reseller", "hard_low_and_slow", "hard_probe", "hard_tamper", "hard_new_key",
                "hard_bucket_abuse")
HARD_BENIGN = ("residential_users", "ci_fleet", "batch_job", "key_rotation", "dev_vpn")
ALL_ATTACKS = ATTACKS + HARD_ATTACKS
BASIC_TYPES = ATTACKS + COST + BENIGN
ALL_TYPES = BASIC_TYPES + HARD_ATTACKS + HARD_BENIGN
RECON = ("ListFoundationModels", "GetFoundationModelAvailability", "PutUseCaseForModelAccess",
         "CreateFoundationModelAgreement")


def mean_rpm(key: KeyProfile, start_ms: int) -> float:
    return float(key.peak_rpm * shape(key.pattern, np.arange(0, 7 * 1440, 15), start_ms, key.project.tz).mean())


def _countries(rng: np.random.Generator, n: int) -> list[str]:
    return [str(c) for c in rng.choice(ATTACK_COUNTRIES, size=n, replace=False)]


def inject(kind: str, rng: np.random.Generator, key: KeyProfile, start_ms: int, n_min: int, t0_min: int,
           dur_min: int | None, tag: str) -> tuple[list[Block], dict]:
    """Apply incident `kind` to `key` from minute `t0_min`; return extra blocks and ground truth."""
    t0 = start_ms + t0_min * MIN_MS + int(rng.integers(0, MIN_MS))
    end_ms = start_ms + n_min * MIN_MS
    prov = key.provider
    expensive = PROVIDERS[prov][2]
    base = mean_rpm(key, start_ms)
    blocks: list[Block] = []
    first: tuple[str, int] | None = None

    def dur(lo: int, hi: int) -> int:
        return int(dur_min if dur_min is not None else rng.integers(lo, hi + 1))

    def attack(**kw) -> Block:
        nonlocal first
        b = attacker_traffic(rng, key, kw.pop("t0", t0), kw.pop("t1"), f"{tag}a", **kw)
        blocks.append(b)
        cand = (b.tag + "0", int(b.ts[0]))
        if first is None or cand[1] < first[1]:
            first = cand
        return b

    def audit(calls: list[tuple[int, str]], ip: str, country: str | None, ua: str, sub: str, err: str | None = None,
              with_key: bool = True) -> None:
        nonlocal first
        b = audit_calls(key, calls, f"{tag}{sub}", ip=ip, country=country, ua=ua, error_code=err, with_key=with_key)
        blocks.append(b)
        if first is None or int(b.ts[0]) < first[1]:
            first = (b.tag + "0", int(b.ts[0]))

    d = None
    if kind == "loud_burst":
        d = dur(30, 120)
        n_ip = int(rng.integers(8, 40))
        ips = attacker_ips(rng, ATTACK_OCTETS, n_ip)
        attack(t1=t0 + d * MIN_MS, rpm=float(rng.uniform(15, 60)), ips=ips, countries=_countries(rng, int(rng.integers(3, 8))),
               uas=[str(u) for u in rng.choice(ATTACK_UAS, size=int(rng.integers(1, 4)), replace=False)],
               models=expensive, fail_share=0.05, ramp_s=60.0)
    elif kind == "reseller_proxy":
        d = dur(360, 1440)
        ips = attacker_ips(rng, ATTACK_OCTETS, int(rng.integers(1, 4)), 1)
        ua = str(rng.choice(["litellm/1.48.2", "OpenAI/Python 1.12.0", *ATTACK_UAS]))
        attack(t1=t0 + d * MIN_MS, rpm=float(np.clip(4 * base * rng.uniform(1, 2), 1.0, 20)), ips=ips,
               countries=[str(rng.choice(["NL", "SG", "US", "DE", "RO", "HK"]))], uas=[ua],
               models=expensive + key.models, in_tok=2500, out_tok=900)
    elif kind == "low_and_slow":
        d = dur(360, 720)
        ips = attacker_ips(rng, ATTACK_OCTETS, 1)
        country = key.project.country if rng.random() < 0.5 else _countries(rng, 1)[0]
        ua = key.ua if rng.random() < 0.5 else str(rng.choice(ATTACK_UAS))
        attack(t1=t0 + d * MIN_MS, rpm=max(0.05, base * float(rng.uniform(1.0, 2.0))), ips=ips, countries=[country],
               uas=[ua], models=list(key.models), in_tok=key.in_tok, out_tok=key.out_tok)
    elif kind == "probe_only":
        d = dur(10, 30)
        ips = attacker_ips(rng, ATTACK_OCTETS, int(rng.integers(1, 4)))
        countries = _countries(rng, len(ips))
        ua = str(rng.choice(ATTACK_UAS))
        if prov == "bedrock":
            calls = [(t0 + i * int(rng.integers(2_000, 20_000)), str(a)) for i, a in enumerate(
                rng.choice(RECON, size=int(rng.integers(2, 6))))]
            audit(calls, ips[0], countries[0], ua, "r", err=None)
        attack(t0=t0 + 5_000, t1=t0 + d * MIN_MS, rpm=float(rng.uniform(1.5, 5)), ips=ips, countries=countries,
               uas=[ua], models=expensive + ["gpt-4-32k", "claude-2.1", "anthropic.claude-v2"], fail_share=0.92)
    elif kind == "logging_tamper":
        d = dur(30, 90)
        ips = attacker_ips(rng, ATTACK_OCTETS, int(rng.integers(1, 6)))
        countries = _countries(rng, int(rng.integers(1, 4)))
        ua = str(rng.choice(ATTACK_UAS))
        calls = []
        if rng.random() < 0.4:
            calls.append((t0, "ListFoundationModels"))
        calls += [(t0 + 10_000, "GetModelInvocationLoggingConfiguration"),
                  (t0 + int(rng.integers(30_000, 90_000)), "DeleteModelInvocationLoggingConfiguration")]
        audit(calls, ips[0], countries[0], ua, "t")
        go = t0 + int(rng.integers(120_000, 300_000))
        attack(t0=go, t1=go + d * MIN_MS, rpm=float(rng.uniform(10, 40)), ips=ips, countries=countries, uas=[ua],
               models=expensive)
    elif kind == "new_key_abuse":
        d = dur(30, 180)
        key.start_min = n_min  # no legitimate traffic: the key is used by the attacker only
        ips = attacker_ips(rng, ATTACK_OCTETS, int(rng.integers(3, 16)))
        attack(t1=t0 + d * MIN_MS, rpm=float(rng.uniform(5, 40)), ips=ips, countries=_countries(rng, int(rng.integers(2, 6))),
               uas=[str(rng.choice(ATTACK_UAS))], models=expensive, ramp_s=60.0)
    elif kind == "runaway_loop":
        d = dur(20, 40)
        if key.bucketed:  # the loop shows up in the same usage-API buckets, without network data
            b = bucket_traffic(rng, key, t0_min, min(n_min, t0_min + d), start_ms, f"{tag}l", rpm=max(10.0, 25 * key.peak_rpm),
                               models=[key.models[0]], in_tok=key.in_tok, out_tok=key.out_tok)
        else:
            b = attacker_traffic(rng, key, t0, t0 + d * MIN_MS, f"{tag}l", rpm=max(10.0, 25 * key.peak_rpm), ips=[key.ips[0]],
                                 countries=[key.project.country], uas=[key.ua], models=[key.models[0]],
                                 in_tok=key.in_tok, out_tok=key.out_tok)
        blocks.append(b)
        first = (b.tag + "0", int(b.ts[0]))
    elif kind == "sdk_upgrade":
        key.extra["ua_switch"] = (t0_min, key.ua_minor + int(rng.integers(1, 4)), int(rng.integers(0, 5)))
    elif kind == "model_upgrade":
        up = PROVIDERS[prov][1]
        old = next((m for m in key.models if up.get(m, m) != m), key.models[0])
        key.extra["model_switch"] = (t0_min, old, up.get(old, old + "-latest"))
    elif kind == "gradual_growth":
        g = float(rng.uniform(1.5, 3.0))
        m = np.arange(n_min)
        key.extra["rate_mult"] = 1.0 + g * np.clip((m - t0_min) / max(1, n_min - t0_min), 0, 1)
    elif kind == "new_ci_runner":
        a, b, c, _ = key.ips[0].split(".")
        c = c if rng.random() < 0.5 else str(int(rng.integers(0, 256)))  # same /24, or a new /24 in the /16
        key.extra["new_ip"] = (t0_min, f"{a}.{b}.{c}.{int(rng.integers(2, 250))}", float(rng.uniform(0.3, 0.7)))
    elif kind == "launch":
        d = dur(360, 2880)
        mult = np.ones(n_min)
        mult[t0_min: t0_min + d] = float(rng.uniform(4, 10))
        key.extra["rate_mult"] = mult
    elif kind == "benign_new_key":
        key.start_min = t0_min
    elif kind in HARD_ATTACKS or kind in HARD_BENIGN:
        from keywatch.sim_hard import inject_hard

        d, got = inject_hard(kind, rng, key, start_ms, n_min, t0_min, t0, dur, attack, audit, blocks, tag)
        first = got or first
    else:
        raise ValueError(f"unknown incident type {kind!r}; one of {', '.join(ALL_TYPES)}")
    truth = {
        "type": kind, "attack": kind in ALL_ATTACKS,
        "expected_kind": "key_theft" if kind in ALL_ATTACKS else ("cost_spike" if kind in COST else None),
        "key_id": key.key_id, "provider": prov, "project": key.project.name,
        "start_ts": t0, "end_ts": min(end_ms, t0 + d * MIN_MS) if d else end_ms,
        "first_event_id": first[0] if first else None, "first_event_ts": first[1] if first else None,
    }
    return blocks, truth
