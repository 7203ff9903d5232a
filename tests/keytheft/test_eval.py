"""The scenario suite, small: every attack style through replay, targets asserted."""

from __future__ import annotations


def test_quick_scenario_suite_meets_targets(make_settings, tmp_path):
    from keywatch.scenario_eval import run_suite

    report = run_suite(make_settings(), quick=True, out=tmp_path / "report.json")
    for style, v in report["styles"].items():
        if style == "low_and_slow":
            assert v["detection_rate_1h"] >= 0.7, (style, v)
        else:
            assert v["detection_rate"] >= 0.95 and v["median_ttd_s"] <= 120, (style, v)
    assert report["benign"]["per_1000_key_days"] <= 1.0, report["benign"]
    assert (tmp_path / "report.json").exists()


def test_quick_scenario_suite_through_the_worker_layout(make_settings):
    """The same suite through 4 partition cores and the worker-wide core, as the worker runs."""
    from keywatch.scenario_eval import run_suite

    replayed = run_suite(make_settings(), quick=True)
    layout = run_suite(make_settings(), quick=True, partitions=4)
    assert layout["suite"]["partitions"] == 4 and layout["targets_met"]
    assert {s: v["detected"] for s, v in layout["styles"].items()} == {s: v["detected"] for s, v in replayed["styles"].items()}
    assert layout["benign"]["false_high_critical"] == replayed["benign"]["false_high_critical"] == 0
