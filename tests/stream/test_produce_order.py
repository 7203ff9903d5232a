"""The producer keeps every partition in event-time order, so the worker's key-level results do
not depend on where its batches are cut (stream/produce.py).

Grouped per key, as the producer used to, a quiet key's batched message spans hours of a backlog
and lands behind messages that reach later: cost-spike detection then counts its events in a
later minute, at places that depend on the batch cuts (on the bench's backlog: 55 key-level
spikes in 1,000-event batches, 5 in 7,000-event ones)."""

from __future__ import annotations

import orjson
from kafka import KafkaConsumer, TopicPartition

from keywatch.models.registry import build_core
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, generate
from keywatch.stream.broker import ensure_topics
from keywatch.stream.decode import EventDecoder
from keywatch.stream.produce import EventProducer, Placement, gateway_key_map, message_key, partition_messages, partition_of

PARTS = 4


def _stream() -> list[dict]:
    return list(generate(SimConfig(keys=20, days=2.0, seed=1, incidents=["loud_burst", "runaway_loop"])))


def _per_key_messages(events: list[dict], size: int):
    """The old grouping: up to `size` events of one key per message (the control)."""
    pending: dict = {}
    for e in events:
        k = message_key(e)
        buf = pending.setdefault(k, [])
        buf.append(e)
        if len(buf) >= size:
            yield partition_of(k, PARTS), pending.pop(k)
    for k, buf in pending.items():
        yield partition_of(k, PARTS), buf


def _key_spikes(settings: Settings, dec: EventDecoder, parts: dict[int, list], cut: int) -> tuple[set[tuple], int]:
    """Key-level cost spikes of one partition core per partition, fed `cut`-event batches, and
    the events the cores counted late."""
    out, late = set(), 0
    for msgs in parts.values():
        core = build_core(settings, "partition")
        evs = [e for g in msgs for e in dec.decode(orjson.dumps(g))[0]]
        for i in range(0, len(evs), cut):
            o = core.process(evs[i:i + cut], rows=False)
            out |= {(a.alert_id, a.key_id, a.detected_at) for a in o.alerts if a.kind == "cost_spike"}
            late += o.late
    return out, late


def _by_partition(messages) -> dict[int, list[list[dict]]]:
    parts: dict[int, list] = {p: [] for p in range(PARTS)}
    for p, group in messages:
        parts[p].append(group)
    return parts


def test_partition_cores_find_one_cores_key_spikes_whatever_the_batch_cuts():
    settings = Settings.from_env({})
    dec = EventDecoder.from_settings(settings, streaming=True)
    events = _stream()
    # one core over the time-ordered stream: what `keywatch replay` finds
    one = build_core(settings)
    flat = [e for i in range(0, len(events), 100) for e in dec.decode(orjson.dumps(events[i:i + 100]))[0]]
    ref = set()
    for i in range(0, len(flat), 5000):
        ref |= {(a.alert_id, a.key_id, a.detected_at) for a in one.process(flat[i:i + 5000], rows=False).alerts
                if a.kind == "cost_spike" and a.key_id}
    assert len(ref) == 2  # the runaway loop and the burst's spend

    parts = _by_partition(partition_messages(events, 100, PARTS))
    for msgs in parts.values():  # each partition holds its events in the input's (time) order
        ts = [e["ts"] for g in msgs for e in g]
        assert ts == sorted(ts)
    assert _key_spikes(settings, dec, parts, 1000) == (ref, 0)
    assert _key_spikes(settings, dec, parts, 7000) == (ref, 0)

    # control: grouped per key, no partition is in time order and the spikes move with the cuts;
    # the cores count the events that came after their minute (`keywatch_late_events_total`)
    old = _by_partition(_per_key_messages(events, 100))
    spikes, late = _key_spikes(settings, dec, old, 1000)
    assert spikes != ref and late > 1000


def test_producer_places_each_key_where_kafkas_partitioner_does(broker):
    """Batched messages hold several keys, so the producer picks their partition itself: every
    key's events must land where a keyed one-event message would (the default partitioner), in
    time order, and nothing may be lost."""
    events = _stream()[:3000]
    topics = {"batched": "order.batched", "single": "order.single"}
    ensure_topics(broker.bootstrap, [(t, PARTS) for t in topics.values()])
    for name, topic in topics.items():
        with EventProducer(broker.bootstrap, topic) as p:
            p.send_events(events, batch_size=100 if name == "batched" else 1)
    placed: dict[str, dict[str, set[int]]] = {}
    for name, topic in topics.items():
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTS)]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            got: dict[int, list[dict]] = {p: [] for p in range(PARTS)}
            for rec in c:
                v = orjson.loads(rec.value)
                got[rec.partition].extend(v if isinstance(v, list) else [v])
        finally:
            c.close()
        assert sum(len(v) for v in got.values()) == len(events), name
        for p, evs in got.items():
            assert [e["ts"] for e in evs] == sorted(e["ts"] for e in evs), (name, p)
        placed[name] = {}
        for p, evs in got.items():
            for e in evs:
                placed[name].setdefault(message_key(e).decode(), set()).add(p)
    assert placed["batched"] == placed["single"]  # single: placed by the broker client's partitioner
    assert all(len(ps) == 1 for ps in placed["batched"].values())
    assert len({p for ps in placed["batched"].values() for p in ps}) > 1


def _gateway_stream() -> list[dict]:
    """A gateway-fronted key (gateway id `gw-1`, provider id `key_A`): each hour the gateway
    logs 30 requests and the provider bills 30, except hour 2, billed 300 (used around the gateway)."""
    t0, out = 1795622400000, []
    for h in range(6):
        for m in range(0, 60, 2):
            ts = t0 + h * 3_600_000 + m * 60_000
            out.append({"kind": "usage", "event_id": f"g{h}-{m}", "ts": ts, "provider": "litellm", "key_id": "gw-1",
                        "model": "gpt-4o", "requests": 1, "source": "gateway"})
        out.append({"kind": "usage", "event_id": f"p{h}", "ts": t0 + h * 3_600_000 + 3_599_000, "provider": "openai",
                    "key_id": "key_A", "model": "gpt-4o", "requests": 300 if h == 2 else 30, "source": "provider_usage"})
    return sorted(out, key=lambda e: e["ts"])


def test_gateway_events_meet_their_provider_key(tmp_path):
    """Gateway bypass compares a key's gateway log with the provider's bill: the producer places a
    gateway event by the provider key its gateway key maps to, so both sides meet in one core."""
    (tmp_path / "map.yaml").write_text("gw-1: key_A\n")
    settings = Settings.from_env({"KEYWATCH_GATEWAY_KEY_MAP_FILE": str(tmp_path / "map.yaml")})
    key_map = gateway_key_map(settings)
    assert partition_of(b"gw-1", PARTS) != partition_of(b"key_A", PARTS)  # apart unless mapped
    dec = EventDecoder.from_settings(settings, streaming=True)

    def bypass_alerts(gateway_map: dict | None) -> list:
        alerts = []
        cores = {}
        for p, group in partition_messages(_gateway_stream(), 10, PARTS, gateway_map):
            core = cores.setdefault(p, build_core(settings, "partition"))
            alerts += [a for a in core.process(dec.decode(orjson.dumps(group))[0], rows=False).alerts
                       if a.kind == "key_theft" and a.key_id == "key_A"]
        return alerts

    found = bypass_alerts(key_map)
    assert found and "gateway" in " ".join(found[0].reasons)
    assert bypass_alerts(None) == []  # placed by the gateway's own key id: never compared


def test_placed_by_project_each_project_on_one_partition_in_order():
    """`KEYWATCH_PLACEMENT=project` (`Placement(by_project=True)`): every event of a project's keys
    (audit events naming only a principal included) on one partition, each partition still in
    the input's order; placed by key (the default) the same projects spread over several."""
    events = list(generate(SimConfig(keys=24, projects=3, days=1.2, seed=2, warmup_days=0.6, incidents=["hard_tamper"])))
    project_of = {(e.get("provider"), e["key_id"]): e["project"] for e in events if e.get("key_id") and e.get("project")}
    principal_key = {}
    for e in events:
        if e.get("key_id") and e.get("principal"):
            principal_key.setdefault((e.get("provider"), e["principal"]), e["key_id"])
    assert any(not e.get("key_id") and e.get("principal") for e in events)  # principal-only audits are there

    def project(e):
        key = e.get("key_id") or principal_key.get((e.get("provider"), e.get("principal")))
        return e.get("project") or project_of.get((e.get("provider"), key))

    for by_project, spread in ((True, False), (False, True)):
        where: dict = {}
        for p, group in partition_messages(events, 100, PARTS, placement=Placement(by_project=by_project)):
            for e in group:
                where.setdefault(project(e), set()).add(p)
        assert (max(len(ps) for pr, ps in where.items() if pr) > 1) is spread, where
    parts = _by_partition(partition_messages(events, 100, PARTS, placement=Placement(by_project=True)))
    assert all(ts == sorted(ts) for ts in ([e["ts"] for g in groups for e in g] for groups in parts.values()))
