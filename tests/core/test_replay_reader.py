"""`keywatch replay`'s reader process (keywatch/replay_read.py) changes nothing but the speed.

The same input — a simulated stream with an attack, bad lines, blank lines, secrets in key ids
and in text fields (one scrubbed value longer than its schema bound allows on input), a gzip
file that breaks off part-way, and a file after it — replayed with the reader process and
without: byte-identical alerts and dead-letter files and the same summary. A reader that fails
part-way raises in the caller, and the caller's failure stops the reader.
"""

from __future__ import annotations

import gzip
import multiprocessing
from pathlib import Path

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.replay_read import ReaderProcess, use_reader_process
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, write_jsonl
from keywatch.stream.decode import EventDecoder

GOOD = {"kind": "usage", "event_id": "x1", "ts": 1_795_622_400_000, "provider": "openai", "key_id": "key_abc",
        "model": "gpt-4o"}
TOKEN = "sk-proj-" + "A1b2C3d4E5" * 3  # 38 characters: its fingerprint (27) is shorter …
SHORT = "sk-" + "Zy9" * 7  # … this one's (24 → 27) is longer: a user agent at its 1024 bound grows past it


def _inputs(tmp_path: Path) -> list[Path]:
    sim = tmp_path / "sim.jsonl"
    write_jsonl(SimConfig(keys=12, projects=3, days=0.4, seed=5, incidents=["loud_burst"], warmup_days=0.2), sim)
    lines = sim.read_bytes().splitlines()
    extra = [b"not json", b"", orjson.dumps({**GOOD, "event_id": "x2", "input_tokens": -1}),
             orjson.dumps({**GOOD, "event_id": "x3", "key_id": TOKEN}),
             orjson.dumps({**GOOD, "event_id": "x4", "user_agent": "curl/8 Bearer " + "q" * 30}),
             orjson.dumps({**GOOD, "event_id": "x5", "user_agent": "u" * (1024 - len(SHORT) - 1) + " " + SHORT}),
             b"   ", orjson.dumps([{**GOOD, "event_id": "x6"}, {**GOOD, "event_id": "x7"}])]
    step = len(lines) // len(extra)
    for i, x in enumerate(extra):  # spread over several blocks
        lines.insert(i * step + 7, x)
    sim.write_bytes(b"\n".join(lines) + b"\n")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b"\n".join(lines[:1200]) + b"\n")[:-40] + b"\x1f\x8bjunk")
    after = tmp_path / "after.jsonl"
    after.write_bytes(orjson.dumps({**GOOD, "event_id": "x9"}) + b"\n")
    return [sim, broken, after]


def _run(paths: list[Path], out: Path, process: bool):
    s = Settings.from_env({})
    summary = replay(paths, out, build_core(s), EventDecoder.from_settings(s, streaming=False),
                     dead_letters_out=out.with_suffix(".dead.jsonl"), reader_process=process, chunk_lines=700)
    return summary, out.read_bytes(), out.with_suffix(".dead.jsonl").read_bytes()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the reader process forks")
def test_reader_process_gives_the_same_output(tmp_path):
    paths = _inputs(tmp_path)
    inline, a_in, d_in = _run(paths, tmp_path / "inline.jsonl", False)
    proc, a_pr, d_pr = _run(paths, tmp_path / "proc.jsonl", True)
    assert (inline.reader, proc.reader) == ("inline", "process")
    assert a_in == a_pr and d_in == d_pr
    assert inline.alerts > 0 and b"sk-" not in a_in + d_in
    for f in ("lines", "events", "duplicates", "dead_letters", "dead_by_reason", "alerts_by_kind"):
        assert getattr(inline, f) == getattr(proc, f), f
    assert {"not_json", "validation", "corrupt_file"} <= set(proc.dead_by_reason)


def test_reader_errors_reach_the_caller_and_the_reader_stops(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes((orjson.dumps(GOOD) + b"\n") * 3000)
    reader = ReaderProcess([f, tmp_path / "missing.jsonl"], EventDecoder())
    try:
        with pytest.raises(FileNotFoundError):
            for _ in reader.blocks():
                pass
    finally:
        reader.stop()
    reader = ReaderProcess([f] * 20, EventDecoder())
    next(reader.blocks())
    reader.stop()  # the caller gave up: the reader is stopped, not left behind
    assert not [p for p in multiprocessing.active_children() if p.name == "keywatch-replay-reader"]


def test_small_inputs_are_read_inline(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(orjson.dumps(GOOD) + b"\n")
    assert not use_reader_process([f])
