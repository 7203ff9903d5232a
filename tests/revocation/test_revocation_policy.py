"""Policy parsing and matching, and the guard's limits (pure: no server, no ClickHouse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywatch.sinks.revocation.guard import Guard
from keywatch.sinks.revocation.policy import Policy, PolicyError

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "revocation.example.yaml"


def test_example_policy_loads():
    p = Policy.load(EXAMPLE)
    assert p.match("key_theft", "anthropic", "team-a", "high", 0.85).name == "stolen-key-high"
    assert p.match("key_theft", "openai", "team-a", "high", 0.85).name == "openai-theft-delete"
    assert p.match("key_theft", "anthropic", "sandbox-1", "critical", 1.0).action == "none"
    assert p.match("cost_spike", "anthropic", "team-a", "high", 0.99) is None
    assert p.is_protected("openai", "key_prod_7", None) and p.is_protected("anthropic", "k", "payments-eu")
    assert not p.is_protected("anthropic", "k", "team-a")
    assert p.adapters == {"internal-gateway": "webhook"} and p.breaker_window_s == 600


@pytest.mark.parametrize("bad, message", [
    ({"rules": [{"name": "r", "action": "nuke"}]}, "action must be one of"),
    ({"rules": [{"name": "r", "action": "disable", "min_severity": "huge"}]}, "min_severity"),
    ({"rules": [{"name": "r", "action": "disable", "min_score": 2}]}, "min_score"),
    ({"rules": [{"name": "r", "action": "disable", "kinds": "key_theft", "typo": 1}]}, "unknown field"),
    ({"rules": [{"name": "r", "action": "disable"}, {"name": "r", "action": "none"}]}, "unique"),
    ({"protected": [{"provider": "openai"}]}, "key_id or a project"),
    ({"limits": {"per_hour": -1}}, "integer"),
    ({"circuit_breaker": {"window": "soon"}}, "not a duration"),
    ({"dry_run": "yes"}, "true or false"),
    ({"rulez": []}, "unknown field"),
])
def test_invalid_policies_fail_at_load(bad, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(bad)


def test_policy_file_errors_name_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("rules: [ {name: x, action: disable")
    with pytest.raises(PolicyError, match="p.yaml"):
        Policy.load(f)
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.yaml")


def test_guard_breaker_and_cooldown():
    t = [1000.0]
    g = Guard(Policy(breaker_max_actions=2, breaker_window_s=60, breaker_open_s=300, cooldown_s=100), clock=lambda: t[0])
    for k in ("a", "b"):
        assert g.check("p", k) == (None, "")
        g.record_action("p", "openai", k)
    verdict, reason = g.check("p", "c")
    assert verdict == "circuit_open" and reason.startswith("tripped")
    assert g.cooling_down("openai", "a") == 100
    t[0] += 200
    assert g.check("p", "c")[0] == "circuit_open" and g.cooling_down("openai", "a") == 0
    t[0] += 200
    assert g.check("p", "c") == (None, "")
