"""`keywatch replay` end to end through the real CLI: contract behaviour and exit codes."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson

GOOD = {"kind": "usage", "event_id": "e1", "ts": "2026-11-25T16:00:00.123Z", "provider": "openai",
        "key_id": "key_abc", "model": "gpt-4o"}


def run(args, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWATCH_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "keywatch.cli", "replay", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_replay_reads_files_reports_bad_lines_and_exits_zero(tmp_path):
    f1 = tmp_path / "a.jsonl"
    f1.write_bytes(orjson.dumps(GOOD) + b"\nnot json\n" + orjson.dumps({**GOOD, "event_id": "e2", "input_tokens": -1}) + b"\n")
    f2 = tmp_path / "b.jsonl.gz"
    with gzip.open(f2, "wb") as fh:
        fh.write(orjson.dumps([{**GOOD, "event_id": "e3"}, GOOD]) + b"\n")
    out = tmp_path / "alerts.jsonl"
    r = run([str(f1), str(f2), "--alerts-out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.exists()
    dead = [orjson.loads(l) for l in (tmp_path / "alerts.jsonl.dead_letters.jsonl").read_bytes().splitlines()]
    assert [(d["line"], d["reason"]) for d in dead] == [(2, "not_json"), (3, "validation")]
    assert "2" in r.stderr and "duplicates" in r.stderr  # summary printed


def test_replay_fails_on_unreadable_file_and_bad_settings(tmp_path):
    out = tmp_path / "o.jsonl"
    assert run([str(tmp_path / "missing.jsonl"), "--alerts-out", str(out)], tmp_path).returncode != 0
    f = tmp_path / "a.jsonl"
    f.write_bytes(orjson.dumps(GOOD) + b"\n")
    r = run([str(f), "--alerts-out", str(out)], tmp_path, {"KEYWATCH_INCIDENT_QUIET_S": "-5"})
    assert r.returncode != 0 and "KEYWATCH_INCIDENT_QUIET_S" in r.stderr


def test_a_damaged_gzip_file_is_a_dead_letter_and_the_next_file_is_still_read(tmp_path):
    good = gzip.compress(orjson.dumps(GOOD) + b"\n")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(good + b"\x1f\x8bjunk that is not a gzip member")
    f2 = tmp_path / "next.jsonl"
    f2.write_bytes(orjson.dumps({**GOOD, "event_id": "e9"}) + b"\n")
    out = tmp_path / "alerts.jsonl"
    r = run([str(broken), str(f2), "--alerts-out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    dead = [orjson.loads(l) for l in (tmp_path / "alerts.jsonl.dead_letters.jsonl").read_bytes().splitlines()]
    assert [d["reason"] for d in dead] == ["corrupt_file"]
    assert "events" in r.stderr and "2" in r.stderr
