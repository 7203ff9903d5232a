"""The worker's garbage-collector setting (`KEYWATCH_GC_THRESHOLD`, stream/worker.py `tune_gc`)."""

from __future__ import annotations

import gc

from keywatch.stream.worker import tune_gc


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
