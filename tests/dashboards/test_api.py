"""HTTP API: the plain handlers against chDB, then the same through real faust views over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from keywatch.dashboards import sample
from keywatch.models.alerts import Finding
from keywatch.models.registry import build_core
from keywatch.sinks.clickhouse import ALERT_COLUMNS, ClickHouseSink, alert_row
from keywatch.stream import api
from keywatch.stream.metrics import Metrics
from keywatch.stream.runtime import WorkerRuntime

TOKEN = "test-token-1234"
AUTH = f"Bearer {TOKEN}"


@pytest.fixture
def runtime(filled_db, make_settings):
    client, settings = filled_db
    settings = make_settings(CLICKHOUSE_DATABASE=settings.clickhouse_database, API_TOKEN=TOKEN)
    rt = WorkerRuntime(settings=settings, sink=ClickHouseSink(client, settings.clickhouse_database),
                       core=build_core(settings), metrics=Metrics())
    rt.metrics.events_in.labels(kind="usage").inc(3)
    # One incident open in the live core (and stored), like the worker would have it.
    live = rt.core.book.report(Finding(kind="key_theft", provider="openai", key_id="key_normal", project="proj-a",
                                       ts_ms=sample.END_MS, started_at_ms=sample.END_MS - 60_000, score=0.75,
                                       reasons=["new country FR"]))
    rt.sink.insert("alerts", [alert_row(live)], ALERT_COLUMNS)
    rt.live_id = live.alert_id
    return rt


def test_read_handlers(runtime):
    assert api.health(runtime).body == {"status": "ok"}
    assert api.ready(runtime).status == 503
    m = api.metrics(runtime)
    assert m.content_type.startswith("text/plain") and 'keywatch_events_in_total{kind="usage"} 3.0' in m.body
    all_ = api.list_alerts(runtime, {}).body
    assert all_["count"] == 3 and len({a["alert_id"] for a in all_["alerts"]}) == 3  # FINAL: one row per alert
    theft = api.list_alerts(runtime, {"kind": "key_theft", "severity": "critical", "key": "key_stolen"}).body["alerts"]
    assert [(a["alert_id"], a["version"], a["status"]) for a in theft] == [(sample.THEFT_ALERT_ID, 2, "open")]
    since = sample.END_MS - 30 * 60_000
    assert [a["alert_id"] for a in api.list_alerts(runtime, {"since": str(since)}).body["alerts"]] == [runtime.live_id]
    assert api.list_alerts(runtime, {"since": "yesterday"}).status == 400
    assert api.list_alerts(runtime, {"limit": "0"}).status == 400
    assert api.list_alerts(runtime, {"kind": "x' OR 1=1 --"}).body["count"] == 0  # bound, not spliced
    one = api.get_alert(runtime, sample.SPIKE_ALERT_ID)
    assert one.status == 200 and one.body["details"]["root_cause"]["keys"][0]["value"] == "key_batch"
    assert api.get_alert(runtime, "nope").status == 404


def test_key_view(runtime):
    r = asyncio.run(api.describe_key(runtime, "key_stolen", {"hours": "2"}))
    assert r.status == 200
    assert r.body["key_id"] == "key_stolen" and len(r.body["usage"]["hourly"]) >= 2
    assert {"RU", "CN"} <= set(r.body["usage"]["hourly"][-1]["countries"])
    assert len(r.body["usage"]["recent"]) == 20
    assert asyncio.run(api.describe_key(runtime, "no-such-key", {})).status == 404
    assert asyncio.run(api.describe_key(runtime, "key_stolen", {"hours": "x"})).status == 400


def test_mutations_need_the_token(runtime, make_settings):
    assert asyncio.run(api.ack(runtime, runtime.live_id, None, {})).status == 401
    assert asyncio.run(api.ack(runtime, runtime.live_id, "Bearer wrong", {})).status == 401
    runtime.settings = make_settings(CLICKHOUSE_DATABASE=runtime.sink.db)  # no token configured
    assert asyncio.run(api.feedback(runtime, runtime.live_id, AUTH, {"label": "confirmed"})).status == 403


def test_ack_and_feedback(runtime):
    r = asyncio.run(api.ack(runtime, runtime.live_id, AUTH, {"actor": "ana", "note": "looking"}))
    assert r.status == 200 and r.body["status"] == "acknowledged" and r.body["version"] == 2
    stored = api.get_alert(runtime, runtime.live_id).body
    assert (stored["status"], stored["version"]) == ("acknowledged", 2)
    assert [(a["action"], a["actor"]) for a in stored["actions"]] == [("ack", "ana")]
    # Live alert: the core resolves it (not_anomaly) and the new version is stored.
    bad = asyncio.run(api.feedback(runtime, runtime.live_id, AUTH, {"label": "maybe"}))
    assert bad.status == 400
    assert asyncio.run(api.feedback(runtime, runtime.live_id, AUTH, {"label": "not_anomaly", "window_s": -1})).status == 400
    r = asyncio.run(api.feedback(runtime, runtime.live_id, AUTH, {"label": "not_anomaly", "window_s": 3600}))
    assert r.status == 200 and r.body["in_core"] and r.body["until_ms"]
    assert api.get_alert(runtime, runtime.live_id).body["status"] == "resolved"
    # Stored-only alert (not in this core): a resolved version on top of the stored one.
    r = asyncio.run(api.feedback(runtime, sample.THEFT_ALERT_ID, AUTH, {"label": "planned_activity"}))
    assert r.status == 200 and not r.body["in_core"]
    stored = api.get_alert(runtime, sample.THEFT_ALERT_ID).body
    assert (stored["status"], stored["version"], stored["details"]["feedback"]) == ("resolved", 3, "planned_activity")
    assert asyncio.run(api.feedback(runtime, "nope", AUTH, {"label": "confirmed"})).status == 404


def test_faust_views_over_http(runtime):
    import faust
    from aiohttp import web as aioweb

    from keywatch.stream.web import register_views

    app = faust.App("kw-api-test", broker="memory://", web_enabled=True, web_in_thread=False)
    register_views(app, runtime)

    async def go():
        runner = aioweb.AppRunner(app.web.web_app)
        await runner.setup()
        site = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/health")).json() == {"status": "ok"}
                assert (await c.get("/ready")).status_code == 503
                assert "keywatch_events_in_total" in (await c.get("/metrics")).text
                r = await c.get("/alerts", params={"kind": "cost_spike"})
                assert [a["alert_id"] for a in r.json()["alerts"]] == [sample.SPIKE_ALERT_ID]
                assert (await c.get(f"/alerts/{sample.SPIKE_ALERT_ID}")).json()["kind"] == "cost_spike"
                assert (await c.get(f"/alerts/{sample.THEFT_ALERT_ID}/report")).json()["revocations"]
                assert (await c.get("/keys/key_batch")).json()["key_id"] == "key_batch"
                r = await c.post(f"/alerts/{runtime.live_id}/ack", json={})
                assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
                assert (await c.post(f"/alerts/{runtime.live_id}/ack", content=b"[1]", headers={"Authorization": AUTH})).status_code == 400
                r = await c.post(f"/alerts/{runtime.live_id}/ack", json={}, headers={"Authorization": AUTH})
                assert r.status_code == 200 and r.json()["status"] == "acknowledged"
                r = await c.post(f"/alerts/{runtime.live_id}/feedback", json={"label": "confirmed"}, headers={"Authorization": AUTH})
                assert r.status_code == 200 and r.json()["label"] == "confirmed"
        finally:
            await runner.cleanup()

    asyncio.run(go())
