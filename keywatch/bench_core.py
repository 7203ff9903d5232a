"""`keywatch bench-core`: detection-core speed and memory, each next to a baseline from the same run.

* throughput — a simulated JSON Lines file (`keywatch simulate`: keys × days, attacks and a
  runaway loop included) through `replay`, five ways: decode only (read + validate), the core
  with no detectors (dedupe, ordering, prices), the default core (`build_core`, every
  detector) as `keywatch replay` runs it (a big file is read and decoded by a reader process,
  keywatch/replay_read.py, which also runs the cost-spike, budget, billing and telemetry
  detectors: keywatch/replay_batches.py), the same with every detector in this process (no
  split), and the default core with reading and decoding inline — the same-run comparisons
  for the split and for the reader process. Best of `--repeat` runs each.
* state — bytes of detector state per tracked key: `state_keys` synthetic keys (a few calls
  each, from a handful of networks, user agents and models) through the default core, then the
  pickled size of the whole core (what a snapshot stores) ÷ keys, and of each detector alone.
  The same figure for the replayed file (keys with a day of history) is reported beside it,
  and what a snapshot of that state costs detection: the wait in process against forked.
* peak RSS of the process (`resource.getrusage`).

>>> r = run_core_bench(None, keys=20, days=0.05, state_keys=200, quiet=True)
>>> r["throughput"]["all_detectors"]["events"] > 0 and r["state"]["synthetic"]["keys"] == 200
True
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent, share_text
from keywatch.models.registry import build_core
from keywatch.gctune import fewer_collections
from keywatch.replay import ReplaySummary, replay
from keywatch.replay_read import read_lines
from keywatch.stream.decode import EventDecoder, Origin


def _settings(settings):
    if settings is not None:
        return settings
    from keywatch.settings import get_settings

    return get_settings()


def _decode_only(path: Path, decoder: EventDecoder) -> tuple[int, float]:
    started, n = time.perf_counter(), 0
    for name, lineno, line in read_lines([path]):
        ok, _ = decoder.decode(line.rstrip(b"\r\n"), Origin(name, -1, lineno))
        n += len(ok)
    return n, time.perf_counter() - started


def _replay(path: Path, core: DetectionCore, decoder: EventDecoder, tmp: Path, reader_process: bool | None = None,
            split: bool | None = None) -> ReplaySummary:
    return replay([path], tmp / "alerts.jsonl", core, decoder, dead_letters_out=tmp / "dead.jsonl", reader_process=reader_process,
                  split=split)


def _timing(s: ReplaySummary) -> tuple[int, float]:
    return s.events, s.seconds


def _per_key(core: DetectionCore, keys: int) -> dict:
    total = len(pickle.dumps(core, protocol=5))
    out = {"keys": keys, "core_bytes": total, "bytes_per_key": round(total / max(1, keys), 1), "detectors": {}}
    for det in core.detectors:
        out["detectors"][det.name] = round(len(pickle.dumps(det, protocol=5)) / max(1, keys), 1)
    out["dedupe_bytes_per_key"] = round(len(pickle.dumps(core._window, protocol=5)) / max(1, keys), 1)
    return out


MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20240620", "gpt-4.1-mini")
UAS = ("openai-python/1.47.7", "openai-node/4.57.3", "anthropic-python/0.34.2")


def feed(core: DetectionCore, events, size: int = 5000) -> DetectionCore:
    """`events` through `core` in batches of `size`, their text shared as the decoder does."""
    batch: list[UsageEvent] = []
    for e in events:
        batch.append(e)
        if len(batch) >= size:
            share_text(batch)
            core.process(batch)
            batch = []
    share_text(batch)
    core.process(batch)
    return core


def synthetic_state(settings, keys: int, calls: int = 4, t0: int = 1_793_577_600_000) -> DetectionCore:
    """`keys` keys in 50 projects, `calls` calls each over ~`calls` minutes, a few identities per key."""
    return feed(build_core(settings), (new_key_call(k, minute, t0) for minute in range(calls) for k in range(keys)))


def new_key_call(k: int, minute: int, t0: int) -> UsageEvent:
    """Key `k`'s call in minute `minute` after `t0`, from a network new to it each minute."""
    return UsageEvent(
        event_id=f"b{k}-{minute}", ts=t0 + minute * 60_000 + k % 60_000, provider="openai",
        key_id=f"key_{k:06x}", project=f"proj-{k % 50:02d}", model=MODELS[(k + minute) % 4],
        source="gateway", source_ip=f"34.{k % 200}.{(k // 200 + minute) % 250}.{minute % 3 + 1}",
        country="US", user_agent=UAS[(k + minute // 2) % 3], input_tokens=500, output_tokens=100)


def _snapshot_cost(core: DetectionCore) -> dict:
    """What a worker's periodic snapshot of `core` costs detection (stream/snapfork.py): taken in
    process, detection waits while it is pickled and sealed; forked, only for the fork. The
    child's time is reported beside it (it keeps a core busy, not detection)."""
    from keywatch.stream.snapfork import fork_snapshot, forking_supported
    from keywatch.stream.state import StreamState

    state = StreamState(None, "bench", "bench", b"bench-secret")
    item = (core, {"bench:0": 0}, "p:bench:0")
    started = time.perf_counter()
    state.snapshot_row(*item, 0)
    out = {"in_process_wait_s": round(time.perf_counter() - started, 3)}
    if forking_supported():
        with tempfile.TemporaryDirectory(prefix="kw-bench-snap-") as td:
            started = time.perf_counter()
            snap = fork_snapshot(state, [item], Path(td))
            out["forked_wait_s"] = round(time.perf_counter() - started, 4)
            snap.rows()
            out["forked_child_s"] = round(snap.seconds, 3)
    return out


def run_core_bench(settings=None, *, keys: int = 300, days: float = 1.0, seed: int = 1, state_keys: int = 100_000,
                   repeat: int = 1, json_out: Path | None = None, quiet: bool = False) -> dict:
    from keywatch.simulate import SimConfig, write_jsonl

    settings = _settings(settings)
    decoder = EventDecoder.from_settings(settings, streaming=False)
    result: dict = {"config": {"keys": keys, "days": days, "seed": seed, "state_keys": state_keys, "repeat": repeat}}
    with tempfile.TemporaryDirectory(prefix="kw-bench-core-") as td:
        tmp = Path(td)
        path = tmp / "events.jsonl"
        incidents = ["loud_burst", "runaway_loop"] if days > 0.5 else []
        n_lines = write_jsonl(SimConfig(keys=keys, projects=max(1, keys // 25), days=days, seed=seed,
                                        incidents=incidents, warmup_days=min(1.5, days / 2)), path)
        runs: dict[str, list[tuple[int, float]]] = {"decode_only": [], "core_no_detectors": [], "all_detectors": [],
                                                    "all_detectors_not_split": [], "all_detectors_inline": []}
        last_core = None
        with fewer_collections(settings.gc_threshold):  # as `keywatch replay` runs
            for _ in range(max(1, repeat)):
                gc.collect()
                runs["decode_only"].append(_decode_only(path, decoder))
                bare = build_core(settings)
                bare.detectors = []
                gc.collect()
                runs["core_no_detectors"].append(_timing(_replay(path, bare, decoder, tmp)))
                gc.collect()
                as_cli = _replay(path, build_core(settings), decoder, tmp)  # as `keywatch replay` runs
                runs["all_detectors"].append(_timing(as_cli))
                gc.collect()  # … the reader process not running the shared detectors …
                runs["all_detectors_not_split"].append(_timing(_replay(path, build_core(settings), decoder, tmp, split=False)))
                last_core = build_core(settings)  # … and with reading and decoding in this process (no reader process)
                gc.collect()
                runs["all_detectors_inline"].append(_timing(_replay(path, last_core, decoder, tmp, reader_process=False)))
        result["throughput"] = {}
        for name, rs in runs.items():
            n, secs = min(rs, key=lambda r: r[1])
            result["throughput"][name] = {"events": n, "seconds": round(secs, 3), "events_per_s": round(n / secs) if secs else 0}
        result["throughput"]["lines"] = n_lines
        result["throughput"]["reader_process"] = as_cli.reader == "process"
        result["throughput"]["split"] = as_cli.split
        kt = last_core.detector("key_theft") if last_core else None
        replay_keys = len(kt.keys) if kt is not None else 0
        state = {"replay": _per_key(last_core, replay_keys)}
    del last_core
    gc.collect()
    started = time.perf_counter()
    core = synthetic_state(settings, state_keys)
    kt = core.detector("key_theft")
    state["synthetic"] = _per_key(core, len(kt.keys) if kt is not None else state_keys)
    state["synthetic"]["build_seconds"] = round(time.perf_counter() - started, 2)
    state["synthetic"]["snapshot"] = _snapshot_cost(core)
    result["state"] = state
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2))
    if not quiet:
        print_report(result, Console(stderr=True))
    return result


def print_report(r: dict, console: Console) -> None:
    tp = r["throughput"]
    t = Table(title=f"detection core: {r['config']['keys']} keys × {r['config']['days']} days ({tp['lines']:,} lines)")
    for col in ("run", "events", "seconds", "events/s", "vs decode only"):
        t.add_column(col, justify="right" if col != "run" else "left")
    base = tp["decode_only"]["events_per_s"] or 1
    labels = {"all_detectors": "all detectors" + (" (split: reader process runs the shared side)" if tp.get("split")
                                                  else " (reader process)" if tp.get("reader_process") else ""),
              "all_detectors_not_split": "all detectors, one detecting process",
              "all_detectors_inline": "all detectors, decoded inline"}
    for name in ("decode_only", "core_no_detectors", "all_detectors", "all_detectors_not_split", "all_detectors_inline"):
        x = tp[name]
        t.add_row(labels.get(name, name.replace("_", " ")), f"{x['events']:,}", f"{x['seconds']:.2f}", f"{x['events_per_s']:,}",
                  f"{x['events_per_s'] / base:.2f}×")
    console.print(t)
    s = Table(title="detector state per tracked key (pickled core ÷ keys)")
    s.add_column("")
    for col in ("replay", "synthetic"):
        s.add_column(f"{col} ({r['state'][col]['keys']:,} keys)", justify="right")
    rep, syn = r["state"]["replay"], r["state"]["synthetic"]
    s.add_row("whole core, bytes/key", f"{rep['bytes_per_key']:,.0f}", f"{syn['bytes_per_key']:,.0f}")
    for name in syn["detectors"]:
        s.add_row(f"  {name}", f"{rep['detectors'].get(name, 0):,.0f}", f"{syn['detectors'][name]:,.0f}")
    s.add_row("  dedupe window", f"{rep['dedupe_bytes_per_key']:,.0f}", f"{syn['dedupe_bytes_per_key']:,.0f}")
    console.print(s)
    snap = syn.get("snapshot", {})
    if "forked_wait_s" in snap:
        console.print(f"snapshot of the synthetic state: detection waits {snap['in_process_wait_s']:.2f} s in process, "
                      f"{snap['forked_wait_s']:.3f} s forked (the child takes {snap['forked_child_s']:.2f} s)")
    console.print(f"peak RSS {r['peak_rss_mb']:,.0f} MB")


def register(app) -> None:
    import typer

    def bench_core(
        keys: int = typer.Option(300, "--keys", help="simulated keys for the throughput runs"),
        days: float = typer.Option(1.0, "--days", help="days of simulated traffic"),
        state_keys: int = typer.Option(100_000, "--state-keys", help="keys for the state-size measurement"),
        repeat: int = typer.Option(1, "--repeat", help="throughput runs; best is reported"),
        seed: int = typer.Option(1, "--seed"),
        json_out: Path = typer.Option(Path("bench_core.json"), "--json-out", help="results as JSON"),
    ) -> None:
        """Detection-core events/s (vs decode only and no detectors), state bytes per key, peak RSS."""
        from keywatch.cli import load_settings

        run_core_bench(load_settings(), keys=keys, days=days, seed=seed, state_keys=state_keys, repeat=repeat,
                       json_out=json_out)

    app.command("bench-core")(bench_core)


def run_core_figures(data_dir: Path, *, state_keys: int, replay_keys: int, replay_days: float, repeat: int = 1,
                     busy_keys: int = 0, busy_minutes: int = 150, idle_keys: int = 0, idle_waves: int = 10,
                     gateway_keys: int = 0) -> dict:
    """bench-core's state, peak RSS and replay figures, and resident memory, in child processes.
    Replay is timed `repeat` times and the fastest reported (as `timeit` does: on a shared machine
    the slower runs measure the neighbours)."""
    env = {**os.environ, "KEYWATCH_DATA_DIR": str(data_dir)}

    def child(call: str, **more: str) -> dict:  # `keywatch.<call>` in a child process, its JSON result
        code = f"import json; from keywatch import bench_core, bench_memory, bench_spill, bench_window; print(json.dumps({call}))"
        out = subprocess.run([sys.executable, "-c", code], env={**env, **more}, capture_output=True, check=True, timeout=1800)
        return json.loads(out.stdout.decode().strip().splitlines()[-1])

    r = child(f"bench_core.run_core_bench(None, keys={replay_keys}, days={replay_days}, state_keys={state_keys}, "
              f"repeat={repeat}, quiet=True)")
    resident = child(f"bench_memory.resident_growth({state_keys})")  # fresh processes: their own growth
    busy = child(f"bench_memory.resident_busy({busy_keys}, {busy_minutes})") if busy_keys else {}
    if busy:  # the same keys, each alone in its project: what a project's state adds to a key
        busy["solo"] = child(f"bench_memory.resident_busy({busy_keys}, {busy_minutes}, projects={busy_keys})")
    idle = child(f"bench_memory.resident_idle({idle_keys}, {idle_waves})") if idle_keys else {}
    if idle:  # the same keys with idle keys' state kept unpacked: the baseline of that figure
        idle["unpacked"] = child(f"bench_memory.resident_idle({idle_keys}, {idle_waves})", KEYWATCH_KEY_COLD_AFTER_S="0")
        # … and packed but held in memory, as until session 26: the baseline of the spill file
        idle["in_memory"] = child(f"bench_memory.resident_idle({idle_keys}, {idle_waves})", KEYWATCH_IDLE_SPILL_DIR="memory")
    gateway = child(f"bench_memory.resident_gateway({gateway_keys})") if gateway_keys else {}
    spill = child(f"bench_spill.spill_pause({idle_keys})") if idle_keys else {}  # as many values as idle keys
    window = child("bench_window.window_report()") if busy_keys else {}  # a project's spend series over days
    syn, rep = r["state"]["synthetic"], r["throughput"]["all_detectors"]
    return {"state_keys": syn["keys"], "bytes_per_key": syn["bytes_per_key"], "core_bytes": syn["core_bytes"],
            "peak_rss_mb": r["peak_rss_mb"], "resident_bytes_per_key": resident["resident_bytes_per_key"],
            "resident_mb": resident["resident_mb"], "dedupe_window_mb": resident.get("dedupe_window_mb"),
            "untrimmed_bytes_per_key": resident.get("untrimmed_bytes_per_key"), "busy": busy, "idle": idle, "gateway": gateway, "spill": spill, "window": window, "replay_events": rep["events"], "replay_seconds": rep["seconds"],
            "replay_events_per_s": rep["events_per_s"], "replay_repeat": repeat,
            "replay_reader_process": r["throughput"].get("reader_process", False),
            "replay_split": r["throughput"].get("split", False),
            "replay_not_split_events_per_s": r["throughput"]["all_detectors_not_split"]["events_per_s"],
            "replay_inline_events_per_s": r["throughput"]["all_detectors_inline"]["events_per_s"],
            "replay_decode_only_events_per_s": r["throughput"]["decode_only"]["events_per_s"],
            "snapshot": syn.get("snapshot", {})}
