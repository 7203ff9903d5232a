"""Hostile input: no message crashes the decoder; every bad one is a dead letter with a reason.

Property-based (hypothesis) over raw bytes, arbitrary JSON and mutated valid events, plus the
classic attacks written out: oversized messages, deep nesting, invalid UTF-8, huge numbers,
timestamps far in the past or future. Out-of-order and duplicate events are *not* bad input:
the core deduplicates by `event_id` and hands detectors each batch in event-time order.
Examples per property: bounded for CI, `KEYWATCH_FUZZ_EXAMPLES=N` for a long run.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from keywatch.models.core import DetectionCore
from keywatch.models.events import MAX_COUNT, MAX_TS_MS, MIN_TS_MS, AuditEvent, BillingEvent, UsageEvent
from keywatch.stream.connectors.ingest import FORMATS, Ingester
from keywatch.stream.decode import EventDecoder, Origin, Reason
from security_helpers import fuzz_examples

REASONS = {v for k, v in vars(Reason).items() if k.isupper()}
BOUND = 256
GOOD = {"kind": "usage", "event_id": "e1", "ts": "2026-11-25T16:00:00.123Z", "provider": "openai",
        "key_id": "key_abc", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5, "source_ip": "34.1.2.3",
        "user_agent": "openai-python/1.50.0", "country": "US"}
FUZZ = settings(max_examples=fuzz_examples(200), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decoder(**kw) -> EventDecoder:
    return EventDecoder(**{"max_message_bytes": 64 * 1024, "max_events_per_message": 50, "payload_bound": BOUND, **kw})


def check(dec: EventDecoder, data: bytes) -> tuple[list, list]:
    """Decode and assert the invariants every input must satisfy."""
    ok, dead = dec.decode(data, Origin("t", 3, 42))
    for d in dead:
        assert d.reason in REASONS and d.error, d
        assert len(d.payload) <= BOUND and (d.topic, d.partition, d.offset) == ("t", 3, 42)
    for e in ok:
        assert type(e) in (UsageEvent, AuditEvent, BillingEvent)
        assert MIN_TS_MS <= e.ts_ms < MAX_TS_MS and 1 <= len(e.event_id) <= 128
        if type(e) is UsageEvent:
            assert e.key_id and e.model and 1 <= e.requests <= MAX_COUNT
            assert 0 <= e.input_tokens <= MAX_COUNT and 0 <= e.output_tokens <= MAX_COUNT
            assert e.cost_usd is None or (math.isfinite(e.cost_usd) and e.cost_usd >= 0)
        if type(e) is BillingEvent:
            assert math.isfinite(e.amount_usd)
        msgspec.json.encode(e)  # whatever is accepted can be written out again
    # Nothing vanishes: each element of the message is an event or a dead letter.
    whole = [d for d in dead if d.index == -1]
    if whole:
        assert not ok and len(dead) == 1
    else:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if doc is not None:
            n = len(doc) if isinstance(doc, list) else 1
            assert len(ok) + len(dead) == n, (len(ok), len(dead), n)
    return ok, dead


# --- properties ------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.sampled_from(["usage", "audit", "billing", "", "2026-11-25T16:00:00Z"]))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c, max_size=6),
                           max_leaves=30)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data):
    check(decoder(), data)


@FUZZ
@given(doc=json_values)
def test_fuzz_arbitrary_json(doc):
    check(decoder(), json.dumps(doc).encode())  # stdlib json: integers beyond 64 bits too


@FUZZ
@given(data=st.data(), n=st.integers(1, 8))
def test_fuzz_mutated_events(data, n):
    """Valid events with fields replaced, dropped or added; in a batch or alone."""
    events = []
    for i in range(n):
        e = dict(GOOD, event_id=f"e{i}")
        for _ in range(data.draw(st.integers(0, 3))):
            op = data.draw(st.sampled_from(["set", "drop", "add"]))
            field = data.draw(st.sampled_from(sorted(GOOD) + ["requests", "cost_usd", "status", "latency_ms", "period_end"]))
            if op == "drop":
                e.pop(field, None)
            else:
                e[field if op == "set" else data.draw(st.text(max_size=8))] = data.draw(json_values)
        events.append(e)
    raw = json.dumps(events if n > 1 or data.draw(st.booleans()) else events[0]).encode()
    check(decoder(), raw)
    # The same bytes, corrupted: one byte flipped somewhere.
    pos = data.draw(st.integers(0, len(raw) - 1))
    check(decoder(), raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:])


@FUZZ
@given(fmt=st.sampled_from(sorted(k for k, v in FORMATS.items() if v is not None)), data=st.data())
def test_fuzz_normaliser_files(tmp_path_factory, fmt, data):
    """Provider files cut short or corrupted: `keywatch ingest` never crashes, rejects are typed."""
    fix = Path(__file__).parent.parent / "connectors" / "fixtures"
    names = sorted(p.name for p in fix.glob("*.json*") if p.name.split("_")[0] in fmt.replace("-", "_"))
    raw = (fix / data.draw(st.sampled_from(names or ["openai_usage_completions_p1.json"]))).read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut] + data.draw(st.binary(max_size=64)) + raw[cut + data.draw(st.integers(0, 64)):]
    path = tmp_path_factory.mktemp("fz") / "input.json"
    path.write_bytes(raw)
    ing = Ingester(fmt, decoder())
    for ok, dead in ing.feed_file(path):
        for d in dead:
            assert d.reason and d.error is not None and len(d.payload) <= BOUND
    ing.finish(str(path))


# --- the classic attacks, written out ---------------------------------------------------------
def _reason(data: bytes, dec: EventDecoder | None = None) -> str:
    ok, dead = check(dec or decoder(), data)
    assert not ok and len(dead) == 1, (ok, dead)
    return dead[0].reason


def test_oversized_message_is_one_dead_letter_with_a_bounded_payload():
    assert _reason(b'{"kind":"usage","user_agent":"' + b"A" * 70_000 + b'"}') == Reason.OVERSIZED


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting(opener, closer):
    data = opener * 50_000 + closer * 50_000
    dec = decoder(max_message_bytes=1_048_576)
    assert _reason(data, dec) in (Reason.TOO_DEEP, Reason.VALIDATION)
    inner = orjson.dumps(GOOD)[:-1] + b',"extra":' + b"[" * 10_000 + b"]" * 10_000 + b"}"  # deep inside an event
    assert _reason(inner, dec) in (Reason.TOO_DEEP, Reason.VALIDATION, Reason.NOT_JSON)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
def test_invalid_utf8_inside_a_string(bad):
    data = orjson.dumps(GOOD).replace(b"openai-python", b"openai-" + bad + b"python")
    assert _reason(data) in (Reason.INVALID_UTF8, Reason.NOT_JSON)


@pytest.mark.parametrize("field, value", [
    ("input_tokens", b"1" + b"0" * 400), ("input_tokens", b"1e400"), ("input_tokens", b"-1"),
    ("requests", b"18446744073709551616"), ("cost_usd", b"1e308"), ("cost_usd", b"-0.5"),
    ("latency_ms", b"1e999"), ("status", b"100000"), ("ts", b"9" * 30), ("ts", b"-1"),
])
def test_huge_and_negative_numbers(field, value):
    base = orjson.dumps({k: v for k, v in GOOD.items() if k != field})
    assert _reason(base[:-1] + b',"' + field.encode() + b'":' + value + b"}") in (Reason.VALIDATION, Reason.NOT_JSON)


@pytest.mark.parametrize("ts", ["1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                                "9999-12-31T23:59:59Z", 0, 4_102_444_800_000, "2026-13-45T99:00:00Z"])
def test_timestamps_outside_any_plausible_range(ts):
    assert _reason(orjson.dumps({**GOOD, "ts": ts})) == Reason.VALIDATION


def test_timestamps_ahead_of_the_wall_clock_in_a_live_stream():
    """Replay accepts 2090 (a file may be from anywhere); the worker rejects events from the future."""
    live = decoder(max_future_skew_ms=3_600_000)
    far = orjson.dumps([GOOD, {**GOOD, "event_id": "future", "ts": "2090-01-01T00:00:00Z"}])
    ok, dead = check(live, far)
    assert [e.event_id for e in ok] == ["e1"] and [(d.reason, d.index) for d in dead] == [(Reason.FUTURE_TS, 1)]
    assert check(decoder(), far)[1] == []


def test_too_many_events_in_one_message():
    assert _reason(orjson.dumps([GOOD] * 51)) == Reason.TOO_MANY_EVENTS


# --- out-of-order and duplicates: handled, not rejected -----------------------------------------
class Recorder:
    """A detector that records what it is given."""

    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    def process(self, batch, ctx) -> None:
        self.batches.append([(e.event_id, e.ts_ms) for e in batch.usage])


@FUZZ
@given(seed=st.integers(0, 2**32), n=st.integers(1, 60), dup_share=st.floats(0, 0.8))
def test_fuzz_out_of_order_and_duplicates(seed, n, dup_share):
    rnd = random.Random(seed)
    events = [dict(GOOD, event_id=f"e{i}", ts=1_795_622_400_000 + rnd.randrange(0, 3_600_000)) for i in range(n)]
    stream = events + [dict(rnd.choice(events)) for _ in range(int(n * dup_share))]
    rnd.shuffle(stream)
    rec = Recorder()
    core = DetectionCore([rec])
    dec = decoder(max_events_per_message=10_000)
    half = len(stream) // 2
    seen = []
    for part in (stream[:half], stream[half:]):  # two batches: duplicates across batches too
        ok, dead = check(dec, orjson.dumps(part))
        assert not dead
        out = core.process(ok)
        seen.extend(e.event_id for e in out.usage)
    assert sorted(seen) == sorted(e["event_id"] for e in events)  # each event exactly once
    for batch in rec.batches:
        assert [t for _, t in batch] == sorted(t for _, t in batch)  # event-time order within a batch
        assert len({i for i, _ in batch}) == len(batch)


def test_the_documented_example_of_ordering_keeps_arrival_order_for_equal_times():
    core = DetectionCore([rec := Recorder()])
    ok, _ = decoder().decode(json.dumps([dict(GOOD, event_id=i, ts=1_795_622_400_000 + t)
                                         for i, t in (("c", 5), ("a", 1), ("b", 5), ("a", 9))]).encode())
    out = core.process(ok)
    assert rec.batches == [[("a", 1_795_622_400_001), ("c", 1_795_622_400_005), ("b", 1_795_622_400_005)]]
    assert out.duplicates == 1
