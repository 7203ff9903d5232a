"""Decoding and validation: every bad-input class becomes one typed dead letter; good input flows."""

from __future__ import annotations

import orjson
import pytest

from keywatch.stream.decode import EventDecoder, Origin, Reason, looks_like_secret

GOOD = {"kind": "usage", "event_id": "e1", "ts": "2026-11-25T16:00:00.123Z", "provider": "openai",
        "key_id": "key_abc", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}


def enc(obj) -> bytes:
    return orjson.dumps(obj)


@pytest.fixture
def dec() -> EventDecoder:
    return EventDecoder(max_message_bytes=8192, max_events_per_message=50, payload_bound=64)


def test_single_object_and_array_are_both_accepted(dec):
    ok, bad = dec.decode(enc(GOOD))
    assert [e.event_id for e in ok] == ["e1"] and not bad
    ok, bad = dec.decode(enc([GOOD, {**GOOD, "event_id": "e2"}]))
    assert [e.event_id for e in ok] == ["e1", "e2"] and not bad


def test_timestamps_normalise_to_epoch_ms(dec):
    a, _ = dec.decode(enc(GOOD))
    b, _ = dec.decode(enc({**GOOD, "ts": 1795622400123}))
    c, _ = dec.decode(enc({**GOOD, "ts": "2026-11-25T18:00:00.123+02:00"}))
    assert a[0].ts_ms == b[0].ts_ms == c[0].ts_ms == 1795622400123


def test_defaults_follow_the_contract(dec):
    ok, _ = dec.decode(enc({k: v for k, v in GOOD.items() if k not in ("input_tokens", "output_tokens")}))
    e = ok[0]
    assert (e.requests, e.input_tokens, e.output_tokens, e.cached_input_tokens, e.cost_usd) == (1, 0, 0, 0, None)


def test_audit_and_billing_kinds(dec):
    ok, bad = dec.decode(enc([
        {"kind": "audit", "event_id": "a1", "ts": 1795622400000, "provider": "bedrock", "action": "ListFoundationModels"},
        {"kind": "billing", "event_id": "b1", "ts": "2026-11-25T00:00:00Z", "provider": "openai", "amount_usd": 12.5,
         "period_end": "2026-11-26T00:00:00Z"},
    ]))
    assert not bad and [type(e).__name__ for e in ok] == ["AuditEvent", "BillingEvent"]


@pytest.mark.parametrize(
    "payload, reason, needle",
    [
        (b"\xff\xfe{\"kind\":1}", Reason.INVALID_UTF8, "UTF-8"),
        (b"{not json", Reason.NOT_JSON, "malformed"),
        (b"   ", Reason.EMPTY, "empty"),
        (enc({**GOOD, "input_tokens": -1}), Reason.VALIDATION, "input_tokens"),
        (enc({**GOOD, "input_tokens": "ten"}), Reason.VALIDATION, "input_tokens"),
        (enc({**GOOD, "input_tokens": 1.5}), Reason.VALIDATION, "input_tokens"),
        (enc({**GOOD, "output_tokens": 10**15}), Reason.VALIDATION, "output_tokens"),
        (b'{"kind":"usage","event_id":"e","ts":1795622400000,"provider":"p","key_id":"k","model":"m","cost_usd":NaN}', Reason.NOT_JSON, "malformed"),
        (enc({k: v for k, v in GOOD.items() if k != "key_id"}), Reason.VALIDATION, "key_id"),
        (enc({k: v for k, v in GOOD.items() if k != "model"}), Reason.VALIDATION, "model"),
        (enc({k: v for k, v in GOOD.items() if k != "event_id"}), Reason.VALIDATION, "event_id"),
        (enc({**GOOD, "event_id": "x" * 129}), Reason.VALIDATION, "event_id"),
        (enc({**GOOD, "ts": "yesterday"}), Reason.VALIDATION, "RFC 3339"),
        (enc({**GOOD, "ts": "2026-11-25T16:00:00"}), Reason.VALIDATION, "time zone"),
        (enc({**GOOD, "ts": 12}), Reason.VALIDATION, "outside"),
        (enc({**GOOD, "ts": "2199-01-01T00:00:00Z"}), Reason.VALIDATION, "outside"),
        (enc({**GOOD, "kind": "telemetry"}), Reason.VALIDATION, "kind"),
        (enc({**GOOD, "source_ip": "999.1.1.1"}), Reason.VALIDATION, "source_ip"),
        (enc({**GOOD, "country": "germany"}), Reason.VALIDATION, "country"),
        (enc({**GOOD, "country": "us"}), Reason.VALIDATION, "country"),  # two letters, not capitals
        (enc({**GOOD, "country": "U1"}), Reason.VALIDATION, "country"),
        (enc({**GOOD, "country": "US\n"}), Reason.VALIDATION, "country"),
        (b'{"kind":"audit","event_id":"a","ts":1795622400000,"provider":"p","action":"x","country":"de"}', Reason.VALIDATION, "country"),
        (enc({**GOOD, "requests": 0}), Reason.VALIDATION, "requests"),
        (b"[" * 2000 + b"]" * 2000, Reason.TOO_DEEP, "deep"),
        (b"[" + b",".join([b'{"kind":"audit","event_id":"a","ts":1795622400000,"provider":"p","action":"x"}'] * 51) + b"]",
         Reason.TOO_MANY_EVENTS, "51 events"),
        (enc({**GOOD, "user_agent": "x" * 9000}), Reason.OVERSIZED, "bytes"),
    ],
)
def test_bad_input_is_one_typed_dead_letter(dec, payload, reason, needle):
    ok, bad = dec.decode(payload, Origin("keywatch.events", 3, 42))
    assert ok == []
    assert len(bad) == 1
    d = bad[0]
    assert d.reason == reason
    assert needle.lower() in d.error.lower()
    assert (d.topic, d.partition, d.offset) == ("keywatch.events", 3, 42)
    assert len(d.payload) <= 64 and d.payload_size == len(payload)


def test_bad_element_in_array_keeps_the_good_ones(dec):
    ok, bad = dec.decode(enc([GOOD, {**GOOD, "event_id": "e2", "input_tokens": -5}, {**GOOD, "event_id": "e3"}]), Origin("t", 0, 9))
    assert [e.event_id for e in ok] == ["e1", "e3"]
    assert [(d.index, d.reason) for d in bad] == [(1, Reason.VALIDATION)]


def test_future_timestamps_rejected_only_when_streaming():
    streaming = EventDecoder(max_future_skew_ms=3_600_000)
    replaying = EventDecoder(max_future_skew_ms=None)
    future = enc({**GOOD, "ts": "2099-01-01T00:00:00Z"})
    assert streaming.decode(future)[1][0].reason == Reason.FUTURE_TS
    assert len(replaying.decode(future)[0]) == 1


def test_raw_secret_in_key_id_is_replaced_by_keyed_hash():
    secret = "sk-proj-" + "A1b2C3d4" * 6
    d1 = EventDecoder(fingerprint_key=b"one")
    d2 = EventDecoder(fingerprint_key=b"two")
    e1 = d1.decode(enc({**GOOD, "key_id": secret}))[0][0]
    e2 = d2.decode(enc({**GOOD, "key_id": secret}))[0][0]
    assert e1.key_id.startswith("kh_") and secret not in e1.key_id
    assert e1.key_id != e2.key_id  # keyed: not a plain hash anyone can precompute
    assert d1.decode(enc({**GOOD, "key_id": secret}))[0][0].key_id == e1.key_id  # stable


def test_secret_like_payload_is_redacted_in_dead_letters(dec):
    secret = "sk-ant-api03-" + "x" * 40
    _, bad = dec.decode(secret.encode())
    assert secret.encode() not in bad[0].payload


@pytest.mark.parametrize("value, expected", [
    ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", True), ("sk-ant-api03-abcdefghijklmnopqrstuv", True),
    ("key_abc123", False), ("AKIAIOSFODNN7EXAMPLE", False), ("apikey_01Rj2N8SVvo6BePZj99NhmiT", False),
])
def test_secret_patterns(value, expected):
    assert looks_like_secret(value) is expected


def test_text_secrets_are_scrubbed_whatever_the_json_spelling(dec):
    # The whole-message pre-check only decides whether fields get a look: a secret written with
    # JSON escapes (`\/`, `\u…`) is scrubbed exactly like the same secret spelt plainly.
    aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    plain = enc({**GOOD, "user_agent": f"boto3 {aws}"})
    for raw in (plain, plain.replace(b"/", b"\\/"), plain.replace(b"w", b"\\u0077", 1)):
        ok, _ = dec.decode(raw)
        assert aws not in ok[0].user_agent and ok[0].user_agent == dec.decode(plain)[0][0].user_agent
        assert dec.decode_block([raw])[0].user_agent == ok[0].user_agent
    assert dec.decode(enc({**GOOD, "user_agent": "curl/8.5 (x86_64)"}))[0][0].user_agent == "curl/8.5 (x86_64)"


def test_key_ids_seen_plain_do_not_hide_a_secret_later(dec):
    secret = "sk-proj-" + "A1b2C3d4" * 6
    for _ in range(2):
        assert dec.decode(enc(GOOD))[0][0].key_id == "key_abc"
        assert dec.decode_block([enc({**GOOD, "key_id": secret})])[0].key_id.startswith("kh_")


def test_decoded_events_share_their_text_and_the_table_is_bounded(dec, monkeypatch):
    """Equal text fields of decoded events are one object (models/events.py `share_text`: detection's
    lookups then hash and compare nothing afresh); past its bound the table starts again."""
    from keywatch.models import events

    ok, _ = dec.decode(enc([{**GOOD, "event_id": f"e{i}", "user_agent": "sdk/1.0", "source_ip": "34.1.2.3"}
                            for i in range(3)]))
    assert all(e.key_id is ok[0].key_id and e.user_agent is ok[0].user_agent and e.source_ip is ok[0].source_ip
               for e in ok[1:])
    assert [e.key_id for e in ok] == ["key_abc"] * 3
    monkeypatch.setattr(events, "SHARED_MAX", 10)
    for i in range(20):
        dec.decode(enc({**GOOD, "event_id": f"x{i}", "key_id": f"key_{i}"}))
        assert len(events._SHARED) <= 10 + 10  # one event's fields past the bound at most
