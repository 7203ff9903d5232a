"""A split replay (keywatch/replay_batches.py) writes one core's files, only sooner.

`keywatch replay` with a reader process runs cost spikes, budgets, billing and telemetry health
in the reader, beside key theft and gateway bypass here. The same input — a simulated stream
with a key theft (whose open incident keeps the key's cost series from learning: the reader
must get each batch's view of this process's incident book), a runaway loop, daily budgets and
bad lines — replayed by one core inline, by a reader process without the split and with it:
byte-identical alerts and dead letters, and the same summary. Either side failing raises in the
caller and leaves no reader process behind.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.procs import child_pids
from keywatch.replay import replay
from keywatch.replay_batches import KEY_SIDE, JoinedBook
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, write_jsonl
from keywatch.stream.decode import EventDecoder

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the reader process forks")


def _input(tmp_path: Path) -> tuple[Path, Settings]:
    src = tmp_path / "events.jsonl"
    write_jsonl(SimConfig(keys=9, projects=2, days=1.2, seed=5, incidents=["runaway_loop", "loud_burst"], warmup_days=0.9), src)
    lines = src.read_bytes().splitlines()
    projects = sorted({orjson.loads(x)["project"] for x in lines[:2000]})
    for i, bad in enumerate([b"not json", orjson.dumps({"kind": "usage", "event_id": "b1", "ts": "never"})]):
        lines.insert(3000 + i * 4000, bad)
    src.write_bytes(b"\n".join(lines) + b"\n")
    budgets = tmp_path / "budgets.yaml"  # ~a third of a normal day's spend: crossed every day
    budgets.write_text("budgets:\n" + "".join(f"  - {{project: {p}, amount_usd: 2, period: day}}\n" for p in projects))
    return src, Settings.from_env({"KEYWATCH_BUDGETS_FILE": str(budgets)})


def _run(src: Path, s: Settings, out: Path, core=None, **kw):
    core = core if core is not None else build_core(s)
    summary = replay([src], out, core, EventDecoder.from_settings(s, streaming=False),
                     dead_letters_out=out.with_suffix(".dead.jsonl"), chunk_lines=700, **kw)
    return summary, out.read_bytes(), out.with_suffix(".dead.jsonl").read_bytes(), core


def test_split_replay_writes_one_cores_files(tmp_path):
    src, s = _input(tmp_path)
    one, a_one, d_one, _ = _run(src, s, tmp_path / "one.jsonl", reader_process=False)
    proc, a_proc, d_proc, _ = _run(src, s, tmp_path / "proc.jsonl", reader_process=True, split=False)
    split, a_split, d_split, core = _run(src, s, tmp_path / "split.jsonl", reader_process=True)  # split by default
    assert (one.split, proc.split, split.split) == (False, False, True)
    assert {"key_theft", "cost_spike", "budget"} <= set(one.alerts_by_kind), one.alerts_by_kind
    assert a_one == a_proc == a_split
    assert d_one == d_proc == d_split and one.dead_letters == 2
    for f in ("lines", "events", "duplicates", "dead_letters", "dead_by_reason", "alerts", "alerts_by_kind"):
        assert getattr(one, f) == getattr(split, f), f
    assert {d.name for d in core.detectors} == set(KEY_SIDE)  # the rest ran in the reader


def test_the_reader_needs_each_batchs_incidents(tmp_path, monkeypatch):
    """Without this process's incidents the reader's cost series learn through the key theft:
    the input above would then give other cost-spike alerts (so the first test can fail)."""
    src, s = _input(tmp_path)
    _, a_one, _, _ = _run(src, s, tmp_path / "one.jsonl", reader_process=False)
    monkeypatch.setattr(JoinedBook, "open_keys_at", lambda self, at_ms: super(JoinedBook, self).open_keys_at(at_ms))
    _, a_blind, _, _ = _run(src, s, tmp_path / "blind.jsonl", reader_process=True)
    assert a_one != a_blind
    spikes = lambda raw: [a for a in map(orjson.loads, raw.splitlines()) if a["kind"] == "cost_spike"]  # noqa: E731
    assert spikes(a_one) != spikes(a_blind)


class _Boom:
    def __init__(self, name: str, after: int) -> None:
        self.name, self.after, self.n = name, after, 0

    def process(self, batch, ctx) -> None:
        self.n += 1
        if self.n > self.after:
            raise ValueError(f"{self.name} failed")


@pytest.mark.parametrize("side", ["budget", "key_theft"])
def test_a_failing_side_raises_here_and_stops_the_reader(tmp_path, side):
    src, s = _input(tmp_path)
    core = build_core(s)
    core.detectors = [d for d in core.detectors if d.name != side] + [_Boom(side, 3)]
    with pytest.raises(ValueError, match=f"{side} failed"):
        _run(src, s, tmp_path / "out.jsonl", core=core, reader_process=True)
    assert not [p for p in multiprocessing.active_children() if p.name == "keywatch-replay-reader"]
    assert not any(d.name == "book_tap" for d in core.detectors)


def test_split_needs_a_core_it_can_place(tmp_path):
    src, s = _input(tmp_path)
    core = build_core(s)
    core.detectors.append(_Boom("something_else", 0))
    with pytest.raises(ValueError, match="splittable"):
        _run(src, s, tmp_path / "out.jsonl", core=core, reader_process=True, split=True)
    summary, *_ = _run(src, s, tmp_path / "out.jsonl", core=build_core(s), reader_process=True, split=None)
    assert summary.split


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has exited
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_replay_killed_with_9_leaves_no_reader(tmp_path):
    """The reader waits on a pipe that never ends; its replay is killed with -9: it goes too."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR)  # a writer that stays: the reader blocks, never sees the end
    try:
        os.write(held, orjson.dumps({"kind": "usage", "event_id": "e1", "ts": 1_795_622_400_000, "provider": "openai",
                                     "key_id": "k", "model": "gpt-4o"}) + b"\n")
        proc = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "replay", str(fifo), "--alerts-out",
                                 str(tmp_path / "out.jsonl"), "--reader-process"], env={**os.environ, "KEYWATCH_DATA_DIR": str(tmp_path)})
        deadline = time.monotonic() + 60
        while not (kids := child_pids(proc.pid)) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        assert kids, "no reader process started"
        time.sleep(0.5)  # the reader is past its start-up
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not all(map(_gone, kids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_gone, kids)), kids
    finally:
        os.close(held)
