"""/revocations: the plain handlers against chDB and a live engine calling a local provider server,
then the same over real HTTP (faust views), with the bearer token and the actor header."""

from __future__ import annotations

import asyncio

import httpx

from api_helpers import AUTH, TOKEN
from keywatch.stream import api_revoke


def run(coro):
    return asyncio.run(coro)


def test_list_and_show(api_rt):
    r = api_revoke.list_revocations(api_rt, {})
    assert r.status == 200 and r.body["status"] == "pending"
    assert sorted(d["key_id"] for d in r.body["revocations"]) == ["apikey_a", "apikey_b"]
    assert all(d["outcome"] == "pending_approval" and d["action"] == "disable" for d in r.body["revocations"])
    assert api_revoke.list_revocations(api_rt, {"key": "apikey_a"}).body["count"] == 1
    assert api_revoke.list_revocations(api_rt, {"provider": "openai"}).body["count"] == 0
    assert api_revoke.list_revocations(api_rt, {"provider": "anthropic", "limit": "1"}).body["count"] == 1
    assert api_revoke.list_revocations(api_rt, {"status": "executed"}).body["count"] == 0
    assert api_revoke.list_revocations(api_rt, {"status": "bogus"}).status == 400
    assert api_revoke.list_revocations(api_rt, {"limit": "0"}).status == 400
    assert api_revoke.list_revocations(api_rt, {"limit": "x"}).status == 400
    did = api_rt.pending["apikey_a"]
    one = api_revoke.get_revocation(api_rt, did)
    assert one.status == 200 and one.body["decision_id"] == did and one.body["provider"] == "anthropic"
    assert api_revoke.get_revocation(api_rt, "rv_nope").status == 404
    # The API acts through the worker's own engine (shared guard state, adapters, dry-run flag).
    assert api_revoke.service(api_rt).engine is api_rt.alert_hooks[-1]


def test_mutations_need_token_and_actor(api_rt, provider, make_settings):
    did = api_rt.pending["apikey_a"]
    assert run(api_revoke.approve(api_rt, did, None, {"actor": "ana"})).status == 401
    assert run(api_revoke.approve(api_rt, did, "Bearer wrong", {"actor": "ana"})).status == 401
    assert run(api_revoke.reject(api_rt, did, f"Basic {TOKEN}", {"actor": "ana"})).status == 401
    assert run(api_revoke.approve(api_rt, did, AUTH, {})).status == 400  # who approved is mandatory
    assert run(api_revoke.approve(api_rt, did, AUTH, {"actor": "policy"})).status == 400
    settings = api_rt.settings
    api_rt.settings = make_settings(CLICKHOUSE_DATABASE=settings.clickhouse_database)  # no token configured
    assert run(api_revoke.undo(api_rt, did, AUTH, {"actor": "ana"})).status == 403
    api_rt.settings = settings
    assert provider.requests == []  # nothing reached the provider
    assert api_revoke.get_revocation(api_rt, did).body["outcome"] == "pending_approval"


def test_approve_undo_reject(api_rt, provider):
    a, b = api_rt.pending["apikey_a"], api_rt.pending["apikey_b"]
    r = run(api_revoke.approve(api_rt, a, AUTH, {"actor": "ana"}))
    assert r.status == 200 and r.body["outcome"] == "executed" and r.body["actor"] == "ana"
    assert provider.anthropic_keys["apikey_a"] == "inactive"
    assert run(api_revoke.approve(api_rt, a, AUTH, {"actor": "ana"})).status == 409  # not pending any more
    assert run(api_revoke.approve(api_rt, "rv_nope", AUTH, {"actor": "ana"})).status == 404
    u = run(api_revoke.undo(api_rt, a, AUTH, {"actor": "bo"}))
    assert u.status == 200 and (u.body["action"], u.body["outcome"], u.body["undo_of"]) == ("enable", "executed", a)
    assert provider.anthropic_keys["apikey_a"] == "active"
    assert api_revoke.get_revocation(api_rt, a).body["outcome"] == "undone"
    assert run(api_revoke.undo(api_rt, a, AUTH, {"actor": "bo"})).status == 409
    r = run(api_revoke.reject(api_rt, b, AUTH, {"actor": "cy", "reason": "load test"}))
    assert r.status == 200 and r.body["outcome"] == "rejected" and "load test" in r.body["reason"]
    assert provider.anthropic_keys["apikey_b"] == "active"
    assert len(provider.calls("/v1/organizations/api_keys/")) == 2  # disable + enable of apikey_a only
    assert api_revoke.list_revocations(api_rt, {}).body["count"] == 0
    assert {d["outcome"] for d in api_revoke.list_revocations(api_rt, {"status": "all"}).body["revocations"]} == {
        "undone", "executed", "rejected"}


def test_without_policy_the_api_still_serves_stored_decisions(api_rt):
    api_rt.alert_hooks, api_rt.revocation = [], None
    assert api_revoke.list_revocations(api_rt, {}).body["count"] == 2


def test_over_http(api_rt, serve, provider):
    port = serve(api_rt)
    a = api_rt.pending["apikey_a"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.get("/revocations", params={"status": "pending", "provider": "anthropic"})
        assert r.status_code == 200 and r.json()["count"] == 2
        assert c.get(f"/revocations/{a}").json()["key_id"] == "apikey_a"
        assert c.get("/revocations/rv_nope").status_code == 404
        r = c.post(f"/revocations/{a}/approve", json={"actor": "ana"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert c.post(f"/revocations/{a}/approve", content=b"[]", headers={"Authorization": AUTH}).status_code == 400
        r = c.post(f"/revocations/{a}/approve", headers={"Authorization": AUTH, "X-Keywatch-Actor": "dee"})
        assert r.status_code == 200 and (r.json()["outcome"], r.json()["actor"]) == ("executed", "dee")
        assert provider.anthropic_keys["apikey_a"] == "inactive"
        r = c.post(f"/revocations/{a}/undo", json={"actor": "eve"}, headers={"Authorization": AUTH, "X-Keywatch-Actor": "x"})
        assert r.status_code == 200 and r.json()["actor"] == "eve"  # the body's actor wins
        assert c.post(f"/revocations/{a}/reject", json={"actor": "eve"}, headers={"Authorization": AUTH}).status_code == 409
        # The whole audit trail, oldest first: queued, approved by dee (started, executed), undone by eve.
        trail = [(h["outcome"], h["actor"]) for h in c.get(f"/revocations/{a}").json()["history"]]
        assert trail[0][0] == "pending_approval" and trail[-1] == ("undone", "eve")
        assert trail.index(("started", "dee")) < trail.index(("executed", "dee"))
