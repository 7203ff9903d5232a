"""Gateway bypass packs its settled buckets: the same findings as keeping them live, 12–36 B each
(60 B for outsized counts)."""

from __future__ import annotations

import pickle
import random

from keywatch.bench_memory import deep_size
from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent
from keywatch.models import gateway_buckets as gb
from keywatch.models.gateway_buckets import FORMATS, GATEWAY, NARROW, WIDE, count
from keywatch.models.gatewaybypass import GatewayBypassDetector
from keywatch.settings import Settings

T0 = 1_795_622_400_000
HOUR = 3_600_000
SETTINGS = {"lag_ms": HOUR // 2, "min_requests": 3, "retention_ms": 40 * HOUR}


class Unpacked(GatewayBypassDetector):
    """Every bucket stays live, as before settled buckets were packed."""

    def _settle(self, now: int) -> None:
        pass


def stream(seed: int = 5, n: int = 12_000) -> list[UsageEvent]:
    """66 hours of 12 keys behind a gateway; some provider usage arrives 4–8 hours late (its
    bucket settled and packed by then), some gateway logs 4 hours late, across two projects."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * 20_000 + rnd.randrange(5_000)
        key = f"k{rnd.randrange(12)}"
        if rnd.random() < 0.6:
            late = 4 * HOUR if rnd.random() < 0.05 else 0
            out.append(UsageEvent(event_id=f"g{i}", ts=ts - late, provider="litellm", key_id=key, model="m",
                                  input_tokens=rnd.randrange(5_000), source="gateway"))
        else:
            late = rnd.randrange(4, 9) * HOUR if rnd.random() < 0.15 else 0
            out.append(UsageEvent(event_id=f"p{i}", ts=ts - late, provider=rnd.choice(("openai", "anthropic")),
                                  key_id=key, model="m", project=rnd.choice(("p1", "p2", None)),
                                  requests=rnd.randrange(1, 30), input_tokens=rnd.randrange(20_000),
                                  cost_usd=rnd.random(), source="provider_usage"))
    return out


def alerts(core: DetectionCore, events: list[UsageEvent]) -> list[dict]:
    return [a.to_contract() for j in range(0, len(events), 500) for a in core.process(events[j:j + 500]).alerts]


def test_packed_buckets_give_the_same_findings_and_snapshots_keep_them() -> None:
    events = stream()
    half = len(events) // 2
    live = DetectionCore([Unpacked(**SETTINGS)])
    want = alerts(live, events)
    packed = DetectionCore([GatewayBypassDetector(**SETTINGS)])
    got = alerts(packed, events[:half])
    packed = pickle.loads(pickle.dumps(packed))  # a snapshot, half way
    got += alerts(packed, events[half:])
    assert len(want) > 50 and got == want
    det, ref = packed.detector("gateway_bypass"), live.detector("gateway_bypass")
    # Most buckets are packed, fixed-size records; the live lists hold the last two hours or so.
    records = sum(count(b) for b in det.settled.values())
    assert {b[0] for b in det.settled.values()} == {NARROW}  # provider usage in every key's buckets
    assert all((len(b) - 1) % FORMATS[NARROW].size == 0 for b in det.settled.values())
    assert records > 5 * sum(len(kb) // 2 for kb in det.buckets.values())
    assert records + sum(len(kb) // 2 for kb in det.buckets.values()) == sum(len(kb) // 2 for kb in ref.buckets.values())
    assert deep_size(det.buckets, det.settled) < deep_size(ref.buckets) / 3


def test_late_events_unpack_their_bucket_and_an_older_snapshot_loads() -> None:
    def mk(i: int, ts: int, src: str, req: int) -> UsageEvent:
        return UsageEvent(event_id=f"e{i}", ts=ts, provider="openai", key_id="k", model="m", requests=req,
                          source=src, project="p")

    first = [[mk(i, T0 + i * 60_000, "gateway", 1) for i in range(10)], [mk(20, T0 + 5, "provider_usage", 10)],
             [mk(21, T0 + 2 * HOUR, "gateway", 1)]]  # 10 of 10 seen in the first hour: no bypass
    cores = [DetectionCore([cls(lag_ms=0, min_requests=3)]) for cls in (GatewayBypassDetector, Unpacked)]
    for core in cores:
        assert not [a for batch in first for a in core.process(batch).alerts]
    det = cores[0].detector("gateway_bypass")
    assert len(det.settled["k"]) == 1 + FORMATS[NARROW].size and det.buckets["k"] == [T0 + 2 * HOUR, 1]  # the first hour packed
    old = cores[1].detector("gateway_bypass")  # as a snapshot from before packing: all live, no records
    state = {k: v for k, v in old.__dict__.items() if k not in ("settled", "labels", "label_ix")}
    old.__class__ = GatewayBypassDetector
    old.__dict__.clear()
    old.__setstate__(state)
    late = [mk(22, T0 + 30, "provider_usage", 40)]  # late provider usage for the packed hour: 40 unseen
    for core in cores:
        out = core.process(late).alerts
        assert len(out) == 1 and "40 of 50 provider-reported requests" in out[0].reasons[0]
    assert det.buckets["k"][:2] == [T0, [10, 50, 0.0, T0 + 5, "openai", "p"]] and "k" not in det.settled  # unpacked


def test_retention_is_a_setting() -> None:
    det = GatewayBypassDetector.from_settings(Settings.from_env({"KEYWATCH_GATEWAY_BYPASS_RETENTION_S": "7200"}))
    assert det.retention_ms == 7_200_000
    core = DetectionCore([det])
    core.process([UsageEvent(event_id=f"g{i}", ts=T0 + i * HOUR, provider="litellm", key_id="k", model="m",
                             source="gateway") for i in range(5)])
    core.process([UsageEvent(event_id="last", ts=T0 + 6 * HOUR, provider="litellm", key_id="k", model="m", source="gateway")])
    blob = det.settled.get("k", b"")
    assert blob[:1] == bytes((GATEWAY,))  # gateway only: 12-byte records
    kept = det.buckets.get("k", [])[::2] + [gb.unpack_record(blob, 1 + i * FORMATS[GATEWAY].size, det.labels)[0]
                                            for i in range(count(blob))]
    assert sorted(kept) == [T0 + h * HOUR for h in (4, 6)]  # older than 2 hours: gone


def outsized(events: list[UsageEvent]) -> list[UsageEvent]:
    """`events` with a few provider reports of more than 2^32 tokens: such keys' records fall back
    to the wide format (starts off the whole second, the other fallback, are in the next test)."""
    out = []
    for i, e in enumerate(events):
        if e.source == "provider_usage" and i % 97 == 0:
            e = UsageEvent(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "input_tokens": 5_000_000_000})
        out.append(e)
    return out


def test_outsized_counts_fall_back_to_wide_records_with_the_same_findings() -> None:
    events = outsized(stream(seed=9))
    want = alerts(DetectionCore([Unpacked(**SETTINGS)]), events)
    packed = DetectionCore([GatewayBypassDetector(**SETTINGS)])
    got = alerts(packed, events)
    formats = {b[0] for b in packed.detector("gateway_bypass").settled.values()}
    assert len(want) > 50 and got == want and formats == {WIDE, NARROW}


def test_records_read_back_exactly_in_every_format() -> None:
    rnd = random.Random(3)
    for _ in range(300):
        labels, index = [None], {}
        big = rnd.random() < 0.3
        items, start = [], rnd.randrange(0, 4_000_000) * 1000 + (rnd.randrange(1000) if rnd.random() < 0.1 else 0)
        for _ in range(rnd.randrange(1, 8)):
            start += rnd.choice((1000, 3_600_000))
            count_ = (lambda: rnd.randrange(1 << 63)) if big else (lambda: rnd.randrange(1 << 32))
            gw = count_() + (count_() << gb.TOK)
            v = gw if rnd.random() < 0.5 else [gw, count_() + (count_() << gb.TOK), rnd.random() * 1e6,
                                                start + rnd.randrange(3_600_000), rnd.choice("ab"), rnd.choice(("p", None))]
            items.append((start, v))
        cut = rnd.randrange(len(items))
        blob = gb.merge(gb.pack_records(items[:cut], labels, index) if cut else b"", items[cut:], labels, index)
        assert [gb.unpack_record(blob, 1 + i * FORMATS[blob[0]].size, labels) for i in range(count(blob))] == items
        assert gb.first_start(blob) == items[0][0] and gb.last_start(blob) == items[-1][0]
        s, v = rnd.choice(items)
        rest, got = gb.take(blob, s, labels)
        assert got == v and count(rest) == len(items) - 1 and gb.take(rest, s, labels)[1] is None
        kept = gb.drop_before(blob, s)
        assert count(kept) == sum(1 for t, _ in items if t >= s)
        assert blob[0] == gb.pack_records(items, labels, index)[0]  # merged: the narrowest format that holds all


def test_session_20_wide_records_load_in_todays_form() -> None:
    det = GatewayBypassDetector(**SETTINGS)
    alerts(DetectionCore([det]), stream(n=3_000))
    assert det.settled
    state = {**det.__dict__, "settled": {key: b"".join(FORMATS[WIDE].pack(*gb._decode(blob, at))
                                                          for at in range(1, len(blob), FORMATS[blob[0]].size))
                                         for key, blob in det.settled.items()}}
    del state["settled_format"]  # as session 20 pickled it
    old = GatewayBypassDetector.__new__(GatewayBypassDetector)
    old.__setstate__(state)
    assert old.settled == det.settled and old.settled_format == 2
