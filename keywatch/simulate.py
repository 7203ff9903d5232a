"""`keywatch simulate`: realistic synthetic LLM telemetry with injected incidents and ground truth.

Many keys in several projects and providers, diurnal and weekly patterns, stable networks and
user agents per key, per-request (gateway) and bucketed (usage API) events, audit calls; and
incidents: six attack styles, a runaway loop (a cost spike, not theft) and benign changes.
Deterministic for a given `SimConfig` (seed included).

>>> cfg = SimConfig(keys=6, projects=2, days=1.0, seed=3, incidents=["loud_burst"], warmup_days=0.5)
>>> events = list(generate(cfg))
>>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
True
>>> truth = ground_truth(cfg)
>>> truth[0]["type"], any(e["event_id"] == truth[0]["first_event_id"] for e in events)
('loud_burst', True)
>>> [e["event_id"] for e in generate(cfg)][:50] == [e["event_id"] for e in events][:50]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator, List, Optional

import numpy as np
import typer

from keywatch.sim_incidents import ALL_ATTACKS, ALL_TYPES, BASIC_TYPES, ATTACKS, HARD_ATTACKS, HARD_BENIGN, inject
from keywatch.sim_keys import Block, KeyProfile, make_key, make_projects
from keywatch.sim_traffic import MIN_MS, audit_calls, key_traffic

START_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday
NEEDS_BEDROCK = ("logging_tamper", "hard_tamper")
NEW_KEY = ("new_key_abuse", "benign_new_key", "hard_new_key", "key_rotation")
NEEDS_BUCKETS = ("hard_bucket_abuse",)
NEEDS_NETWORK = ALL_ATTACKS + ("residential_users", "ci_fleet", "dev_vpn")
SHORT = ("loud_burst", "probe_only", "logging_tamper", "new_key_abuse", "runaway_loop", "hard_burst", "hard_probe",
         "hard_tamper", "hard_new_key", "hard_bucket_abuse")


@dataclass
class SimConfig:
    keys: int = 40
    projects: int = 8
    days: float = 3.0
    start_ms: int = START_MS
    seed: int = 0
    # Incident type names, or dicts {"type", "key" (index), "at_s" (offset), "duration_s"}.
    incidents: list = field(default_factory=lambda: list(BASIC_TYPES))  # `ALL_TYPES` adds the hard variants
    warmup_days: float = 1.5  # incidents start after this much history
    bucket_share: float = 0.15  # keys whose usage arrives as per-minute buckets without network
    benign_audit: bool = True  # daily ListFoundationModels by some Bedrock apps (not an attack)
    chunk_minutes: int = 360


@dataclass
class _Plan:
    keys: list[KeyProfile]
    blocks: list[Block]
    truth: list[dict]


def _plan(cfg: SimConfig) -> _Plan:
    rng = np.random.default_rng([cfg.seed, 0])
    n_min = int(round(cfg.days * 1440))
    projects = make_projects(rng, max(1, cfg.projects))
    keys = [make_key(rng, i, projects[i % len(projects)], bucket_share=cfg.bucket_share) for i in range(cfg.keys)]
    used: set[int] = set()
    truth, blocks = [], []
    for n, spec in enumerate(cfg.incidents):
        spec = {"type": spec} if isinstance(spec, str) else dict(spec)
        kind = spec["type"]
        irng = np.random.default_rng([cfg.seed, 1, n])
        if kind == "key_rotation":  # the same callers move to a new key of the same project
            free = [k for k in keys if k.idx not in used]
            src = free[int(irng.integers(len(free)))]
            used.add(src.idx)
            hexid = "".join(f"{int(x):02x}" for x in irng.integers(0, 256, 8))
            kid = {"openai": f"key_{hexid}", "anthropic": f"apikey_01{hexid}", "azure_openai": f"az_{hexid}",
                   "bedrock": "AKIA" + hexid.upper()}[src.provider]
            key = replace(src, idx=len(keys), key_id=kid, extra={"rotated_from": src})
            keys.append(key)
        elif kind in NEW_KEY:
            src = keys[int(irng.integers(len(keys)))] if keys else None
            proj = src.project if src else projects[0]
            key = make_key(irng, len(keys), proj, provider=src.provider if src else None, bucket_share=0.0)
            keys.append(key)
        elif "key" in spec:
            key = keys[int(spec["key"])]
        else:
            free = [k for k in keys if k.idx not in used and not (kind in NEEDS_NETWORK and k.bucketed)]
            if kind in NEEDS_BUCKETS:
                free = [k for k in keys if k.idx not in used and k.bucketed] or [
                    replace(k, bucketed=True) for k in free[:1]]
                if free and keys[free[0].idx] is not free[0]:
                    keys[free[0].idx] = free[0]
            if kind in NEEDS_BEDROCK:
                bed = [k for k in free if k.provider == "bedrock"]
                if not bed and free:  # make one: the tamper chain is a Bedrock story
                    old = free[0]
                    keys[old.idx] = make_key(irng, old.idx, old.project, provider="bedrock", bucket_share=0.0)
                    bed = [keys[old.idx]]
                free = bed
            if not free:
                raise ValueError(f"not enough keys for incident #{n} ({kind}); raise SimConfig.keys")
            key = free[int(irng.integers(len(free)))]
        used.add(key.idx)
        lo = int(cfg.warmup_days * 1440)
        if lo >= n_min and "at_s" not in spec:  # the incident would start after the last minute
            raise ValueError(f"incident #{n} ({kind}) would start after the stream ends: incidents start after "
                             f"{cfg.warmup_days} days of history (warmup_days) and the stream lasts {cfg.days} days "
                             f"(days, --days)")
        hi = max(lo + 1, n_min - (60 if kind in SHORT else 360))
        t0_min = int(spec["at_s"] // 60) if "at_s" in spec else int(irng.integers(lo, hi))
        dur = int(spec["duration_s"] // 60) if "duration_s" in spec else None
        extra, t = inject(kind, irng, key, cfg.start_ms, n_min, t0_min, dur, f"s{cfg.seed}i{n}")
        t["incident_id"] = f"s{cfg.seed}-{n}-{kind}"
        t["seed"] = cfg.seed
        truth.append(t)
        blocks.extend(extra)
    if cfg.benign_audit:
        for k in keys:
            if k.provider == "bedrock" and k.idx % 2 == 0 and not k.bucketed:
                arng = np.random.default_rng([cfg.seed, 3, k.idx])
                days = range(int(np.ceil(cfg.days)))
                calls = [(cfg.start_ms + d * 86_400_000 + int(arng.integers(0, 86_400_000)), "ListFoundationModels") for d in days]
                calls = [c for c in calls if c[0] < cfg.start_ms + n_min * MIN_MS and c[0] >= cfg.start_ms + k.start_min * MIN_MS]
                if calls:
                    blocks.append(audit_calls(k, calls, f"s{cfg.seed}b{k.idx}-", ip=k.ips[0], country=k.project.country, ua=k.ua))
    return _Plan(keys, blocks, truth)


def ground_truth(cfg: SimConfig) -> list[dict]:
    """One record per injected incident: type, key, provider, project, times, first attacker event."""
    return _plan(cfg).truth


def generate(cfg: SimConfig) -> Iterator[dict]:
    """Canonical event dicts (contract §1, `ts` in epoch ms), in event-time order."""
    plan = _plan(cfg)
    n_min = int(round(cfg.days * 1440))
    blocks = list(plan.blocks)
    for k in plan.keys:
        blocks.append(key_traffic(np.random.default_rng([cfg.seed, 2, k.idx]), k, cfg.start_ms, n_min, f"s{cfg.seed}k{k.idx}-"))
    pos = [0] * len(blocks)
    step = cfg.chunk_minutes * MIN_MS
    t = cfg.start_ms
    end = cfg.start_ms + n_min * MIN_MS + 1
    while t < end + step:
        t_hi = t + step
        rows: list[dict] = []
        ts_parts = []
        for i, b in enumerate(blocks):
            j = int(np.searchsorted(b.ts, t_hi, side="left"))
            if j > pos[i]:
                rows.extend(b.rows(pos[i], j))
                ts_parts.append(b.ts[pos[i]:j])
                pos[i] = j
        if rows:
            order = np.argsort(np.concatenate(ts_parts), kind="stable").tolist()
            for o in order:
                yield rows[o]
        t = t_hi


def write_jsonl(cfg: SimConfig, path: Path) -> int:
    import orjson

    n = 0
    with open(path, "wb") as fh:
        buf = []
        for ev in generate(cfg):
            buf.append(orjson.dumps(ev))
            n += 1
            if len(buf) >= 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    return n


def parse_incidents(text: str) -> list[Any]:
    """`basic`, `all` (basic + hard variants), `attacks`, `hard`, `none`, or a comma list of types."""
    if text == "basic":
        return list(BASIC_TYPES)
    if text in ("all", ""):
        return list(ALL_TYPES)
    if text == "attacks":
        return list(ATTACKS)
    if text == "hard":
        return list(HARD_ATTACKS + HARD_BENIGN)
    if text == "none":
        return []
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in ALL_TYPES]
    if bad:
        raise typer.BadParameter(f"unknown incident type(s) {bad}; known: {', '.join(ALL_TYPES)}")
    return items


def simulate_command(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="events, JSON Lines (time-ordered)"),
    truth: Optional[Path] = typer.Option(None, "--truth", help="ground truth JSON (default: <out>.truth.json)"),
    keys: int = typer.Option(40, "--keys"), projects: int = typer.Option(8, "--projects"),
    days: float = typer.Option(3.0, "--days"), seed: int = typer.Option(0, "--seed"),
    start_ms: int = typer.Option(START_MS, "--start-ms"),
    incidents: str = typer.Option("all", "--incidents", help="all | attacks | none | comma list of types"),
    kafka: bool = typer.Option(False, "--kafka", help="produce to the input topic instead of a file"),
) -> None:
    """Generate synthetic telemetry with injected attacks, a runaway loop and benign changes."""
    import orjson
    from rich.console import Console

    cfg = SimConfig(keys=keys, projects=projects, days=days, seed=seed, start_ms=start_ms, incidents=parse_incidents(incidents))
    console = Console(stderr=True)
    try:
        gt = ground_truth(cfg)
    except ValueError as e:  # e.g. incidents after the stream's end
        raise typer.BadParameter(str(e)) from None
    if kafka:
        if find_spec("keywatch.stream.produce") is None:
            console.print("[red]keywatch.stream.produce is not available[/red]")
            raise typer.Exit(2)
        from keywatch.cli import load_settings
        from keywatch.stream.produce import Placement, produce_events

        settings = load_settings()
        if not settings.kafka_bootstrap:
            console.print("[red]--kafka needs KEYWATCH_KAFKA_BOOTSTRAP[/red]")
            raise typer.Exit(2)
        n = produce_events(settings.kafka_bootstrap, settings.input_topic, generate(cfg), placement=Placement.from_settings(settings))
        where = f"topic {settings.input_topic}"
    else:
        if out is None:
            raise typer.BadParameter("--out is required unless --kafka")
        n = write_jsonl(cfg, out)
        where = str(out)
    truth_path = truth or (out.with_name(out.name + ".truth.json") if out else Path("truth.json"))
    truth_path.write_bytes(orjson.dumps(gt, option=orjson.OPT_INDENT_2))
    console.print(f"{n:,} events → {where}; {len(gt)} incidents → {truth_path}")
