"""Poisoned telemetry cannot revoke legitimate keys en masse.

Whoever can write to the input topic can make 200 keys *look* stolen at once (new networks,
a new country, an unknown client, expensive models). End to end: crafted events → the real
detection core (`build_core`) → its alerts → the revocation engine, live (revocation enabled),
with a permissive policy (every alert kind, any severity), against a local provider server.
However many alerts, the provider sees at most the configured number of calls, the circuit
breaker is open afterwards (and stays open for new alerts), and every decision is audited.
"""

from __future__ import annotations

import asyncio

import pytest

from keywatch.models.events import UsageEvent
from keywatch.models.registry import build_core

T0 = 1_793_577_600_000
N_KEYS = 200


def poisoned_events() -> tuple[list, list]:
    """13 h of one service's normal traffic in a project, then 200 of its keys 'stolen' at once."""
    normal = [UsageEvent(event_id=f"n{i}", ts=T0 + i * 60_000, provider="anthropic", key_id=f"apikey_svc{i % 4}",
                         project="proj_a", model="claude-3-5-haiku-20241022", source_ip=f"34.1.2.{i % 8}", country="US",
                         user_agent="anthropic-python/0.40.0", input_tokens=800, output_tokens=200)
              for i in range(13 * 60)]
    start = T0 + 13 * 3_600_000
    attack = [UsageEvent(event_id=f"x{k}-{j}", ts=start + k * 500 + j * 100, provider="anthropic", key_id=f"apikey_v{k}",
                         project="proj_a", model="claude-3-opus-20240229", source_ip=f"{45 + k % 50}.{k}.9.{j}",
                         country=["RU", "CN", "BR"][k % 3], user_agent="python-requests/2.31.0",
                         input_tokens=20_000, output_tokens=4000)
              for k in range(N_KEYS) for j in range(3)]
    return normal, attack


@pytest.fixture(scope="module")
def poisoned_alerts():
    from keywatch.settings import Settings

    core = build_core(Settings.from_env({}))
    normal, attack = poisoned_events()
    core.process(normal)
    out = core.process(attack)
    alerts = {a.alert_id: a for a in out.alerts if a.kind == "key_theft"}  # latest version of each
    return list(alerts.values())


def test_the_crafted_flood_does_look_like_theft_on_many_keys(poisoned_alerts):
    keys = {a.key_id for a in poisoned_alerts}
    assert len(keys) >= N_KEYS // 2, f"only {len(keys)} keys alerted: the test would prove nothing"


@pytest.mark.parametrize("breaker, max_calls", [
    ("{window: 10m, max_actions: 6, max_keys: 1000, open_for: 1h}", 6),  # trips on actions
    ("{window: 10m, max_actions: 100, max_keys: 8, open_for: 1h}", 8),  # trips on distinct flagged keys
])
def test_poisoned_flood_is_capped_by_the_breaker(poisoned_alerts, breaker, max_calls, ch_db, make_settings, provider, tmp_path):
    from keywatch.sinks.revocation.service import build_engine

    client, base = ch_db
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
cooldown: 1h
limits: {{per_hour: 50, per_project_per_hour: 50}}
circuit_breaker: {breaker}
rules:
  - {{name: anything, kinds: ["*"], min_severity: low, action: disable}}
""")
    from revocation_servers import ANTHROPIC_ADMIN_KEY

    settings = make_settings(CLICKHOUSE_DATABASE=base.clickhouse_database, REVOCATION_ENABLED="true",
                             REVOCATION_POLICY_FILE=str(policy), REVOCATION_ANTHROPIC_BASE_URL=provider.url,
                             REVOCATION_ANTHROPIC_ADMIN_KEY=ANTHROPIC_ADMIN_KEY)
    for k in range(N_KEYS):
        provider.anthropic_keys[f"apikey_v{k}"] = "active"
    engine = build_engine(settings, client)
    decisions = []
    for i in range(0, len(poisoned_alerts), 25):  # the worker hands alerts over batch by batch
        decisions += asyncio.run(engine.handle(poisoned_alerts[i:i + 25]))

    calls = provider.calls("/v1/organizations/api_keys/")
    assert 1 <= len(calls) <= max_calls
    disabled = [k for k, v in provider.anthropic_keys.items() if v != "active"]
    assert len(disabled) == len(calls) <= max_calls
    assert engine.guard.open_until > engine.clock()  # the breaker is open …
    outcomes = [d.outcome for d in decisions]
    assert outcomes.count("executed") == len(calls) and outcomes.count("circuit_open") >= len(poisoned_alerts) - 2 * max_calls
    # … and stays open for the next alert, even for a brand-new engine (a restart re-learns it).
    late = asyncio.run(build_engine(settings, client).handle([poisoned_alerts[-1]]))
    assert [d.outcome for d in late] in ([], ["circuit_open"])  # already decided, or refused
    assert len(provider.calls("/v1/organizations/api_keys/")) == len(calls)
    # Every decision is in the audit table, with its reason.
    db = base.clickhouse_database
    rows = client.query(f"SELECT outcome, count() FROM {db}.revocations FINAL GROUP BY outcome").result_rows
    by_outcome = dict(rows)
    assert by_outcome.get("executed", 0) == len(calls)
    assert sum(by_outcome.values()) == len({d.decision_id for d in decisions})
    tripped = client.query(f"SELECT count() FROM {db}.revocations WHERE outcome = 'circuit_open' AND reason != ''").result_rows
    assert tripped[0][0] >= 1
