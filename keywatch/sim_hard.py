"""Hard simulator variants: attackers that blend in, keys without network data, odd-but-benign users.

The basic styles (`sim_incidents`) draw attackers from networks and countries that never carry
legitimate traffic, which makes them easy. Here:

- attacks come from the same countries and cloud/hosting first octets as legitimate traffic
  (another /16 than the victim's), with the victim's SDK family (often its exact user agent);
- `hard_tamper` audit records name only the principal (no key id);
- `hard_bucket_abuse` hits a key whose usage arrives as per-minute buckets with no network or
  user agent at all: only volume, spend, model mix and time of day can tell;
- benign: residential/mobile users with dynamic addresses in a few ISP /16s, a CI fleet using
  any host of one /16, bursty batch jobs, key rotation (new key, same callers), a developer on a
  VPN for a few hours (same volume, a new network and maybe country).

`inject_hard` is called by `sim_incidents.inject` with its helpers (`attack`, `audit`).

>>> import numpy as np
>>> from keywatch.sim_keys import make_key, make_projects
>>> rng = np.random.default_rng(2)
>>> key = make_key(rng, 0, make_projects(rng, 1)[0], provider="openai", bucket_share=0.0)
>>> ips = blend_ips(rng, key, 4, 2)
>>> len(ips), all(int(ip.split(".")[0]) in HOME_OCTETS for ip in ips)
(4, True)
"""

from __future__ import annotations

import numpy as np

from keywatch.sim_keys import HOME_COUNTRIES, HOME_OCTETS, PROVIDERS, Block, KeyProfile, ua_string
from keywatch.sim_traffic import MIN_MS, bucket_traffic

RESIDENTIAL_OCTETS = (24, 50, 67, 68, 71, 73, 76, 86, 92, 98, 108, 174)
VPN_OCTETS = (185, 45, 146, 194, 89, 212)
VPN_COUNTRIES = ("NL", "CH", "SE", "DE", "US", "GB", "CA", "FR")
BOGUS_MODELS = ["gpt-4-32k", "claude-2.1", "anthropic.claude-v2"]


def blend_ips(rng: np.random.Generator, key: KeyProfile, n: int, n_nets: int) -> list[str]:
    """`n` addresses in `n_nets` cloud /16s (legitimate first octets), none of the victim's /16s."""
    own = {tuple(int(x) for x in ip.split(".")[:2]) for ip in key.ips} | {key.project.net16, key.project.office24[:2]}
    nets: list[tuple[int, int]] = []
    while len(nets) < n_nets:
        net = (int(rng.choice(HOME_OCTETS)), int(rng.integers(0, 256)))
        if net not in own and net not in nets:
            nets.append(net)
    return [f"{a}.{b}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 250))}" for a, b in (nets[i % n_nets] for i in range(n))]


def sdk_ua(rng: np.random.Generator, key: KeyProfile, exact_p: float = 0.5) -> str:
    """The victim's user agent, or the same SDK family at another version."""
    if rng.random() < exact_p:
        return key.ua
    return ua_string(key.provider, max(1, key.ua_minor + int(rng.integers(-6, 6))), int(rng.integers(0, 10)))


def _home_countries(rng: np.random.Generator, key: KeyProfile, extra: int) -> list[str]:
    others = sorted({c for c, _ in HOME_COUNTRIES} - {key.project.country})
    return [key.project.country] + [str(c) for c in rng.choice(others, size=extra, replace=False)]


def inject_hard(kind: str, rng: np.random.Generator, key: KeyProfile, start_ms: int, n_min: int, t0_min: int, t0: int,
                dur, attack, audit, blocks: list[Block], tag: str) -> tuple[int | None, tuple[str, int] | None]:
    """Apply a hard variant; returns (duration in minutes or None, first attacker event or None)."""
    from keywatch.sim_incidents import RECON, mean_rpm

    expensive = PROVIDERS[key.provider][2]
    base = mean_rpm(key, start_ms)
    d = None
    first = None
    if kind == "hard_burst":
        d = dur(30, 120)
        n_nets = int(rng.integers(2, 6))
        ips = blend_ips(rng, key, int(rng.integers(max(6, n_nets), 30)), n_nets)
        attack(t1=t0 + d * MIN_MS, rpm=float(rng.uniform(15, 60)), ips=ips,
               countries=_home_countries(rng, key, int(rng.integers(0, 3))), uas=[sdk_ua(rng, key)],
               models=expensive, fail_share=0.03, ramp_s=60.0)
    elif kind == "hard_reseller":
        d = dur(360, 1440)
        ips = blend_ips(rng, key, int(rng.integers(1, 4)), 1)
        ua = sdk_ua(rng, key) if rng.random() < 0.7 else "litellm/1.48.2"
        attack(t1=t0 + d * MIN_MS, rpm=float(np.clip(4 * base * rng.uniform(1, 2), 1.0, 20)), ips=ips,
               countries=[key.project.country], uas=[ua], models=expensive + key.models, in_tok=2500, out_tok=900)
    elif kind == "hard_low_and_slow":
        d = dur(360, 720)
        attack(t1=t0 + d * MIN_MS, rpm=max(0.05, base * float(rng.uniform(1.0, 2.0))), ips=blend_ips(rng, key, 1, 1),
               countries=[key.project.country], uas=[key.ua], models=list(key.models), in_tok=key.in_tok, out_tok=key.out_tok)
    elif kind == "hard_probe":
        d = dur(10, 30)
        ips = blend_ips(rng, key, int(rng.integers(1, 3)), 1)
        ua = sdk_ua(rng, key)
        if key.provider == "bedrock":
            calls = [(t0 + i * int(rng.integers(2_000, 20_000)), str(a))
                     for i, a in enumerate(rng.choice(RECON[:2], size=int(rng.integers(2, 5))))]
            audit(calls, ips[0], key.project.country, ua, "r", with_key=bool(rng.random() < 0.5))
        attack(t0=t0 + 5_000, t1=t0 + d * MIN_MS, rpm=float(rng.uniform(1.5, 5)), ips=ips, countries=[key.project.country],
               uas=[ua], models=expensive + BOGUS_MODELS, fail_share=0.92)
    elif kind == "hard_tamper":
        d = dur(30, 90)
        ips = blend_ips(rng, key, int(rng.integers(1, 4)), 1)
        ua = sdk_ua(rng, key, 0.7)
        calls = [(t0, "GetModelInvocationLoggingConfiguration")]
        if rng.random() < 0.6:
            calls.append((t0 + int(rng.integers(20_000, 90_000)), "DeleteModelInvocationLoggingConfiguration"))
        audit(calls, ips[0], key.project.country, ua, "t", with_key=bool(rng.random() < 0.4))
        go = t0 + int(rng.integers(60_000, 300_000))
        attack(t0=go, t1=go + d * MIN_MS, rpm=float(rng.uniform(10, 40)), ips=ips, countries=[key.project.country],
               uas=[ua], models=expensive)
    elif kind == "hard_new_key":
        d = dur(30, 180)
        key.start_min = n_min  # the attacker's from the first request
        n_nets = int(rng.integers(1, 4))
        attack(t1=t0 + d * MIN_MS, rpm=float(rng.uniform(5, 40)), ips=blend_ips(rng, key, int(rng.integers(n_nets, 9)), n_nets),
               countries=[key.project.country], uas=[sdk_ua(rng, key)], models=expensive, ramp_s=60.0)
    elif kind == "hard_bucket_abuse":
        d = dur(60, 360)
        t0_min = min(t0_min, n_min - 2)
        b = bucket_traffic(rng, key, t0_min, min(n_min, t0_min + d), start_ms, f"{tag}b", rpm=float(rng.uniform(4, 30)),
                           models=expensive[:2])
        blocks.append(b)
        first = (b.tag + "0", int(b.ts[0]))
    elif kind == "residential_users":
        nets = [(int(rng.choice(RESIDENTIAL_OCTETS)), int(rng.integers(0, 256))) for _ in range(int(rng.integers(2, 5)))]
        w = list(rng.dirichlet(np.ones(len(nets)) * 2.0))
        w[-1] = 0.02  # a rarely used ISP (a phone on mobile data) first shows up late
        key.extra["dynamic"] = (nets, w, int(rng.integers(180, 720)))
    elif kind == "ci_fleet":
        key.extra["fleet"] = (int(rng.choice(HOME_OCTETS)), int(rng.integers(0, 256)))
    elif kind == "batch_job":
        mult = np.ones(n_min)
        for j in range(int(rng.integers(1, 4))):
            s = t0_min + j * int(rng.integers(600, 1440))
            mult[s: s + int(rng.integers(20, 45))] = float(rng.uniform(15, 30))
        key.extra["rate_mult"] = mult
    elif kind == "key_rotation":
        src = key.extra.pop("rotated_from")
        src.extra["end_min"] = t0_min + 5
        key.start_min = t0_min
    elif kind == "dev_vpn":
        d = dur(60, 240)
        vpn = f"{int(rng.choice(VPN_OCTETS))}.{int(rng.integers(0, 256))}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 250))}"
        cc = key.project.country if rng.random() < 0.5 else str(rng.choice(VPN_COUNTRIES))
        key.extra["vpn"] = (t0_min, t0_min + d, vpn, cc, float(rng.uniform(0.3, 1.0)))
    else:
        raise ValueError(kind)
    return d, first
