"""Gateway bypass: provider usage of a gateway-fronted key that the gateway never saw."""

from __future__ import annotations

import pickle

from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent
from keywatch.models.gatewaybypass import GatewayBypassDetector, load_key_map

T0 = 1_795_622_400_000  # a bucket boundary
HOUR = 3_600_000


def gw(i: int, key: str, ts: int, tokens: int = 100) -> UsageEvent:
    return UsageEvent(event_id=f"g-{key}-{i}", ts=ts, provider="litellm", key_id=key, model="gpt-4o",
                      input_tokens=tokens, source="gateway")


def prov(key: str, ts: int, requests: int, tokens: int, eid: str) -> UsageEvent:
    return UsageEvent(event_id=eid, ts=ts, provider="openai", key_id=key, model="gpt-4o", requests=requests,
                      input_tokens=tokens, cost_usd=2.0, source="provider_usage")


def run(events, **kw):
    core = DetectionCore([GatewayBypassDetector(**kw)])
    return [a for batch in events for a in core.process(batch).alerts]


def test_matching_traffic_raises_nothing_and_bypass_raises_high() -> None:
    hashed = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    kmap = {hashed: "key_abc123"}
    hour1 = [gw(i, hashed, T0 + i * 60_000) for i in range(20)]
    hour2 = [gw(100 + i, hashed, T0 + HOUR + i * 60_000) for i in range(20)]
    late = [gw(999, hashed, T0 + 3 * HOUR)]  # moves the watermark past bucket end + lag
    # Provider usage arrives late: hour 1 matches the gateway, hour 2 has 80 extra requests.
    provider = [prov("key_abc123", T0, 20, 2000, "p1"), prov("key_abc123", T0 + HOUR, 100, 10_000, "p2")]
    alerts = run([hour1, hour2, late, provider], key_map=kmap, lag_ms=HOUR)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.key_id, a.severity, a.provider) == ("key_theft", "key_abc123", "high", "openai")
    assert "used outside the gateway" in a.reasons[0] and "80 of 100" in a.reasons[0]
    assert a.started_at_ms == T0 + HOUR and a.detected_at_ms == T0 + 3 * HOUR
    assert a.details["gateway_requests"] == 20 and a.cost_impact_usd > 0


def test_same_key_id_on_both_sides_matches_without_a_map() -> None:
    both = [gw(i, "key_same", T0 + i) for i in range(5)] + [gw(50, "key_same", T0 + 3 * HOUR)]
    assert run([both, [prov("key_same", T0, 5, 500, "p")]], lag_ms=0) == []
    assert len(run([both, [prov("key_same", T0, 40, 500, "p")]], lag_ms=0)) == 1


def test_key_never_seen_at_the_gateway_is_not_judged() -> None:
    other = [gw(i, "key_other", T0 + 3 * HOUR + i) for i in range(3)]
    assert run([other, [prov("key_direct", T0, 500, 10**6, "p")]], lag_ms=0) == []


def test_bucket_waits_for_the_lag_allowance() -> None:
    det = GatewayBypassDetector(lag_ms=2 * HOUR)
    core = DetectionCore([det])
    core.process([gw(0, "k", T0), prov("k", T0, 50, 0, "p")])
    assert core.process([gw(1, "k", T0 + 2 * HOUR)]).alerts == []  # not yet settled
    assert len(core.process([gw(2, "k", T0 + 3 * HOUR)]).alerts) == 1


def test_key_map_yaml(tmp_path) -> None:
    p = tmp_path / "map.yaml"
    p.write_text("keys:\n  abc: key_1\n  def: key_2\n")
    assert load_key_map(p) == {"abc": "key_1", "def": "key_2"}
    p.write_text("abc: key_1\n")
    assert load_key_map(p) == {"abc": "key_1"}


def test_buckets_are_small_values_and_older_snapshots_judge_the_same() -> None:
    """A key's buckets are one flat list, [start, value, …] by start, one value for both
    sources: gateway counts one int (requests + tokens << 64: exact past 2^32 tokens), then a
    list once the provider has reported. Snapshots holding the older per-source dicts (of lists
    and dicts, or of ints and lists) or a dict per key load into it and judge alike."""
    events = [[gw(i, "key_big", T0 + i * 60_000, tokens=3_000_000_000) for i in range(3)],
              [gw(5, "key_big", T0 + HOUR + 5)],
              [prov("key_big", T0, 40, 9_000_000_000, "p1")]]
    late = [[gw(999, "key_big", T0 + 3 * HOUR)]]
    det = GatewayBypassDetector(lag_ms=HOUR)
    core = DetectionCore([det])
    for batch in events:
        core.process(batch)
    gw_counts = 3 + (9_000_000_000 << 64)
    assert det.buckets == {"key_big": [T0, [gw_counts, 40 + (9_000_000_000 << 64), 2.0, T0, "openai", None],
                                       T0 + HOUR, 1 + (100 << 64)]}
    per_key = pickle.loads(pickle.dumps(core))  # a dict per key, as 02ffe9a stored them
    pk = per_key.detector("gateway_bypass")
    state = dict(pk.__dict__, buckets={"key_big": dict(zip(det.buckets["key_big"][::2], det.buckets["key_big"][1::2]))})
    pk.__dict__.clear()
    pk.__setstate__(state)
    assert pk.buckets == det.buckets
    for old_gw, old_prov in ((lambda v: [v & ((1 << 64) - 1), v >> 64],
                              lambda v: dict(zip(("requests", "tokens", "cost", "provider", "project", "first_ms"), v))),
                             (lambda v: v, lambda v: v)):
        old = pickle.loads(pickle.dumps(core))  # as a snapshot from before: a dict per source
        od = old.detector("gateway_bypass")
        state = {k: v for k, v in od.__dict__.items() if k != "buckets"}
        state["gateway"] = {("key_big", T0): old_gw(gw_counts), ("key_big", T0 + HOUR): old_gw(1 + (100 << 64))}
        state["provider"] = {("key_big", T0): old_prov([40, 9_000_000_000, 2.0, "openai", None, T0])}
        od.__dict__.clear()
        od.__setstate__(state)
        assert od.buckets == det.buckets and "gateway" not in od.__dict__
        back = old.process(late[0]).alerts
        assert len(back) == 1 and "37 of 40" in back[0].reasons[0]
    new = core.process(late[0]).alerts
    assert [a.to_contract() for a in back] == [a.to_contract() for a in new]
