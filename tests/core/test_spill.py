"""Idle keys' packed state on disk (models/spill.py): values come back exactly, expiry reads
memory only, compaction keeps every live value, a forked snapshot sees the state at its fork,
a file that fails leaves values in memory, and snapshots hold plain dicts."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import textwrap

import pytest

from keywatch.models import spill
from keywatch.models.spill import MEMORY, SpillDict


def _head(v) -> int:
    first = v if v.__class__ is bytes else v[0]
    return int.from_bytes(first[:8], "little", signed=True)


def _value(rng: random.Random, i: int):
    blob = (i - 500).to_bytes(8, "little", signed=True) + rng.randbytes(rng.randrange(0, 400))
    return blob if rng.random() < 0.7 else tuple([blob] + [rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(1, 4))])


def _count(v) -> int:
    return len(v) if v.__class__ is tuple else 1


def test_values_heads_and_counts_follow_a_plain_dict(tmp_path):
    rng, d, ref = random.Random(7), SpillDict(_head, directory=str(tmp_path)), {}
    for step in range(5_000):
        k = ("openai", f"k{rng.randrange(800)}")
        if rng.random() < 0.3 and k in ref:
            assert d.pop(k) == ref.pop(k)
        else:
            d[k] = ref[k] = _value(rng, step)
    assert dict(d.items()) == ref and len(d) == len(ref) and set(d) == set(ref)
    assert dict(d.heads()) == {k: _head(v) for k, v in ref.items()}  # negative heads too
    assert d.items_held() == sum(map(_count, ref.values()))
    assert d.get(("openai", "nope")) is None and d.pop(("openai", "nope"), 5) == 5
    end, dead = d.file_bytes()
    assert end > 0 and 0 < dead < end and not d._mem  # in the file, not in memory


def test_compaction_keeps_every_live_value(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "COMPACT_MIN", 10_000)
    rng, d, ref = random.Random(3), SpillDict(_head, directory=str(tmp_path)), {}
    ends = []
    for step in range(20_000):
        k = f"k{rng.randrange(300)}"
        d[k] = ref[k] = _value(rng, step)  # a replaced value leaves dead bytes
        ends.append(d.file_bytes()[0])
    assert min(ends[-5_000:]) < max(ends)  # compacted: the file started again
    end, dead = d.file_bytes()
    assert dead <= max(10_000, end - dead) and dict(d.items()) == ref
    assert dict(d.heads()) == {k: _head(v) for k, v in ref.items()}


def _in_old_file(d: SpillDict) -> int:
    return sum(1 for p in d._index.values() if p & spill._GEN != d._gen)


def test_a_compaction_moves_a_few_values_per_change_and_reads_both_files_meanwhile(tmp_path, monkeypatch):
    """The pause is bounded: each change of the mapping moves at most `COMPACT_STEP` values to
    the new file; until the last has moved, every value still reads back from its own file."""
    monkeypatch.setattr(spill, "COMPACT_MIN", 10_000)
    monkeypatch.setattr(spill, "COMPACT_STEP", 7)
    rng, d, ref = random.Random(5), SpillDict(_head, directory=str(tmp_path)), {}
    started = finished = 0
    for step in range(6_000):
        k = f"k{rng.randrange(300)}"
        before, was_old = _in_old_file(d), d.compacting
        if rng.random() < 0.2 and k in ref:
            assert d.pop(k) == ref.pop(k)
        else:
            d[k] = ref[k] = _value(rng, step)
        now = _in_old_file(d)
        if not was_old and d.compacting:
            started += 1
            assert now >= len(d) - 2 * 7 - 1  # started: nearly every value still in the old file
        elif was_old:
            assert before - now <= 2 * 7 + 1  # a replacement is a delete and a set: two steps
            finished += not d.compacting
        if step % 97 == 0:
            assert dict(d.items()) == ref and d.items_held() == sum(map(_count, ref.values()))
            end, dead = d.file_bytes()
            assert end - dead == sum(len(spill._encode(v)[0]) for v in ref.values())  # both files' live bytes
    assert started >= 3 and finished >= 2
    assert dict(d.items()) == ref and dict(d.heads()) == {k: _head(v) for k, v in ref.items()}


def test_all_at_once_is_the_step_0(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "COMPACT_MIN", 2_000)
    monkeypatch.setattr(spill, "COMPACT_STEP", 0)
    d = SpillDict(len, directory=str(tmp_path))
    for i in range(200):
        d[i % 20] = bytes([i]) * 100
        assert not d.compacting and _in_old_file(d) == 0
    assert d.file_bytes()[0] < 200 * 100 and dict(d.items()) == {i: bytes([180 + i]) * 100 for i in range(20)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reads_the_state_at_its_fork(tmp_path, monkeypatch):
    """What a forked snapshot (stream/snapfork.py) relies on: the parent appends, replaces,
    deletes and compacts after the fork; the child still reads what there was at the fork."""
    monkeypatch.setattr(spill, "COMPACT_MIN", 2_000)
    monkeypatch.setattr(spill, "COMPACT_STEP", 3)
    rng, d = random.Random(11), SpillDict(_head, directory=str(tmp_path))
    for i in range(500):
        d[f"k{i}"] = _value(rng, i)
    for i in range(5_000):  # until a compaction is under way: values in both files at the fork
        d[f"k{i % 500}"] = _value(rng, 600 + i)
        if d.compacting and 100 < _in_old_file(d) < len(d) - 100:
            break
    assert d.compacting
    at_fork = dict(d.items())
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait until the parent has changed everything, then read
        os.close(go_w)
        os.read(go_r, 1)
        with os.fdopen(out_w, "wb") as f:
            f.write(pickle.dumps(dict(d.items())))
        os._exit(0)
    os.close(go_r)
    os.close(out_w)
    try:
        started = d.compactions
        for i in range(1_500):
            d[f"k{i % 500}"] = _value(rng, 1_000 + i)
            if i % 3 == 0:
                del d[f"k{i % 500}"]
        compacted = d.compactions > started  # another began: the one under way at the fork ended, its file closed
    finally:  # the child reads now, whatever happened here
        os.write(go_w, b"x")
        os.close(go_w)
        with os.fdopen(out_r, "rb") as f:
            seen = pickle.loads(f.read())
        os.waitpid(pid, 0)
    assert compacted
    assert seen == at_fork and dict(d.items()) != at_fork


def test_a_directory_that_cannot_hold_the_file_leaves_values_in_memory(tmp_path, caplog):
    d = SpillDict(_head, directory=str(tmp_path / "missing"))
    d["a"] = b"\x05" + bytes(7) + b"x"
    assert d["a"] == b"\x05" + bytes(7) + b"x" and dict(d.heads()) == {"a": 5} and d.file_bytes() == (0, 0)
    assert "stays in memory" in caplog.text
    m = SpillDict(_head, directory=MEMORY)
    m["a"] = bytes(8)
    assert m._file is None and m["a"] == bytes(8)


def test_a_full_disk_mid_run_keeps_what_was_written_and_the_rest_in_memory(tmp_path):
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes `pwrite` fail with EFBIG,
    as a full disk fails with ENOSPC; values before it stay in the file, later ones in memory."""
    code = textwrap.dedent(f"""
        import resource, signal
        from keywatch.models.spill import SpillDict
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        d = SpillDict(len, directory={str(tmp_path)!r})
        for i in range(40):
            d[i] = bytes([i]) * 300
        assert all(d[i] == bytes([i]) * 300 for i in range(40)), "a value changed"
        assert 0 < len(d._index) < 40 and len(d._mem) == 40 - len(d._index), (len(d._index), len(d._mem))
        d[3] = b"new"; del d[39]
        assert d[3] == b"new" and 39 not in d and len(d) == 39 and d.items_held() == 39
        print("ok", len(d._index))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok") and "stays in memory" in out.stderr


def test_detectors_pickle_plain_dicts_and_load_them_back_to_disk():
    """Snapshots name no class of models/spill.py (the code before it loads them), and a loaded
    snapshot's packed state goes back to a file."""
    from keywatch.bench_core import _settings
    from keywatch.bench_memory import idle_state
    from keywatch.models.keytheft_cold import packed_last_ts

    core = idle_state(_settings(None), 600, waves=2)  # the first wave's 300 keys idle over an hour
    kt, cs = core.detector("key_theft"), core.detector("cost_spike")
    for cold in (kt.cold, cs.cold):
        assert isinstance(cold, SpillDict) and len(cold) >= 300 and cold.file_bytes()[0] > 0 and not cold._mem
    raw = pickle.dumps(core)
    assert b"SpillDict" not in raw and b"keywatch.models.spill" not in raw
    back = pickle.loads(raw)
    kt2, cs2 = back.detector("key_theft"), back.detector("cost_spike")
    assert isinstance(kt2.cold, SpillDict) and isinstance(cs2.cold, SpillDict)
    assert dict(kt2.cold.items()) == dict(kt.cold.items()) and dict(cs2.cold.items()) == dict(cs.cold.items())
    assert dict(kt2.cold.heads()) == {k: packed_last_ts(b) for k, b in kt.cold.items()}
    assert cs2.packed_count() == cs.packed_count() >= 300


@pytest.mark.skipif(not spill.memory_backed("/dev/shm"), reason="needs /dev/shm on tmpfs")
def test_a_spill_directory_held_in_memory_is_named_in_a_warning(tmp_path, caplog, monkeypatch):
    """On tmpfs the packed bytes are in memory again: the operator is told once, and it still works."""
    monkeypatch.setattr(spill, "_WARNED", set())
    d = SpillDict(_head, directory="/dev/shm")
    d["a"] = bytes(8) + b"x"
    d2 = SpillDict(_head, directory="/dev/shm")
    d2["b"] = bytes(8)
    assert d["a"] == bytes(8) + b"x" and d.file_bytes()[0] == 9
    assert caplog.text.count("a filesystem held in memory") == 1 and "KEYWATCH_IDLE_SPILL_DIR" in caplog.text
    if not spill.memory_backed(str(tmp_path)):  # where the temporary directory is on disk: no warning
        caplog.clear()
        SpillDict(_head, directory=str(tmp_path))["c"] = bytes(8)
        assert "held in memory" not in caplog.text
