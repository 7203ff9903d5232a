"""Secrets: no raw API key is ever stored, logged or sent; fingerprints are keyed (auth and
signatures: tests/security/test_auth_signatures.py).

Key-like strings (OpenAI project keys, Anthropic keys, AWS secret access keys, bearer tokens, a
JWT) are fed through every path a producer or a provider controls — key ids, user agents,
principals, projects, error codes, models, audit actions, billing line items, dead-letter
payloads and error texts, revocation adapter errors, alert channel deliveries — via replay into
ClickHouse; then every table, every delivered body and every log line is scanned. Acceptable:
keyed fingerprints (`kh_…`) in their place. Not acceptable: any raw secret, anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import orjson

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.stream.decode import EventDecoder, fingerprint

OPENAI = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7CD0efGH3ijKL6"
ANTHROPIC = "sk-ant-api03-Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1ZY0xwVU-_tsrqpo9nmlkjihg8fedcba7ZYXWV6UTSRQ5PONM-AAAA"
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BEARER_TOKEN = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZ"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRETS = (OPENAI, ANTHROPIC, AWS, BEARER_TOKEN, JWT)
T0 = 1_795_622_400_000


def lines() -> list[bytes]:
    usage = {"kind": "usage", "provider": "openai", "model": "gpt-4o-mini", "project": "proj_s", "input_tokens": 10}
    out = []
    for i in range(40):  # a settled key, so the later odd callers are novel (and alerted on)
        out.append({**usage, "event_id": f"ok{i}", "ts": T0 + i * 60_000, "key_id": "key_known",
                    "source_ip": "34.1.2.3", "country": "US", "user_agent": "openai-python/1.50.0"})
    t = T0 + 3_600_000
    out += [
        {**usage, "event_id": "s1", "ts": t, "key_id": OPENAI, "user_agent": f"curl/8.4 Authorization: Bearer {BEARER_TOKEN}"},
        {**usage, "event_id": "s2", "ts": t + 1, "key_id": ANTHROPIC, "principal": f"svc {AWS}", "project": f"p-{OPENAI}"},
        {**usage, "event_id": "s3", "ts": t + 2, "key_id": "key_known", "error_code": f"invalid_api_key: {ANTHROPIC}",
         "status": 401, "user_agent": f"x/{JWT}", "source_ip": "45.9.9.9", "country": "RU", "region": AWS,
         "operation": f"Bearer {BEARER_TOKEN}", "request_id": OPENAI},
        {**usage, "event_id": "s4", "ts": t + 3, "key_id": f"Bearer {BEARER_TOKEN}", "model": f"gpt-4 {OPENAI}"},
        {**usage, "event_id": "s5", "ts": t + 4, "key_id": AWS, "source": ANTHROPIC, "credential_type": JWT},
        {"kind": "audit", "event_id": "s6", "ts": t + 5, "provider": "bedrock", "key_id": "AKIAIOSFODNN7EXAMPLE",
         "action": f"ListFoundationModels {AWS}", "user_agent": ANTHROPIC, "error_code": OPENAI},
        {"kind": "billing", "event_id": "s7", "ts": t + 6, "provider": "openai", "amount_usd": 1.5,
         "scope": OPENAI, "line_item": f"key {ANTHROPIC}"},
    ]
    raw = [orjson.dumps(x) for x in out]
    raw += [  # bad input carrying secrets: dead letters must not keep them
        b'{"kind":"' + OPENAI.encode() + b'","event_id":"d1","ts":1}',  # msgspec echoes a bad tag value
        orjson.dumps({**usage, "event_id": "d2", "ts": ANTHROPIC, "key_id": "k"}),  # parse_ts echoes the value
        orjson.dumps({**usage, "event_id": "d3", "ts": t, "key_id": "k", "source_ip": f"{AWS}"}),  # echoed too
        b"not json Bearer " + BEARER_TOKEN.encode() + b" " + JWT.encode(),
        b"\xff" + OPENAI.encode() + b" " + AWS.encode(),  # invalid UTF-8 with secrets in it
        orjson.dumps({**usage, "event_id": "d4", "ts": t, "key_id": "k", "input_tokens": -1, "user_agent": "A" * 300 + OPENAI}),
        OPENAI.encode(), (b'{"pad":"' + b"x" * 4080 + b'","k":"' + ANTHROPIC.encode() + b'"}'),  # a secret cut by the bound
    ]
    return raw


def assert_clean(text: str, where: str) -> None:
    for s in SECRETS:
        for piece in (s, s[:24], s[-24:]):  # no fragment long enough to matter either
            assert piece not in text, f"secret fragment {piece[:12]}… in {where}"


def test_no_raw_secret_anywhere(tmp_path, ch_db, make_settings, caplog, receiver, provider):
    from keywatch.sinks.channels.dispatch import Dispatcher
    from keywatch.sinks.clickhouse import ClickHouseSink
    from keywatch.sinks.revocation.service import build_engine

    caplog.set_level(logging.DEBUG)
    client, base = ch_db
    db = base.clickhouse_database
    channels = tmp_path / "channels.yaml"
    channels.write_text(f"""
channels:
  hook: {{type: webhook, url: "http://127.0.0.1:{receiver.server_address[1]}/kw", secret_setting: webhook_secret}}
routes:
  - {{name: all, channels: [hook], rate_limit: null}}
""")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {name: any, kinds: ['*'], min_severity: low, action: disable, allow_irreversible: true}\n"
                      "circuit_breaker: {max_actions: 100, max_keys: 100}\nlimits: {per_hour: 100, per_project_per_hour: 100}\n"
                      "adapters: {openai: openai}\n")
    settings = make_settings(CLICKHOUSE_DATABASE=db, CHANNELS_FILE=str(channels), WEBHOOK_SECRET="whsec-test-0123456789",
                             REVOCATION_ENABLED="true", REVOCATION_POLICY_FILE=str(policy),
                             REVOCATION_OPENAI_BASE_URL=provider.url, REVOCATION_OPENAI_ADMIN_KEY=OPENAI,  # wrong key: echoed back
                             KEY_HASH_SECRET="test-fingerprint-key")
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines()) + b"\n")
    sink = ClickHouseSink(client, db)
    alerts = []

    def on_output(out):
        sink.write(out)
        alerts.extend(out.alerts)

    summary = replay([src], tmp_path / "alerts.jsonl", build_core(settings), EventDecoder.from_settings(settings, streaming=False),
                     dead_letters_out=tmp_path / "dead.jsonl", on_output=on_output)
    assert summary.events == 47 and summary.dead_letters == 8
    dead = [orjson.loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    from keywatch.stream.decode import DeadLetter

    sink.write_dead_letters([DeadLetter(d["reason"], d["error"], d["file"], -1, d["line"], d["index"],
                                        d["payload"].encode(), d["payload_size"], int(time.time() * 1000)) for d in dead])
    assert alerts, "no alert raised: channel and revocation paths would be untested"

    # Alerts go out to a channel (signed webhook) and to the revocation engine (whose provider call fails
    # with a 401 that echoes the presented admin key — which is itself key-shaped).
    async def hooks():
        d = Dispatcher.from_settings(settings, sink=sink)
        await d(alerts)
        await d.aclose()
        theft = IncidentBook().report(Finding(kind="key_theft", provider="openai", key_id=fingerprint(OPENAI, key),
                                              project="proj_s", ts_ms=T0, started_at_ms=T0, score=0.9, reasons=["x"]))
        return await build_engine(settings, client).handle([a for a in alerts if a.key_id] + [theft])

    from keywatch.models.alerts import Finding, IncidentBook

    key = b"test-fingerprint-key"
    decisions = asyncio.run(hooks())
    assert receiver.got and any(x.outcome == "failed" for x in decisions), [(x.outcome, x.reason, x.error) for x in decisions]
    assert any("401" in x.error for x in decisions if x.outcome == "failed")

    # The key ids that were secrets are now keyed fingerprints.
    keys = {r[0] for r in client.query(f"SELECT DISTINCT key_id FROM {db}.usage_events").result_rows}
    assert fingerprint(OPENAI, key) in keys and fingerprint(ANTHROPIC, key) in keys and fingerprint(AWS, key) in keys
    # Scan everything.
    tables = [r[0] for r in client.query(f"SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT LIKE '%View%'").result_rows]
    assert {"usage_events", "audit_events", "billing_events", "alerts", "dead_letters", "revocations", "alert_deliveries"} <= set(tables)
    dumped = {t: repr(client.query(f"SELECT * FROM {db}.`{t}`").result_rows) for t in tables}
    assert fingerprint(OPENAI, key) in dumped["usage_events"] and "kh_" in dumped["dead_letters"]  # the scan sees text
    for t, text in dumped.items():
        assert_clean(text, f"table {t}")
    assert_clean((tmp_path / "alerts.jsonl").read_text(), "the alerts file")
    assert_clean((tmp_path / "dead.jsonl").read_text(), "the dead-letters file")
    for headers, body in receiver.got:
        assert_clean(body.decode() + json.dumps(headers), "a webhook delivery")
    assert_clean(caplog.text + "".join(repr(r.args) for r in caplog.records), "the logs")
    assert_clean(repr(provider.requests[-1]["path"]), "a provider call path")
    from keywatch.models import events

    assert "key_known" in events._SHARED  # text shared between events (models/events.py), secrets scrubbed first
    assert_clean(repr(list(events._SHARED)), "the decoder's shared strings")


def test_fingerprints_are_keyed_hashes():
    a, b = EventDecoder(fingerprint_key=b"k1"), EventDecoder(fingerprint_key=b"k2")
    msg = orjson.dumps({"kind": "usage", "event_id": "e", "ts": T0, "provider": "openai", "key_id": OPENAI, "model": "m"})
    fa, fb = a.decode(msg)[0][0].key_id, b.decode(msg)[0][0].key_id
    assert fa.startswith("kh_") and fb.startswith("kh_") and fa != fb  # depends on the secret key …
    assert fa == a.decode(msg)[0][0].key_id  # … is stable (the same key always maps to the same id) …
    assert fa[3:] != hashlib.sha256(OPENAI.encode()).hexdigest()[:24]  # … and is not a plain (guessable) hash
    assert fa[3:] == hmac.new(b"k1", OPENAI.encode(), hashlib.sha256).hexdigest()[:24]
    s = Settings.from_env({"KEYWATCH_KEY_HASH_SECRET": "k2"})
    assert EventDecoder.from_settings(s, streaming=True).decode(msg)[0][0].key_id == fb


def test_every_secret_setting_can_come_from_a_file(tmp_path):
    from pydantic import SecretStr

    names = [n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)]
    assert {"api_token", "key_hash_secret", "revocation_webhook_secret", "webhook_secret"} <= set(names)
    env = {}
    for n in names:
        (tmp_path / n).write_text(f"value-of-{n}-{OPENAI}\n")
        env[f"KEYWATCH_{n.upper()}_FILE"] = str(tmp_path / n)
    s = Settings.from_env(env)
    for n in names:
        assert isinstance(getattr(s, n), SecretStr) and s.secret(n) == f"value-of-{n}-{OPENAI}"
    assert_clean(repr(s) + str(s.model_dump()), "the settings' repr")
