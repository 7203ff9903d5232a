"""Split tiers (`KEYWATCH_WORKER_TIER`): `keys` workers + one `projects` worker = one `all` worker.

Scaling out by running several `all` workers in one group judges project-level detection per
worker share. Split, the `keys` tier (any number of workers, one group) runs the per-key
detectors and stores the events and dead letters; one `projects` worker (group
`<worker_id>-projects`, every partition) runs the project/provider-level detectors on events
priced and deduplicated as a partition core would. In process, over the same messages (with a
bad one and a re-sent duplicate): the two tiers together raise exactly the alerts and store
exactly the score rows of one `all` worker (and replay's alert ids), every event and dead letter
is stored once, and each tier keeps its own snapshots and offsets.
"""

from __future__ import annotations

import orjson
import pytest

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.simulate import SimConfig, generate
from keywatch.sinks.clickhouse import ClickHouseSink
from keywatch.sinks.migrate import migrate, migration_params
from keywatch.stream.decode import EventDecoder
from keywatch.stream.metrics import Metrics
from keywatch.stream.partitions import tier_cores
from keywatch.stream.pipeline import Msg, Pipeline
from keywatch.stream.produce import message_key, partition_of
from keywatch.stream.runtime import WorkerRuntime
from keywatch.stream.state import StreamState
from stream_helpers import TOPIC, pipeline_messages


def _pipeline(client, settings, tier: str) -> Pipeline:
    s = settings.model_copy(update={"worker_tier": tier})
    db = s.clickhouse_database
    rt = WorkerRuntime(settings=s, sink=ClickHouseSink(client, db), core=tier_cores(s), metrics=Metrics())
    state = StreamState(client, db, s.group_id, b"secret")
    hw = {f"{TOPIC}:{p}": o for p, o in state.high_water(TOPIC).items()}
    pipe = Pipeline(rt, EventDecoder.from_settings(s, streaming=True), state, topic=TOPIC, high_water=hw)
    # A fixed clock: no partition counts as idle because the machine was slow between two batches,
    # so both runs release project-level events by event time alone (the end releases the rest).
    pipe.now = lambda: 0.0
    pipe.assign({0, 1, 2})
    return pipe


def _run(pipes: list[Pipeline], msgs: list[Msg]) -> list[dict]:
    alerts = []
    for i in range(0, len(msgs), 60):
        for pipe in pipes:  # each tier reads every message (its own consumer group)
            res = pipe.process(msgs[i:i + 60])
            pipe.write(res)
            alerts += [a.to_contract() for a in (res.out.alerts if res.out is not None else [])]
        if i % 600 == 0:
            for pipe in pipes:
                pipe.snapshot()
    for pipe in pipes:
        pipe.now = lambda: 1e12  # the stream has ended: project-level events still waiting go
        res = pipe.process([])
        pipe.write(res)
        alerts += [a.to_contract() for a in (res.out.alerts if res.out is not None else [])]
    return alerts


def _stored(client, db: str) -> dict:
    q = lambda sql: client.query(sql.format(db=db)).result_rows  # noqa: E731
    return {
        "usage": q("SELECT count(), uniqExact(event_id) FROM {db}.usage_events")[0],
        "dead": q("SELECT count() FROM {db}.dead_letters")[0][0],
        "scores": sorted(q("SELECT detector, key_id, project, toUnixTimestamp64Milli(ts), round(score, 9) FROM {db}.scores")),
        "alerts": sorted(r[0] for r in q("SELECT alert_id FROM {db}.alerts FINAL")),
    }


@pytest.fixture
def second_db(ch_db):
    client, settings = ch_db
    s = settings.model_copy(update={"clickhouse_database": settings.clickhouse_database + "_all"})
    migrate(client, migration_params(s))
    yield s
    client.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")


def test_keys_and_projects_tiers_equal_one_worker(ch_db, second_db, tmp_path):
    client, settings = ch_db
    budgets = tmp_path / "budgets.yaml"
    cfg = SimConfig(keys=9, projects=2, days=1.2, seed=5, incidents=["runaway_loop", "loud_burst"], warmup_days=0.9)
    events = list(generate(cfg))
    projects = sorted({e["project"] for e in events if e.get("project")})
    budgets.write_text("budgets:\n" + "".join(f"  - {{project: {p}, amount_usd: 2, period: day}}\n" for p in projects))
    settings = settings.model_copy(update={"budgets_file": budgets})
    everything = second_db.model_copy(update={"budgets_file": budgets})
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    replay([src], tmp_path / "alerts.jsonl", build_core(settings), EventDecoder.from_settings(settings, streaming=False))
    ref = {orjson.loads(line)["alert_id"]: orjson.loads(line)["kind"] for line in (tmp_path / "alerts.jsonl").read_bytes().splitlines()}
    assert {"key_theft", "cost_spike", "budget"} <= set(ref.values())

    msgs = pipeline_messages(events)
    # a bad message and a re-sent copy of an event, at the next offsets of their partitions (the
    # copy on its key's, as a producer sends it: elsewhere it would be another key's first event)
    n = {p: max(m.offset for m in msgs if m.partition == p) for p in range(3)}
    again = partition_of(message_key(events[-100]), 3)
    msgs += [Msg(TOPIC, 1, n[1] + 1, b'{"kind": "usage", "ts": "not a time"'),
             Msg(TOPIC, again, n[again] + 1 + (again == 1), orjson.dumps(events[-100]))]

    one = _run([_pipeline(client, everything, "all")], msgs)
    keys, proj = _pipeline(client, settings, "keys"), _pipeline(client, settings, "projects")
    assert proj.cores.core_for(0).detectors == [] and keys.cores.global_core is None
    split = _run([keys, proj], msgs)

    assert {a["alert_id"] for a in split} == {a["alert_id"] for a in one}
    # replay's ids too, for key theft and cost spikes (a budget's crossing event depends on the
    # arrival order of 10-event messages, which is not replay's event-time order)
    assert {a["alert_id"] for a in split if a["kind"] in ("key_theft", "cost_spike")} == {
        i for i, k in ref.items() if k in ("key_theft", "cost_spike")}
    kinds_by_tier = {a["kind"] for a in split}
    assert {"key_theft", "cost_spike", "budget"} <= kinds_by_tier
    a, b = _stored(client, everything.clickhouse_database), _stored(client, settings.clickhouse_database)
    assert b == a
    assert b["usage"] == (len(events), len(events)) and b["dead"] == 1
    # each tier its own state rows: partition snapshots under both groups, the global core's only
    # under the projects group, and the projects tier's partition cores hold no detector
    rows = client.query(f"SELECT worker_id, scope FROM {settings.clickhouse_database}.detector_snapshots").result_rows
    by_group = {g: {s for w, s in rows if w == g} for g in ("keywatch-worker", "keywatch-worker-projects")}
    assert by_group["keywatch-worker"] == {f"p:{TOPIC}:{p}" for p in range(3)}
    assert by_group["keywatch-worker-projects"] == {f"p:{TOPIC}:{p}" for p in range(3)} | {f"g:{TOPIC}"}
    proj.snapshot()
    again = _pipeline(client, settings, "projects")
    assert again.in_state == proj.in_state and again.cores.core_for(0).detectors == []
