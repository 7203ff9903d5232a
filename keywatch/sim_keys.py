"""Simulator building blocks: the world (projects, keys, networks, models) and traffic blocks.

A `Block` is a columnar, time-sorted run of events from one source (a key's normal traffic, an
attacker, a batch of audit calls). Columns are numpy arrays; string columns are indices into a
small vocabulary, so a week of traffic for hundreds of keys stays compact until the moment each
event dict is built (`Block.rows`).

>>> import numpy as np
>>> b = Block(np.array([5, 9]), {"kind": "usage", "provider": "openai"}, {"model": np.array([0, 1])},
...           {"model": ["gpt-4o", "gpt-4o-mini"]}, tag="t")
>>> [r["model"] for r in b.rows(0, 2)], b.rows(1, 2)[0]["event_id"]
(['gpt-4o', 'gpt-4o-mini'], 't1')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# USD per 1M tokens (input, output): enough for realistic costs in synthetic data.
PRICES = {
    "gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.4, 1.6),
    "o1": (15.0, 60.0), "gpt-4": (30.0, 60.0), "text-embedding-3-small": (0.02, 0.0),
    "claude-3-5-sonnet": (3.0, 15.0), "claude-3-5-haiku": (0.8, 4.0), "claude-3-opus": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0), "claude-sonnet-4": (3.0, 15.0),
}
# provider → (everyday models, upgrade map within a family, expensive models attackers favour)
PROVIDERS = {
    "openai": (["gpt-4o-mini", "gpt-4o-2024-08-06", "text-embedding-3-small", "gpt-4.1-mini"],
               {"gpt-4o-2024-08-06": "gpt-4o-2024-11-20", "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
                "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14", "text-embedding-3-small": "text-embedding-3-small"},
               ["gpt-4", "o1", "gpt-4o-2024-08-06"]),
    "anthropic": (["claude-3-5-haiku-20241022", "claude-3-5-sonnet-20240620"],
                  {"claude-3-5-sonnet-20240620": "claude-3-5-sonnet-20241022",
                   "claude-3-5-haiku-20241022": "claude-3-5-haiku-latest"},
                  ["claude-3-opus-20240229", "claude-opus-4-20250514"]),
    "bedrock": (["anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"],
                {"anthropic.claude-3-5-sonnet-20240620-v1:0": "anthropic.claude-3-5-sonnet-20241022-v2:0",
                 "anthropic.claude-3-5-haiku-20241022-v1:0": "anthropic.claude-3-5-haiku-20241022-v1:0"},
                ["anthropic.claude-3-opus-20240229-v1:0", "anthropic.claude-opus-4-20250514-v1:0"]),
    "azure_openai": (["gpt-4o-mini", "gpt-4o"], {"gpt-4o": "gpt-4o-2024-11-20", "gpt-4o-mini": "gpt-4o-mini"}, ["gpt-4", "o1"]),
}
PROVIDER_WEIGHTS = (("openai", 0.4), ("anthropic", 0.25), ("bedrock", 0.25), ("azure_openai", 0.1))
SDK = {"openai": "openai-python", "anthropic": "anthropic-sdk-python", "bedrock": "Boto3", "azure_openai": "openai-node"}
REGIONS = {"bedrock": ["us-east-1", "us-west-2", "eu-central-1"], "azure_openai": ["eastus", "westeurope", "swedencentral"]}
# Legitimate networks: first octets of cloud/ISP ranges; attackers use disjoint ranges.
HOME_OCTETS = (34, 35, 52, 54, 20, 40, 13, 81, 82, 88, 3, 18)
ATTACK_OCTETS = (45, 185, 91, 103, 5, 194, 176, 146, 23, 198, 31, 77)
HOME_COUNTRIES = (("US", -5), ("US", -8), ("DE", 1), ("GB", 0), ("IN", 5), ("JP", 9), ("FR", 1), ("CA", -5))
ATTACK_COUNTRIES = ("RU", "CN", "BR", "VN", "NG", "RO", "NL", "SG", "IR", "UA", "ID", "TR", "US", "DE")
ATTACK_UAS = ("python-requests/2.31.0", "curl/8.4.0", "Go-http-client/1.1", "axios/1.6.2",
              "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "aiohttp/3.9.1", "okhttp/4.12.0")


def model_price(model: str) -> tuple[float, float]:
    """Price of a raw model id (date/vendor/version suffixes ignored), USD per 1M tokens."""
    name = model.split(".", 1)[1] if model.startswith("anthropic.") else model
    best = ""
    for canon in PRICES:
        if name.startswith(canon) and len(canon) > len(best):
            best = canon
    return PRICES.get(best, (1.0, 3.0))


def ua_string(provider: str, minor: int, patch: int) -> str:
    fam = SDK[provider]
    if fam == "Boto3":
        return f"Boto3/1.{minor}.{patch} md/Botocore#1.{minor}.{patch} ua/2.0 os/linux#6.1 lang/python#3.12"
    major = 0 if fam == "anthropic-sdk-python" else (4 if fam == "openai-node" else 1)
    return f"{fam}/{major}.{minor}.{patch}"


def ip_str(a: int, b: int, c: int, d: int) -> str:
    return f"{a}.{b}.{c}.{d}"


@dataclass
class Project:
    name: str
    country: str
    tz: int
    net16: tuple[int, int]  # the project's cloud /16
    office24: tuple[int, int, int]  # an office /24


@dataclass
class KeyProfile:
    idx: int
    key_id: str
    provider: str
    project: Project
    principal: str | None
    pattern: str  # office | service | batch
    peak_rpm: float  # requests/minute at the busiest time
    models: list[str]
    model_p: np.ndarray
    ips: list[str]
    ua_minor: int
    ua_patch: int
    region: str | None
    bucketed: bool  # usage arrives as per-minute buckets without caller network (usage APIs)
    err_rate: float
    in_tok: float
    out_tok: float
    start_min: int = 0  # minute the key comes into use (new keys start later)
    extra: dict = field(default_factory=dict)

    @property
    def ua(self) -> str:
        return ua_string(self.provider, self.ua_minor, self.ua_patch)


def make_projects(rng: np.random.Generator, n: int) -> list[Project]:
    out = []
    used: set = set()
    for i in range(n):
        country, tz = HOME_COUNTRIES[int(rng.integers(len(HOME_COUNTRIES)))]
        while True:
            net = (int(rng.choice(HOME_OCTETS)), int(rng.integers(0, 256)))
            if net not in used:
                used.add(net)
                break
        office = (int(rng.choice(HOME_OCTETS)), int(rng.integers(0, 256)), int(rng.integers(0, 256)))
        out.append(Project(f"proj-{i:03d}", country, tz, net, office))
    return out


def make_key(rng: np.random.Generator, idx: int, project: Project, provider: str | None = None, bucket_share: float = 0.15) -> KeyProfile:
    if provider is None:
        names, w = zip(*PROVIDER_WEIGHTS)
        provider = names[int(rng.choice(len(names), p=np.array(w)))]
    everyday = PROVIDERS[provider][0]
    k = int(rng.integers(1, min(3, len(everyday)) + 1))
    models = [str(m) for m in rng.choice(everyday, size=k, replace=False)]
    p = rng.dirichlet(np.ones(k) * 2.0)
    # Keys run on a few hosts of the project's cloud /16, or in the office /24.
    if rng.random() < 0.7:
        a, b = project.net16
        c = int(rng.integers(0, 256))
        ips = [ip_str(a, b, c, int(rng.integers(2, 250))) for _ in range(int(rng.integers(1, 4)))]
    else:
        a, b, c = project.office24
        ips = [ip_str(a, b, c, int(rng.integers(2, 250))) for _ in range(int(rng.integers(1, 3)))]
    pattern = str(rng.choice(["office", "service", "batch"], p=[0.5, 0.4, 0.1]))
    hexid = "".join(f"{int(x):02x}" for x in rng.integers(0, 256, 8))
    key_id = {"openai": f"key_{hexid}", "anthropic": f"apikey_01{hexid}", "azure_openai": f"az_{hexid}",
              "bedrock": "AKIA" + hexid.upper()}[provider]
    principal = f"arn:aws:iam::{100000000000 + idx}:user/app-{idx}" if provider == "bedrock" else None
    regions = REGIONS.get(provider)
    return KeyProfile(
        idx=idx, key_id=key_id, provider=provider, project=project, principal=principal, pattern=pattern,
        peak_rpm=float(np.clip(rng.lognormal(np.log(0.8), 0.8), 0.08, 8.0)), models=models, model_p=p,
        ips=ips, ua_minor=int(rng.integers(30, 60)), ua_patch=int(rng.integers(0, 10)),
        region=str(rng.choice(regions)) if regions else None, bucketed=bool(rng.random() < bucket_share),
        err_rate=float(rng.uniform(0.002, 0.02)), in_tok=float(rng.lognormal(np.log(700), 0.6)),
        out_tok=float(rng.lognormal(np.log(220), 0.5)),
    )


def shape(pattern: str, minutes: np.ndarray, start_ms: int, tz: int) -> np.ndarray:
    """Relative request rate per minute (peak ≈ 1): diurnal and weekly patterns in local time."""
    local_h = ((minutes / 60.0 + start_ms / 3_600_000.0 + tz) % 24.0)
    day = np.floor((minutes / 1440.0) + (start_ms / 86_400_000.0 + 3 + tz / 24.0)) % 7  # 0 = Monday
    weekend = day >= 5
    if pattern == "office":
        on = np.clip(np.minimum(local_h - 7.5, 18.5 - local_h), 0, 1)  # 08–18 with ramps
        return np.where(weekend, 0.04, 0.01 + on) * (0.85 + 0.15 * np.sin(local_h / 3.0))
    if pattern == "batch":
        return np.where((local_h >= 1) & (local_h < 4), 1.0, 0.12) * np.where(weekend, 0.6, 1.0)
    return (0.65 + 0.35 * np.sin((local_h - 9) / 24 * 2 * np.pi)) * np.where(weekend, 0.7, 1.0)


class Block:
    """Time-sorted columnar events of one source; `rows(a, b)` builds the event dicts."""

    __slots__ = ("ts", "const", "cols", "vocab", "tag", "_lists")

    def __init__(self, ts: np.ndarray, const: dict, cols: dict, vocab: dict | None = None, tag: str = "") -> None:
        order = np.argsort(ts, kind="stable")
        self.ts = np.asarray(ts, dtype=np.int64)[order]
        self.cols = {k: np.asarray(v)[order] for k, v in cols.items()}
        self.const = {k: v for k, v in const.items() if v is not None}
        self.vocab = vocab or {}
        self.tag = tag
        self._lists = None

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self, a: int, b: int) -> list[dict]:
        ts = self.ts[a:b].tolist()
        cols = []
        for name, arr in self.cols.items():
            vals = arr[a:b].tolist()
            voc = self.vocab.get(name)
            if voc is not None:
                vals = [voc[v] for v in vals]
            cols.append((name, vals))
        out = []
        const, tag = self.const, self.tag
        for j, t in enumerate(ts):
            d = {"event_id": f"{tag}{a + j}", "ts": t, **const}
            for name, vals in cols:
                v = vals[j]
                if v is not None and v != -1:
                    d[name] = v
            out.append(d)
        return out
