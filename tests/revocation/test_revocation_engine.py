"""The engine end to end: alert → policy → call at a local provider server → audit rows."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keywatch.sinks.revocation.service import RevocationError, RevocationService
from revocation_servers import ALL_SECRETS, Fault, make_alert

POLICY = """
cooldown: 1h
approval_ttl: 2h
limits: {per_hour: 20, per_project_per_hour: 10}
circuit_breaker: {window: 10m, max_actions: 4, max_keys: 30, open_for: 1h}
protected:
  - {provider: anthropic, key_id: "apikey_prod_*", note: "prod"}
rules:
  - {name: sandbox, projects: ["sandbox"], action: none}
  - {name: theft, kinds: [key_theft], min_severity: high, min_score: 0.8, action: disable}
"""


def run(coro):
    return asyncio.run(coro)


def rows(ch_db, final=True):
    """Current state (`revocations FINAL`), or every row ever written (the append-only audit)."""
    client, settings = ch_db
    source = "revocations FINAL" if final else "revocation_audit"
    q = client.query(f"SELECT * FROM {settings.clickhouse_database}.{source} ORDER BY version")
    return [dict(zip(q.column_names, r)) for r in q.result_rows]


def test_stolen_key_is_disabled_live_and_audited(make_engine, provider, ch_db):
    provider.anthropic_keys["apikey_stolen"] = "active"
    engine = make_engine(POLICY)
    [d] = run(engine.handle([make_alert("apikey_stolen")]))
    assert d.outcome == "executed" and d.action == "disable" and not d.dry_run and d.status_code == 200
    assert provider.anthropic_keys["apikey_stolen"] == "inactive"
    history = rows(ch_db, final=False)
    assert [r["outcome"] for r in history] == ["started", "executed"]  # audit row written before the call
    last = history[-1]
    assert last["actor"] == "policy" and last["request_id"].startswith("req_") and last["completed_at"] is not None
    assert last["duration_ms"] > 0 and last["rule"] == "theft" and last["alert_id"] == d.alert_id
    # A merge collapses `revocations` to the current state; the audit trail keeps every row.
    client, settings = ch_db
    client.command(f"OPTIMIZE TABLE {settings.clickhouse_database}.revocations FINAL")
    n = client.query(f"SELECT count() FROM {settings.clickhouse_database}.revocations").result_rows[0][0]
    assert n == 1 and [r["outcome"] for r in rows(ch_db, final=False)] == ["started", "executed"]
    assert [h.outcome for h in engine.store.history(d.decision_id)] == ["started", "executed"]


def test_dry_run_is_the_default(make_engine, provider, ch_db):
    provider.anthropic_keys["apikey_x"] = "active"
    engine = make_engine(POLICY, REVOCATION_ENABLED="false")
    [d] = run(engine.handle([make_alert("apikey_x")]))
    assert d.outcome == "dry_run" and d.dry_run and provider.requests == []
    assert provider.anthropic_keys["apikey_x"] == "active"
    assert rows(ch_db)[0]["outcome"] == "dry_run"


def test_duplicate_alerts_make_one_call_even_after_restart(make_engine, provider, ch_db):
    provider.anthropic_keys["apikey_dup"] = "active"
    a = make_alert("apikey_dup")
    engine = make_engine(POLICY)
    run(engine.handle([a, a, a]))
    run(engine.handle([a.__class__(**{**a.to_contract(), "version": 2, "score": 0.99})]))
    assert len(provider.calls("/v1/organizations/api_keys/")) == 1
    # A restarted engine re-learns its decisions from ClickHouse: still one call.
    restarted = make_engine(POLICY)
    assert run(restarted.handle([a])) == []
    assert len(provider.calls("/v1/organizations/api_keys/")) == 1
    # Another incident on the same key within the cool-down: recorded, not executed.
    [again] = run(restarted.handle([make_alert("apikey_dup")]))
    assert again.outcome == "skipped_by_policy" and "cool-down" in again.reason
    assert len(provider.requests) == 1


def test_skipped_by_policy(make_engine, provider, ch_db):
    engine = make_engine(POLICY)
    low = make_alert("apikey_low", severity="medium", score=0.5)
    sandbox = make_alert("apikey_sb", project="sandbox")
    out = run(engine.handle([low, low, sandbox]))
    assert [d.outcome for d in out] == ["skipped_by_policy", "skipped_by_policy"]
    assert out[0].reason == "no rule matched" and "action none" in out[1].reason and provider.requests == []


def test_protected_key_needs_approval_then_approve_and_undo(make_engine, provider, ch_db, clock):
    provider.anthropic_keys["apikey_prod_api"] = "active"
    notified = []
    engine = make_engine(POLICY, notify=[notified.extend])
    [d] = run(engine.handle([make_alert("apikey_prod_api")]))
    assert d.outcome == "pending_approval" and d.protected and provider.requests == []
    assert notified and notified[0].kind == "revocation_approval" and d.decision_id in notified[0].reasons[1]
    svc = RevocationService(engine)
    assert [p.decision_id for p in svc.list()] == [d.decision_id]
    with pytest.raises(RevocationError):
        run(svc.approve(d.decision_id, actor="policy"))  # a person must approve
    done = run(svc.approve(d.decision_id, actor="alice"))
    assert done.outcome == "executed" and done.actor == "alice" and provider.anthropic_keys["apikey_prod_api"] == "inactive"
    assert svc.list() == []
    with pytest.raises(RevocationError):
        run(svc.approve(d.decision_id, actor="alice"))  # not twice
    undo = run(svc.undo(d.decision_id, actor="bob"))
    assert undo.outcome == "executed" and undo.action == "enable" and undo.undo_of == d.decision_id
    assert provider.anthropic_keys["apikey_prod_api"] == "active"
    assert svc.get(d.decision_id).outcome == "undone"


def test_irreversible_openai_delete_needs_approval(make_engine, provider, ch_db):
    provider.openai_keys.add(("proj_o", "key_o1"))
    engine = make_engine(POLICY)
    [d] = run(engine.handle([make_alert("key_o1", provider="openai", project="proj_o")]))
    assert d.outcome == "pending_approval" and d.action == "delete" and not d.reversible and provider.requests == []
    svc = RevocationService(engine)
    assert run(svc.approve(d.decision_id, "alice")).outcome == "executed" and not provider.openai_keys
    with pytest.raises(RevocationError):
        run(svc.undo(d.decision_id, "alice"))


def test_reject_and_expiry(make_engine, provider, ch_db, clock):
    engine = make_engine(POLICY)
    a, b = make_alert("apikey_prod_1"), make_alert("apikey_prod_2")
    da, db_ = run(engine.handle([a, b]))
    svc = RevocationService(engine)
    assert svc.reject(da.decision_id, "alice", "load test").outcome == "rejected"
    clock.advance(2 * 3600 + 1)
    assert svc.list() == []
    assert svc.get(db_.decision_id).outcome == "expired"
    with pytest.raises(RevocationError):
        run(svc.approve(db_.decision_id, "alice"))
    assert provider.requests == []


def test_rate_limit_per_project(make_engine, provider, ch_db, clock):
    policy = POLICY.replace("per_project_per_hour: 10", "per_project_per_hour: 2")
    for i in range(4):
        provider.anthropic_keys[f"apikey_r{i}"] = "active"
    engine = make_engine(policy)
    out = run(engine.handle([make_alert(f"apikey_r{i}", project="p1") for i in range(3)]))
    assert sorted(d.outcome for d in out) == ["executed", "executed", "rate_limited"]
    assert [d.outcome for d in run(engine.handle([make_alert("apikey_r3", project="p2")]))] == ["executed"]
    clock.advance(3601)
    provider.anthropic_keys["apikey_r4"] = "active"
    assert [d.outcome for d in run(engine.handle([make_alert("apikey_r4", project="p1")]))] == ["executed"]
    # The rate-limited one is still approvable by a person.
    limited = next(d for d in out if d.outcome == "rate_limited")
    assert run(RevocationService(engine).approve(limited.decision_id, "alice")).outcome == "executed"


def test_circuit_breaker_stops_poisoned_telemetry(make_engine, provider, ch_db, clock):
    """20 keys suddenly 'stolen' at once: the breaker halts automation after 4 actions."""
    for i in range(20):
        provider.anthropic_keys[f"apikey_p{i}"] = "active"
    engine = make_engine(POLICY)
    out = run(engine.handle([make_alert(f"apikey_p{i}", project=f"proj{i}") for i in range(20)]))
    assert sum(d.outcome == "executed" for d in out) == 4 and sum(d.outcome == "circuit_open" for d in out) == 16
    assert len(provider.requests) == 4
    assert any(d.reason.startswith("tripped") for d in out)
    # Still open a little later, for new alerts too — and after a restart.
    clock.advance(60)
    assert [d.outcome for d in run(make_engine(POLICY).handle([make_alert("apikey_new")]))] == ["circuit_open"]
    clock.advance(3600)
    provider.anthropic_keys["apikey_late"] = "active"
    assert [d.outcome for d in run(engine.handle([make_alert("apikey_late")]))] == ["executed"]


def test_circuit_breaker_trips_on_many_distinct_keys(make_engine, provider, ch_db):
    policy = POLICY.replace("max_actions: 4, max_keys: 30", "max_actions: 100, max_keys: 3")
    for i in range(6):
        provider.anthropic_keys[f"apikey_k{i}"] = "active"
    engine = make_engine(policy)
    out = run(engine.handle([make_alert(f"apikey_k{i}", project=f"p{i}") for i in range(6)]))
    assert [d.outcome for d in out].count("executed") == 3 and len(provider.requests) == 3


def test_failed_call_is_recorded_and_can_be_retried_by_approval(make_engine, provider, ch_db):
    provider.anthropic_keys["apikey_f"] = "active"
    provider.faults.extend([Fault(503)] * 3)
    engine = make_engine(POLICY)
    [d] = run(engine.handle([make_alert("apikey_f")]))
    assert d.outcome == "failed" and d.status_code == 503 and d.attempts == 3 and "HTTP 503" in d.error
    done = run(RevocationService(engine).approve(d.decision_id, "alice"))
    assert done.outcome == "executed" and provider.anthropic_keys["apikey_f"] == "inactive"


def test_no_audit_row_no_call(make_engine, provider, ch_db):
    client, settings = ch_db
    provider.anthropic_keys["apikey_na"] = "active"
    engine = make_engine(POLICY)
    engine.seed()
    client.command(f"DROP TABLE {settings.clickhouse_database}.revocations")
    run(engine([make_alert("apikey_na")]))  # the hook form: never raises
    assert provider.requests == [] and provider.anthropic_keys["apikey_na"] == "active"


def test_no_secret_in_logs_or_table(make_engine, provider, ch_db, caplog, iam):
    caplog.set_level(logging.DEBUG)
    provider.anthropic_keys["apikey_s1"] = "active"
    provider.litellm_keys["tok_s2"] = False
    iam.create_user(UserName="svc-secret-test")
    aws_key = iam.create_access_key(UserName="svc-secret-test")["AccessKey"]["AccessKeyId"]
    policy = POLICY.replace("max_actions: 4", "max_actions: 100")
    engine = make_engine(policy)
    run(engine.handle([make_alert("apikey_s1"), make_alert("tok_s2", provider="litellm", project="l"),
                       make_alert(aws_key, provider="bedrock", project="b"),
                       make_alert("svc-1", provider="internal", project="w"),
                       make_alert("apikey_prod_9", project="x")]))
    # A provider that echoes the (wrong) credential it was given: the error must not keep it.
    bad = make_engine(policy, REVOCATION_OPENAI_ADMIN_KEY=ALL_SECRETS[0] + "x", REVOCATION_ENABLED="true")
    bad.policy = bad.policy.__class__(**{**bad.policy.__dict__, "rules": tuple(
        r.__class__(**{**r.__dict__, "allow_irreversible": True}) for r in bad.policy.rules)})
    [failed] = run(bad.handle([make_alert("key_z", provider="openai", project="proj_z")]))
    assert failed.outcome == "failed" and failed.status_code == 401 and "<redacted>" in failed.error
    table = rows(ch_db, final=False)
    assert {r["outcome"] for r in table} >= {"started", "executed", "pending_approval", "failed"}
    dump = repr(table) + caplog.text
    for secret in ALL_SECRETS + (ALL_SECRETS[0] + "x",):
        assert secret not in dump
    assert "sk-" not in repr(table)


def test_build_alert_hooks_wires_the_engine(rev_settings, ch_db, provider):
    from keywatch.hooks import build_alert_hooks
    from keywatch.sinks.clickhouse import ClickHouseSink
    from keywatch.sinks.revocation.engine import RevocationEngine

    client, _ = ch_db
    settings = rev_settings(POLICY, REVOCATION_ENABLED="false")
    hooks = build_alert_hooks(settings, sink=ClickHouseSink(client, settings.clickhouse_database))
    engine = next(h for h in hooks if isinstance(h, RevocationEngine))
    assert not engine.live
    run(engine([make_alert("apikey_hook")]))
    assert rows(ch_db)[0]["outcome"] == "dry_run" and provider.requests == []
    assert not any(isinstance(h, RevocationEngine) for h in build_alert_hooks(rev_settings(None)))
