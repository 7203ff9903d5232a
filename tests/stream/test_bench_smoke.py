"""`keywatch bench --quick`: every figure of the full bench is measured and lands in the JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from keywatch.procs import cpu_seconds


def test_bench_quick_writes_every_figure(tmp_path: Path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "KEYWATCH_DATA_DIR": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-m", "keywatch.cli", "bench", "--quick", "--json-out", str(out)],
                   env=env, check=True, timeout=300, capture_output=True)
    r = json.loads(out.read_text())
    for run in ("worker_batched", "worker_live", "worker_single", "baseline"):
        assert r[run]["events"] > 0 and r[run]["events_per_s"] > 0, run
        # CPU of the whole process over the timed span: positive, and busy cores no more than
        # the machine has (with slack for timer granularity): a wrong span or unit breaks it
        assert 0 < r[run]["cpu_us_per_event"] and 0 < r[run]["cores"] <= (os.cpu_count() or 1) * 1.5, (run, r[run])
    assert r["worker_batched"]["events_per_message"] == 100 and r["worker_single"]["events_per_message"] == 1
    # the live-rate worker and the baseline are run twice each (--quick), alternating: each figure
    # is the median of its runs, within their range, and every baseline run reads the whole topic
    for run in ("worker_live", "baseline"):
        fig = r[run]
        assert fig["runs"] == len(fig["each"]) == 2, fig
        assert fig["range"][0] <= fig["events_per_s"] <= fig["range"][1], fig
        rates = [x["events_per_s"] for x in fig["each"]]
        assert fig["range"] == [min(rates), max(rates)], fig
    assert [x["events"] for x in r["baseline"]["each"]] == [r["worker_batched"]["events"]] * 2
    assert r["ratio_live"] == round(r["worker_live"]["events_per_s"] / r["baseline"]["events_per_s"], 3)
    assert r["ratio_live_first_runs"] == round(r["worker_live"]["each"][0]["events_per_s"] / r["baseline"]["each"][0]["events_per_s"], 3)
    assert r["ratio"] > 0 and r["ratio_single"] > 0 and r["ratio_live"] > 0
    # the scale-out runs: every event through the `all` workers of one group; with split tiers,
    # through the `keys` workers once and through the `projects` worker once more
    n = r["worker_live"]["events"]
    for run, tiers in (("worker_group", ["all", "all"]), ("worker_tiers", ["keys", "keys", "projects"])):
        w = r[run]
        assert sorted(x["tier"] for x in w["per_worker"].values()) == tiers, w
        assert sum(x["events"] for x in w["per_worker"].values() if x["tier"] != "projects") == n, w
        assert [x["events"] for x in w["per_worker"].values() if x["tier"] == "projects"] in ([], [n]), w
        assert w["events_per_s"] > 0 and r[f"ratio_{run[7:]}"] > 0
    if Path("/proc/self/stat").exists():  # the broker's CPU over every run, medians as the rates'
        runs = [r[k] for k in ("worker_batched", "worker_single", "worker_group", "worker_tiers")]
        runs += r["worker_live"]["each"] + r["baseline"]["each"]
        assert all(x["broker_cpu_us_per_event"] >= 0 for x in runs), runs
        assert sum(x["broker_cpu_us_per_event"] for x in runs) > 0, runs  # it served every fetch
        for run in ("worker_live", "baseline"):
            assert r[run]["broker_cpu_us_per_event"] == statistics.median(
                x["broker_cpu_us_per_event"] for x in r[run]["each"]), r[run]
    lat = r["latency"]
    assert lat["alerts"] > 0 and 0 <= lat["p50_s"] <= lat["p99_s"], lat
    core = r["core"]
    assert core["state_keys"] > 0 and core["bytes_per_key"] > 0 and core["peak_rss_mb"] > 0
    # live objects take more room than their pickles (Python object headers, arrays' spare rows)
    assert core["resident_bytes_per_key"] > core["bytes_per_key"] and core["resident_mb"] > 0
    busy = core["busy"]  # keys busy for over two hours: the root-cause window full
    assert busy["keys"] == 200 and busy["minutes"] == 130 and busy["resident_bytes_per_key"] > 0, busy
    solo = busy["solo"]  # the same keys, each alone in its project
    assert solo["keys"] == 200 and solo["projects"] == 200 and solo["resident_bytes_per_key"] > 0, solo
    idle = core["idle"]  # two waves of 1,000 new keys and one that passes the first wave's time; packed and not
    assert idle["keys"] == 2_001 and idle["waves"] == 2 and idle["resident_bytes_per_key"] > 0, idle
    assert idle["unpacked"]["keys"] == 2_001 and idle["unpacked"]["resident_bytes_per_key"] > 0, idle
    gateway = core["gateway"]  # keys seen both ways every hour for 3 days
    assert gateway["keys"] == 50 and gateway["hours"] == 75 and gateway["resident_bytes_per_key"] > 0, gateway
    window = core["window"]  # a spend series' window maxima over days, in blocks and a row each (exact)
    alt, exact = window["alternating"], window["alternating_exact"]
    assert exact["1 day"]["entries"] > 5 * exact["2.5 hours"]["entries"] > 0, window  # a falling surprise: nearly every row
    assert 0 < alt["3.5 days"]["entries"] <= 10 * (-(-5000 // window["block"]) + 1) < exact["3.5 days"]["entries"], window
    assert window["constant"]["1 week"]["entries"] == window["constant_exact"]["1 week"]["entries"] == 10, window
    assert core["replay_events_per_s"] > 0
    if hasattr(os, "fork"):  # a forked snapshot's wait is the fork, well under pickling in process
        snap = core["snapshot"]
        assert 0 < snap["forked_wait_s"] < snap["forked_child_s"] and snap["in_process_wait_s"] > 0, snap


def test_bench_sink_writes_every_row_both_ways(tmp_path: Path):
    """`keywatch bench-sink`: the same events written as JSON (the sink) and as Native columns, each
    way storing every row, with Python and wall time per event."""
    out = tmp_path / "sink.json"
    env = {**os.environ, "KEYWATCH_DATA_DIR": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-m", "keywatch.cli", "bench-sink", "--batch-events", "300", "--batches", "2",
                    "--json-out", str(out)], env=env, check=True, timeout=300, capture_output=True)
    r = json.loads(out.read_text())
    assert r["json"]["rows"] == r["native"]["rows"] == 600
    for way in ("json", "native"):
        assert 0 < r[way]["python_us_per_event"] and 0 < r[way]["write_us_per_event"], r


def test_cpu_seconds_reads_a_process_own_cpu():
    """`cpu_seconds` (the broker's and `db serve`'s CPU in the bench): a process's CPU grows while
    it computes; a process that is gone has none."""
    if not Path("/proc/self/stat").exists():
        assert cpu_seconds(os.getpid()) is None
        return
    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert cpu_seconds(os.getpid()) >= before + 0.03
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    assert cpu_seconds(int(done.stdout)) is None
