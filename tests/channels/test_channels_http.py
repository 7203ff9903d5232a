"""Slack, PagerDuty and signed-webhook delivery to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import pytest
import yaml
from channels_helpers import make_alert

from keywatch.sinks.channels.config import load_config
from keywatch.sinks.channels.dispatch import Dispatcher
from keywatch.sinks.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify_signature
from keywatch.stream.metrics import Metrics

SLACK_PATH = "/services/T000/B000/XXXXsecretpath"
PD_KEY = "pd-routing-key-0123456789abcdef"
HOOK_SECRET = "whsec-test-0123456789"


def setup(tmp_path, make_settings, url, routes=None, **env):
    doc = {
        "channels": {
            "fin-slack": {"type": "slack"},
            "soc-pd": {"type": "pagerduty", "url": url},
            "soc-hook": {"type": "webhook", "url": f"{url}/hook", "headers": {"X-Team": "soc"}},
        },
        "routes": routes or [
            {"name": "finance", "kinds": ["cost_spike", "budget", "billing_divergence"], "min_severity": "medium",
             "channels": ["fin-slack"]},
            {"name": "soc", "kinds": ["key_theft"], "min_severity": "high", "channels": ["soc-pd", "soc-hook"]},
        ],
    }
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.safe_dump(doc))
    settings = make_settings(**{
        "CHANNELS_FILE": str(path), "SLACK_WEBHOOK_URL": url + SLACK_PATH, "PAGERDUTY_ROUTING_KEY": PD_KEY,
        "WEBHOOK_SECRET": HOOK_SECRET, "CHANNELS_BACKOFF_S": "0.01", "CHANNELS_BACKOFF_MAX_S": "0.05",
        "CHANNELS_MAX_ATTEMPTS": "3", "CHANNELS_TIMEOUT_S": "2",
        "CHANNELS_LINK_TEMPLATE": "https://kw.example/alerts/{alert_id}", **env})
    rows: list = []
    metrics = Metrics()
    d = Dispatcher(load_config(path, settings), settings, metrics=metrics, record=rows.extend)
    return d, rows, metrics


def by_path(srv, path):
    return [r for r in srv.requests if r.path == path]


def test_routing_slack_pagerduty_and_signed_webhook(tmp_path, make_settings, http_server):
    d, rows, metrics = setup(tmp_path, make_settings, http_server.url)
    alerts = [
        make_alert("kw_cost", kind="cost_spike", severity="medium", cost_impact_usd=1234.5),
        make_alert("kw_theft", kind="key_theft", severity="critical"),
        make_alert("kw_lowtheft", kind="key_theft", severity="medium"),  # below the SOC route's minimum
        make_alert("kw_lowcost", kind="cost_spike", severity="low"),
    ]
    asyncio.run(d(alerts))
    assert len(http_server.requests) == 3

    slack = by_path(http_server, SLACK_PATH)[0].json()
    assert slack["blocks"][0]["type"] == "header" and "cost_spike" in slack["blocks"][0]["text"]["text"]
    fields = " ".join(f["text"] for f in slack["blocks"][1]["fields"])
    assert "medium" in fields and "key_abc123" in fields and "$1,234.50" in fields
    assert "new IPs" in slack["blocks"][2]["text"]["text"]
    assert slack["blocks"][3]["elements"][0]["url"] == "https://kw.example/alerts/kw_cost"

    pd = by_path(http_server, "/v2/enqueue")[0].json()
    assert pd["routing_key"] == PD_KEY and pd["event_action"] == "trigger" and pd["dedup_key"] == "kw_theft"
    assert pd["payload"]["severity"] == "critical" and pd["payload"]["source"] == "keywatch/openai/key_abc123"
    assert pd["payload"]["custom_details"]["reasons"] == ["12 requests from 5 new IPs in 3 new countries"]

    hook = by_path(http_server, "/hook")[0]
    assert hook.json()["alert"]["alert_id"] == "kw_theft" and hook.json()["event"] == "trigger"
    assert hook.headers["x-team"] == "soc" and hook.headers["x-keywatch-event"] == "alert.trigger"
    assert verify_signature(HOOK_SECRET, hook.body, hook.headers[TIMESTAMP_HEADER.lower()], hook.headers[SIGNATURE_HEADER.lower()])
    assert {(r[5], r[9]) for r in rows} == {("fin-slack", "delivered"), ("soc-pd", "delivered"), ("soc-hook", "delivered")}
    assert metrics.deliveries.labels(channel="soc-pd", outcome="delivered")._value.get() == 1


def test_signature_verifier_rejects_tampering_and_replays():
    from keywatch.sinks.channels.webhook import sign

    body = b'{"type":"alert","alert":{"alert_id":"kw_1"}}'
    h = sign(body, HOOK_SECRET, timestamp=1_800_000_000)
    ts, sig = h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER]
    assert verify_signature(HOOK_SECRET, body, ts, sig, now=1_800_000_100)
    assert verify_signature(["old-secret", HOOK_SECRET], body, ts, sig, now=1_800_000_000)  # rotation
    for bad in [
        dict(secret="wrong", body=body, ts=ts, sig=sig, now=1_800_000_000),
        dict(secret=HOOK_SECRET, body=body + b" ", ts=ts, sig=sig, now=1_800_000_000),           # tampered body
        dict(secret=HOOK_SECRET, body=body, ts=str(int(ts) + 1), sig=sig, now=1_800_000_000),    # moved timestamp
        dict(secret=HOOK_SECRET, body=body, ts=ts, sig=sig, now=1_800_000_000 + 301),           # replay, too old
        dict(secret=HOOK_SECRET, body=body, ts=ts, sig=sig, now=1_800_000_000 - 301),           # from the future
        dict(secret=HOOK_SECRET, body=body, ts=ts, sig="", now=1_800_000_000),
        dict(secret=HOOK_SECRET, body=body, ts="yesterday", sig=sig, now=1_800_000_000),
    ]:
        with pytest.raises(SignatureError):
            verify_signature(bad["secret"], bad["body"], bad["ts"], bad["sig"], now=bad["now"])


def test_retries_429_and_5xx_then_succeeds(tmp_path, make_settings, http_server):
    d, rows, _ = setup(tmp_path, make_settings, http_server.url)
    http_server.respond(429, headers={"Retry-After": "0"})
    http_server.respond(503)
    asyncio.run(d([make_alert("kw_cost", kind="cost_spike", severity="high")]))
    assert len(http_server.requests) == 3
    assert [(r[8], r[9], r[10]) for r in rows] == [(1, "retry", 429), (2, "retry", 503), (3, "delivered", 200)]


def test_gives_up_records_failure_no_retry_on_4xx(tmp_path, make_settings, http_server, caplog):
    d, rows, metrics = setup(tmp_path, make_settings, http_server.url)
    http_server.respond(500, 502, 504)  # slack: three 5xx = max_attempts
    http_server.respond(400, path="/v2/enqueue")  # pagerduty: bad request, not retried
    caplog.set_level(logging.DEBUG)
    asyncio.run(d([make_alert("kw_cost", kind="cost_spike", severity="high")]))
    asyncio.run(d([make_alert("kw_theft", kind="key_theft", severity="high", version=1)]))
    slack = [r for r in rows if r[5] == "fin-slack"]
    assert [(r[8], r[9]) for r in slack] == [(1, "retry"), (2, "retry"), (3, "failed")]
    pd = [r for r in rows if r[5] == "soc-pd"]
    assert [(r[8], r[9], r[10]) for r in pd] == [(1, "failed", 400)]
    assert metrics.deliveries.labels(channel="fin-slack", outcome="failed")._value.get() == 1
    assert "failed after 3 attempt(s)" in caplog.text
    # a failed delivery is not remembered as sent: the same alert is tried again next time
    asyncio.run(d([make_alert("kw_cost", kind="cost_spike", severity="high", version=2)]))
    assert rows[-1][5] == "fin-slack" and rows[-1][9] == "delivered"


def test_timeouts_and_refused_connections_are_retried_never_raised(tmp_path, make_settings, http_server):
    d, rows, _ = setup(tmp_path, make_settings, http_server.url, CHANNELS_TIMEOUT_S="0.2")
    http_server.respond(200, delay=0.6)
    asyncio.run(d([make_alert("kw_cost", kind="cost_spike", severity="high")]))
    assert [(r[9], r[11][:7]) for r in rows] == [("retry", "timeout"), ("delivered", "")]

    dead, rows2, _ = setup(tmp_path, make_settings, "http://127.0.0.1:9")  # nothing listens on port 9
    asyncio.run(dead([make_alert("kw_theft", kind="key_theft", severity="critical")]))  # must not raise
    assert {r[9] for r in rows2 if r[8] == 3} == {"failed"} and len(rows2) == 6


def test_dedupe_severity_rise_and_resolve(tmp_path, make_settings, http_server):
    d, rows, _ = setup(tmp_path, make_settings, http_server.url)

    async def run():
        await d([make_alert("kw_t", severity="high", version=1)])
        await d([make_alert("kw_t", severity="high", version=2, score=0.85, reasons=["more evidence"])])  # no rise
        await d([make_alert("kw_t", severity="critical", version=3)])
        await d([make_alert("kw_t", severity="high", version=4)])  # never downgrades, never re-sends
        await d([make_alert("kw_t", severity="critical", status="resolved", version=5)])
        await d([make_alert("kw_t", severity="critical", status="resolved", version=5)])  # replayed batch

    asyncio.run(run())
    pd = [r.json() for r in by_path(http_server, "/v2/enqueue")]
    assert [(e["event_action"], e.get("payload", {}).get("severity")) for e in pd] == [
        ("trigger", "error"), ("trigger", "critical"), ("resolve", None)]
    assert all(e["dedup_key"] == "kw_t" for e in pd)
    assert [r.headers["x-keywatch-event"] for r in by_path(http_server, "/hook")] == ["alert.trigger", "alert.update", "alert.resolve"]


def test_rate_limit_per_route(tmp_path, make_settings, http_server):
    routes = [{"name": "finance", "kinds": ["cost_spike"], "channels": ["fin-slack"], "rate_limit": {"max": 2, "per_s": 3600}}]
    d, rows, metrics = setup(tmp_path, make_settings, http_server.url, routes=routes)
    asyncio.run(d([make_alert(f"kw_{i}", kind="cost_spike", severity="high") for i in range(5)]))
    assert len(http_server.requests) == 2
    assert sorted(r[9] for r in rows) == ["delivered"] * 2 + ["rate_limited"] * 3
    assert metrics.deliveries.labels(channel="fin-slack", outcome="rate_limited")._value.get() == 3


def test_deliveries_table_and_logs_hold_no_secret(tmp_path, make_settings, http_server, ch_db, caplog):
    from keywatch.sinks.clickhouse import ClickHouseSink

    client, db_settings = ch_db
    d, _, _ = setup(tmp_path, make_settings, http_server.url)
    d._record, d.sink = None, ClickHouseSink(client, db_settings.clickhouse_database)
    http_server.respond(500, 500, 500, path=SLACK_PATH)
    caplog.set_level(logging.DEBUG)
    asyncio.run(d([make_alert("kw_cost", kind="cost_spike", severity="high")]))
    asyncio.run(d([make_alert("kw_t", severity="critical")]))
    # a refused connection: httpx errors can carry the URL, and a Slack URL is a secret
    dead, _, _ = setup(tmp_path, make_settings, "http://127.0.0.1:9")
    dead._record, dead.sink = None, d.sink
    asyncio.run(dead([make_alert("kw_cost2", kind="cost_spike", severity="high")]))
    got = client.query(f"SELECT alert_id, channel, attempt, outcome, status_code, error, duration_ms, version "
                       f"FROM {db_settings.clickhouse_database}.alert_deliveries").result_rows
    assert ("kw_cost", "fin-slack", 3, "failed", 500, "HTTP 500") in [r[:6] for r in got]
    assert {r[1] for r in got if r[3] == "delivered"} == {"soc-pd", "soc-hook"}
    dump = repr(got) + caplog.text
    for secret in (PD_KEY, HOOK_SECRET, SLACK_PATH, "XXXXsecretpath"):
        assert secret not in dump


def test_background_mode_returns_before_slow_deliveries(tmp_path, make_settings, http_server):
    import time

    d, rows, _ = setup(tmp_path, make_settings, http_server.url)
    d.background = True
    http_server.respond(503, path=SLACK_PATH)
    http_server.respond(200, delay=0.5, path="/v2/enqueue")

    async def run():
        t0 = time.perf_counter()
        await d([make_alert("kw_cost", kind="cost_spike", severity="high"), make_alert("kw_t", severity="critical")])
        returned = time.perf_counter() - t0
        assert await d.drain(timeout=5)
        await d.aclose()
        return returned

    assert asyncio.run(run()) < 0.2  # the hook runner (and revocation after it) never waits on a channel
    assert sorted((r[5], r[9]) for r in rows) == [
        ("fin-slack", "delivered"), ("fin-slack", "retry"), ("soc-hook", "delivered"), ("soc-pd", "delivered")]
