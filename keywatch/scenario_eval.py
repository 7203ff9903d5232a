"""`keywatch eval scenarios`: the key-theft scenario suite, scored against ground truth.

Simulated data sets (several seeds; each has every attack style on its own keys, a runaway
loop, the benign changes, and clean keys) are written as JSON Lines and run through
`keywatch.replay.replay` with `build_core(settings)`: exactly what `keywatch replay` does.
Per attack style: detection rate, median and p90 time-to-detect (event time from the first
attacker event to the first `key_theft` alert's `detected_at` on that key); and false high or
critical `key_theft` alerts per 1,000 key-days on keys that were never attacked.

>>> summarise_ttd([30_000, 60_000, 90_000, None])
{'cases': 4, 'detected': 3, 'detection_rate': 0.75, 'median_ttd_s': 60.0, 'p90_ttd_s': 84.0}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from keywatch.sim_incidents import ALL_ATTACKS, ATTACKS, BENIGN, COST, HARD_ATTACKS, HARD_BENIGN
from keywatch.simulate import SimConfig, generate, ground_truth

TARGETS = {"detection_rate": 0.95, "median_ttd_s": 120.0, "low_and_slow_rate_1h": 0.70, "false_per_1000_key_days": 1.0,
           "cost_spike_rate": 0.95, "cost_spike_median_ttd_s": 300.0}
SLOW = ("low_and_slow", "hard_low_and_slow")
SPEND_CHANGES = ("runaway_loop", "launch", "batch_job")  # real spend changes: a cost_spike there is not false


def suite(seeds: int, keys: int, days: float, per_style: int = 2, seed0: int = 1000, hard: bool = True) -> list[SimConfig]:
    """Each data set: every basic attack style (`per_style` each), runaway loops, the benign changes, and
    (`hard`) every hard variant mixed into the same projects."""
    incidents = [a for a in ATTACKS for _ in range(per_style)] + [c for c in COST for _ in range(per_style)] + list(BENIGN)
    if hard:
        incidents += [a for a in HARD_ATTACKS for _ in range(per_style)] + list(HARD_BENIGN)
    return [SimConfig(keys=max(keys, len(incidents) + 4), projects=max(3, keys // 6), days=days, seed=seed0 + s,
                      incidents=incidents) for s in range(seeds)]


def summarise_ttd(ttds: list[int | None]) -> dict[str, Any]:
    got = [t / 1000.0 for t in ttds if t is not None]
    return {"cases": len(ttds), "detected": len(got), "detection_rate": round(len(got) / len(ttds), 4) if ttds else 0.0,
            "median_ttd_s": round(float(np.median(got)), 1) if got else None,
            "p90_ttd_s": round(float(np.percentile(got, 90)), 1) if got else None}


def run_one(cfg: SimConfig, settings, workdir: Path, partitions: int = 0, workers: int = 1) -> dict[str, Any]:
    """One data set through replay, or (`partitions` > 0) through the worker's layout of that
    many partition cores and a worker-wide core (keywatch/eval_partitioned.py)."""
    from keywatch.eval_partitioned import alerts_of_layout
    from keywatch.models.registry import build_core
    from keywatch.replay import replay
    from keywatch.stream.decode import EventDecoder

    events_path = workdir / f"events_{cfg.seed}.jsonl"
    span: dict[str, list[int]] = {}
    with open(events_path, "wb") as fh:
        buf = []
        for ev in generate(cfg):
            buf.append(orjson.dumps(ev))
            if ev["kind"] == "usage":
                s = span.get(ev["key_id"])
                if s is None:
                    span[ev["key_id"]] = [ev["ts"], ev["ts"]]
                else:
                    s[1] = ev["ts"]
            if len(buf) >= 20_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        fh.write(b"\n".join(buf) + b"\n")
    if partitions:
        started = time.perf_counter()
        alerts, events = alerts_of_layout(events_path, settings, partitions, workers=workers)
        seconds = time.perf_counter() - started
    else:
        alerts_path = workdir / f"alerts_{cfg.seed}.jsonl"
        summary = replay([events_path], alerts_path, build_core(settings), EventDecoder.from_settings(settings, streaming=False))
        alerts = [orjson.loads(line) for line in alerts_path.read_bytes().splitlines() if line.strip()]
        events, seconds = summary.events, summary.seconds
    truth = ground_truth(cfg)
    return {"seed": cfg.seed, "truth": truth, "alerts": alerts, "span": span, "events": events,
            "seconds": seconds, "end_ms": cfg.start_ms + int(cfg.days * 86_400_000)}


def score(runs: list[dict[str, Any]]) -> dict[str, Any]:
    present = {t["type"] for run in runs for t in run["truth"]}
    ttd: dict[str, list] = {a: [] for a in ALL_ATTACKS if a in present}
    within_1h: dict[str, list[bool]] = {}
    false_hi, key_days, false_by_type = 0, 0.0, {}
    for run in runs:
        kt = [a for a in run["alerts"] if a["kind"] == "key_theft"]
        attacked = {t["key_id"] for t in run["truth"] if t["attack"]}
        incident_of = {t["key_id"]: t["type"] for t in run["truth"]}
        for t in run["truth"]:
            if not t["attack"]:
                continue
            hits = [a["detected_at_ms"] for a in kt if a["key_id"] == t["key_id"]
                    and t["first_event_ts"] <= a["detected_at_ms"] <= t["end_ts"] + 3_600_000]
            d = (min(hits) - t["first_event_ts"]) if hits else None
            ttd[t["type"]].append(d)
            if t["type"] in SLOW:
                within_1h.setdefault(t["type"], []).append(d is not None and d <= 3_600_000)
        for key, (first, _last) in run["span"].items():
            if key in attacked:
                continue
            key_days += (run["end_ms"] - first) / 86_400_000
        for a in kt:
            if a["key_id"] not in attacked and a["severity"] in ("high", "critical"):
                false_hi += 1
                typ = incident_of.get(a["key_id"], "clean")
                false_by_type[typ] = false_by_type.get(typ, 0) + 1
    styles = {s: summarise_ttd(v) for s, v in ttd.items()}
    for s, v in within_1h.items():
        styles[s]["detection_rate_1h"] = round(sum(v) / len(v), 4)
    fp_rate = 1000.0 * false_hi / key_days if key_days else 0.0
    benign_types = {t["type"]: [] for run in runs for t in run["truth"] if t["type"] in BENIGN + HARD_BENIGN}
    for run in runs:  # per benign change: did any of its keys get a high/critical key_theft?
        for t in run["truth"]:
            if t["type"] in benign_types:
                benign_types[t["type"]].append(max((_sev(a) for a in run["alerts"] if a["kind"] == "key_theft"
                                                    and a["key_id"] == t["key_id"]), default="none"))
    events = sum(r["events"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    cost = cost_section(runs, key_days)
    loops = cost["styles"].get("runaway_loop")
    met = fp_rate <= TARGETS["false_per_1000_key_days"] and (loops is None or (
        loops["detection_rate"] >= TARGETS["cost_spike_rate"] and (loops["median_ttd_s"] or 1e9) <= TARGETS["cost_spike_median_ttd_s"]))
    for s, v in styles.items():
        if s in SLOW:
            met = met and v["detection_rate_1h"] >= TARGETS["low_and_slow_rate_1h"]
        else:
            met = met and v["detection_rate"] >= TARGETS["detection_rate"] and (1e9 if v["median_ttd_s"] is None else v["median_ttd_s"]) <= TARGETS["median_ttd_s"]
    return {"styles": styles, "benign": {"false_high_critical": false_hi, "key_days": round(key_days, 1),
                                         "per_1000_key_days": round(fp_rate, 3), "by_incident_type": false_by_type},
            "benign_changes_worst_key_theft": {k: dict(sorted({s: v.count(s) for s in set(v)}.items())) for k, v in benign_types.items()},
            "cost_spike": cost, "runaway_loop_cost_spike_rate": cost["styles"].get("runaway_loop", {}).get("detection_rate"),
            "events": events, "replay_seconds": round(secs, 2), "replay_events_per_s": round(events / secs) if secs else 0,
            "targets": TARGETS, "targets_met": bool(met)}


def _sev(a: dict) -> str:
    return a["severity"]


def cost_section(runs: list[dict[str, Any]], key_days: float) -> dict[str, Any]:
    """Runaway loops and launches as `cost_spike` (rate, time-to-detect from the first extra event);
    false key-level `cost_spike`s per 1,000 key-days on keys without a real spend change."""
    ttd: dict[str, list] = {"runaway_loop": [], "launch": []}
    false_n, by_type, cost_days = 0, {}, 0.0
    for run in runs:
        spikes = [a for a in run["alerts"] if a["kind"] == "cost_spike" and a["key_id"]]
        changed = {t["key_id"] for t in run["truth"] if t["type"] in SPEND_CHANGES or t["attack"]}
        kind_of = {t["key_id"]: t["type"] for t in run["truth"]}
        for t in run["truth"]:
            if t["type"] in ttd:
                t0 = t["first_event_ts"] or (t["start_ts"] // 60_000 * 60_000)
                hits = [a["detected_at_ms"] for a in spikes if a["key_id"] == t["key_id"] and t0 <= a["detected_at_ms"] <= t["end_ts"] + 3_600_000]
                ttd[t["type"]].append(min(hits) - t0 if hits else None)
        for key, (first, _last) in run["span"].items():
            if key not in changed:
                cost_days += (run["end_ms"] - first) / 86_400_000
        for a in spikes:
            if a["key_id"] not in changed:
                false_n += 1
                by_type[kind_of.get(a["key_id"], "clean")] = by_type.get(kind_of.get(a["key_id"], "clean"), 0) + 1
    return {"styles": {k: summarise_ttd(v) for k, v in ttd.items() if v}, "false_cost_spikes": false_n,
            "key_days": round(cost_days, 1), "false_per_1000_key_days": round(1000.0 * false_n / cost_days, 3) if cost_days else 0.0,
            "false_by_incident_type": by_type}


def run_suite(settings, *, seeds: int = 6, keys: int = 60, days: float = 4.0, per_style: int = 2,
              quick: bool = False, out: Path | None = None, partitions: int = 0, workers: int = 1) -> dict[str, Any]:
    if quick:
        seeds, keys, days, per_style = 2, 30, 2.5, 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kw-eval-") as tmp:
        runs = [run_one(cfg, settings, Path(tmp), partitions, workers) for cfg in suite(seeds, keys, days, per_style)]
    report = score(runs)
    report["suite"] = {"seeds": seeds, "keys": keys, "days": days, "per_style": per_style, "partitions": partitions, "workers": workers,
                       "placement": settings.placement, "populations_shared": workers > 1 and settings.population_share_s > 0,
                       "seconds": round(time.perf_counter() - started, 1)}
    report["cases"] = [{"seed": r["seed"], **{k: t[k] for k in ("type", "key_id", "provider", "first_event_ts")}}
                       for r in runs for t in r["truth"]]
    if out is not None:
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def print_report(report: dict[str, Any], console) -> None:
    from rich.table import Table

    t = Table(title="key-theft scenarios (hard = attackers blend in / no network data)")
    for col in ("style", "cases", "detected", "rate", "median TTD s", "p90 TTD s"):
        t.add_column(col)
    for s, v in report["styles"].items():
        rate = f"{v['detection_rate']:.0%}" + (f" ({v['detection_rate_1h']:.0%} ≤1h)" if "detection_rate_1h" in v else "")
        t.add_row(s + (" [hard]" if s in HARD_ATTACKS else ""), str(v["cases"]), str(v["detected"]), rate,
                  str(v["median_ttd_s"]), str(v["p90_ttd_s"]))
    console.print(t)
    b = report["benign"]
    console.print(f"benign: {b['false_high_critical']} false high/critical key_theft in {b['key_days']} key-days "
                  f"= {b['per_1000_key_days']} per 1,000 key-days {b['by_incident_type'] or ''}")
    console.print("benign changes, worst key_theft severity per case: " + "; ".join(
        f"{k}{' [hard]' if k in HARD_BENIGN else ''} {v}" for k, v in report["benign_changes_worst_key_theft"].items()))
    c = report["cost_spike"]
    t = Table(title="cost_spike scenarios")
    for col in ("style", "cases", "detected", "rate", "median TTD s", "p90 TTD s"):
        t.add_column(col)
    for s, v in c["styles"].items():
        t.add_row(s, str(v["cases"]), str(v["detected"]), f"{v['detection_rate']:.0%}", str(v["median_ttd_s"]), str(v["p90_ttd_s"]))
    console.print(t)
    console.print(f"cost_spike: {c['false_cost_spikes']} false key-level cost_spike in {c['key_days']} key-days "
                  f"= {c['false_per_1000_key_days']} per 1,000 key-days {c['false_by_incident_type'] or ''}")
    parts = report.get("suite", {}).get("partitions")
    n_workers = report.get("suite", {}).get("workers", 1)
    placed = report.get("suite", {}).get("placement", "key")
    how = (f"worker layout, {parts} partitions" + (f" over {n_workers} workers" if n_workers > 1 else "")
           + (f", placed by {placed}" if placed != "key" else "")
           + (", populations not shared" if n_workers > 1 and not report["suite"].get("populations_shared", True) else "")
           ) if parts else "replay"
    console.print(f"{how}: {report['events']:,} events, {report['replay_events_per_s']:,} events/s; "
                  f"targets met: {report['targets_met']}")
