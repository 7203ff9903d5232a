"""Runaway loops in `keywatch simulate` output (same key, address and SDK; ×20+ calls for ~30
minutes, often on a cheap model) raise a key-level `cost_spike` within 5 minutes of event time,
with the key as the top root cause, and nothing on the untouched keys."""

from __future__ import annotations


def test_simulated_runaway_loops_are_cost_spikes_within_5_minutes(make_settings, tmp_path):
    from keywatch.scenario_eval import run_one
    from keywatch.simulate import SimConfig

    cfg = SimConfig(keys=14, projects=3, days=2.2, seed=21, warmup_days=1.3, incidents=["runaway_loop"] * 4)
    run = run_one(cfg, make_settings(), tmp_path)
    spikes = [a for a in run["alerts"] if a["kind"] == "cost_spike" and a["key_id"]]
    loops = run["truth"]
    assert len(loops) == 4
    for t in loops:
        mine = [a for a in spikes if a["key_id"] == t["key_id"] and a["detected_at_ms"] >= t["first_event_ts"]]
        assert mine, f"loop on {t['key_id']} not detected"
        first = min(mine, key=lambda a: a["detected_at_ms"])
        assert first["detected_at_ms"] - t["first_event_ts"] <= 300_000
        assert first["details"]["root_cause"]["keys"][0]["value"] == t["key_id"]
        assert first["started_at_ms"] <= t["first_event_ts"] + 60_000
    looped = {t["key_id"] for t in loops}
    assert not [a for a in spikes if a["key_id"] not in looped]
    assert not [a for a in run["alerts"] if a["kind"] == "key_theft" and a["severity"] in ("high", "critical")]
