"""The garbage-collector setting (`KEYWATCH_GC_THRESHOLD`, keywatch/gctune.py): the worker's for its
whole life, `keywatch replay`'s for the call only."""

from __future__ import annotations

import gc

from pathlib import Path

import pytest

from keywatch.gctune import fewer_collections, tune_gc
from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.simulate import SimConfig, write_jsonl
from keywatch.stream.decode import EventDecoder


def test_tune_gc_raises_the_threshold_and_freezes_start_up_objects(make_settings):
    settings = make_settings()
    assert settings.gc_threshold == 50_000
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        tune_gc(settings.gc_threshold)
        assert gc.get_threshold() == (50_000, 20, 100)
        assert gc.get_freeze_count() > frozen + 1000  # this process's modules, at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_zero_keeps_pythons_defaults(make_settings):
    settings = make_settings(GC_THRESHOLD="0")
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    tune_gc(settings.gc_threshold)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_a_call_leaves_the_threshold_as_it_found_it_even_when_it_fails():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with fewer_collections(50_000):
            assert gc.get_threshold() == (50_000, 20, 100)
            raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_replay_gives_the_same_alerts_with_fewer_collections(make_settings, tmp_path: Path):
    settings = make_settings()
    src = tmp_path / "events.jsonl"
    write_jsonl(SimConfig(keys=6, days=0.3, seed=3, incidents=["loud_burst"], warmup_days=0.2), src)
    before = gc.get_threshold()
    out = {}
    for th in (0, settings.gc_threshold):
        with fewer_collections(th):  # as `keywatch replay` runs it
            s = replay([src], tmp_path / f"alerts{th}.jsonl", build_core(settings),
                       EventDecoder.from_settings(settings, streaming=False))
        assert gc.get_threshold() == before
        out[th] = (s.events, (tmp_path / f"alerts{th}.jsonl").read_bytes())
    assert out[0] == out[settings.gc_threshold] and out[0][0] > 1000 and out[0][1]
