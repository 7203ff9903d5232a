"""Auth and signatures: the API's mutating endpoints need the bearer token; alert-channel
webhooks and the revocation webhook are signed (HMAC-SHA256 over timestamp and body), and a bad
signature, body or stale timestamp is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect

import pytest

from keywatch.models.registry import build_core

T0 = 1_795_622_400_000

TOKEN = "api-token-0123456789abcdef"


@pytest.mark.parametrize("configured", [None, TOKEN])
def test_mutating_api_endpoints_need_the_token(ch_db, make_settings, configured):
    """Every handler taking an `auth` header (ack, feedback, revocation approve/reject/undo) refuses
    a request without the right bearer token — and refuses everything when no token is set."""
    from keywatch.sinks.clickhouse import ClickHouseSink
    from keywatch.stream import api
    from keywatch.stream.metrics import Metrics
    from keywatch.stream.runtime import WorkerRuntime

    client, base = ch_db
    env = {"CLICKHOUSE_DATABASE": base.clickhouse_database}
    if configured:
        env["API_TOKEN"] = configured
    settings = make_settings(**env)
    rt = WorkerRuntime(settings=settings, sink=ClickHouseSink(client, base.clickhouse_database),
                       core=build_core(settings), metrics=Metrics())
    modules = [api]
    try:
        from keywatch.stream import api_revoke
        modules.append(api_revoke)
    except ImportError:
        pass
    handlers = [f for m in modules for n, f in vars(m).items()
                if inspect.iscoroutinefunction(f) and "auth" in inspect.signature(f).parameters and not n.startswith("_")]
    assert {"ack", "feedback"} <= {f.__name__ for f in handlers}
    for f in handlers:
        for header in (None, "", "Bearer", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
            kw = {p: ("rv_x" if p != "auth" else header) for p in inspect.signature(f).parameters if p not in ("rt", "body")}
            reply = asyncio.run(f(rt, body={"label": "confirmed"}, **kw))
            assert reply.status == (403 if not configured else 401), (f.__name__, header, reply)
        if configured:  # the right token gets past auth (then: no such alert/decision)
            kw = {p: ("rv_x" if p != "auth" else f"Bearer {TOKEN}") for p in inspect.signature(f).parameters if p not in ("rt", "body")}
            assert asyncio.run(f(rt, body={"label": "confirmed"}, **kw)).status not in (401, 403)


def test_channel_webhooks_are_signed(receiver, make_settings, tmp_path):
    from keywatch.models.alerts import Finding, IncidentBook
    from keywatch.sinks.channels.dispatch import Dispatcher
    from keywatch.sinks.channels.webhook import SignatureError, verify_signature

    channels = tmp_path / "channels.yaml"
    channels.write_text(f"""
channels:
  hook: {{type: webhook, url: "http://127.0.0.1:{receiver.server_address[1]}/kw", secret_setting: webhook_secret}}
routes:
  - {{name: all, channels: [hook]}}
""")
    settings = make_settings(CHANNELS_FILE=str(channels), WEBHOOK_SECRET="whsec-sign-test")
    alert = IncidentBook().report(Finding(kind="key_theft", provider="openai", key_id="key_1", project=None, ts_ms=T0,
                                          started_at_ms=T0, score=0.9, reasons=["new country RU"]))

    async def go():
        d = Dispatcher.from_settings(settings)
        await d([alert])
        await d.aclose()

    asyncio.run(go())
    assert len(receiver.got) == 1
    headers, body = receiver.got[0]
    ts, sig = headers["X-Keywatch-Timestamp"], headers["X-Keywatch-Signature"]
    assert verify_signature("whsec-sign-test", body, ts, sig)
    assert sig == "v1=" + hmac.new(b"whsec-sign-test", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    for bad in (("other-secret", body, ts, sig), ("whsec-sign-test", body + b" ", ts, sig),
                ("whsec-sign-test", body, str(int(ts) - 3600), sig)):
        with pytest.raises(SignatureError):
            verify_signature(*bad)


def test_revocation_webhook_is_signed(ch_db, make_settings, provider, tmp_path):
    """The in-house key-manager webhook: the local server accepts only a valid HMAC-SHA256 signature."""
    from keywatch.models.alerts import Finding, IncidentBook
    from keywatch.sinks.revocation.service import build_engine
    from revocation_servers import WEBHOOK_SECRET

    client, base = ch_db
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - {name: any, kinds: ['*'], min_severity: low, action: disable}\nadapters: {acme: webhook}\n")
    alert = IncidentBook().report(Finding(kind="key_theft", provider="acme", key_id="key_w", project=None, ts_ms=T0,
                                          started_at_ms=T0, score=0.9, reasons=["x"]))

    def run(secret: str):
        settings = make_settings(CLICKHOUSE_DATABASE=base.clickhouse_database, REVOCATION_ENABLED="true",
                                 REVOCATION_POLICY_FILE=str(policy), REVOCATION_WEBHOOK_URL=provider.url + "/hook",
                                 REVOCATION_WEBHOOK_SECRET=secret)
        return asyncio.run(build_engine(settings, client).handle([alert]))

    assert [d.outcome for d in run("not-the-secret")] == ["failed"]  # the receiver rejects a bad signature
    assert provider.webhook_events == []
    client.command(f"TRUNCATE TABLE {base.clickhouse_database}.revocations")
    assert [d.outcome for d in run(WEBHOOK_SECRET)] == ["executed"]
    req = provider.calls("/hook")[-1]
    ts = req["headers"]["X-Keywatch-Timestamp"]
    want = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Keywatch-Signature"].endswith(want)
    assert provider.webhook_events and provider.webhook_events[0].get("key_id") == "key_w"
