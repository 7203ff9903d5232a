"""Key-level cost spikes from the worker's partition cores explain the excess as one core does.

A root-cause breakdown subtracts each contributor's baseline share of the expected spend
(models/rootcause.py). One core learns those shares from its project rows; a partition core
(`build_core(settings, "partition")`, the worker's per-partition detection) has no project rows,
so it learns them from the groups its key rows show spend in. Over a simulated stream with
runaway loops, spread over three partition cores as the worker's input partitions spread it:
the key-level spikes are replay's, every field the same — root cause and reasons included —
except where a project-level spike was open at the same time (one core's project row stops
learning then; a partition core cannot know of it): there only the breakdown's figures differ.
"""

from __future__ import annotations

import zlib

import orjson

from keywatch.models.registry import build_core
from keywatch.simulate import SimConfig, generate
from keywatch.stream.decode import EventDecoder


def _key_spikes(alerts) -> dict[str, dict]:
    return {a.alert_id: a.to_contract() for a in alerts if a.kind == "cost_spike" and a.key_id is not None}


def test_partition_cores_give_one_cores_key_level_root_causes(make_settings):
    s = make_settings()
    cfg = SimConfig(keys=9, projects=2, days=1.2, seed=5, incidents=["runaway_loop", "loud_burst"], warmup_days=0.9)
    dec = EventDecoder.from_settings(s, streaming=False)
    events = [e for raw in generate(cfg) for e in dec.decode(orjson.dumps(raw))[0]]
    one, whole, project_spikes = build_core(s), {}, {}
    for i in range(0, len(events), 2000):
        out = one.process(events[i:i + 2000], rows=False).alerts
        whole.update(_key_spikes(out))
        project_spikes.update({a.alert_id: a for a in out if a.kind == "cost_spike" and a.key_id is None})
    parts, split = [build_core(s, "partition") for _ in range(3)], {}
    for i in range(0, len(events), 700):
        chunk = events[i:i + 700]
        for p, core in enumerate(parts):
            mine = [e for e in chunk if zlib.crc32(e.key_id.encode()) % 3 == p]
            split.update(_key_spikes(core.process(mine, rows=False).alerts))
    assert whole and set(split) == set(whole)
    same = 0
    for aid, a in whole.items():
        b = split[aid]
        assert {k: v for k, v in a.items() if k not in ("details", "reasons")} == {k: v for k, v in b.items() if k not in ("details", "reasons")}
        rest = lambda d: {k: v for k, v in d.items() if k != "root_cause"}  # noqa: E731
        assert rest(a["details"]) == rest(b["details"])
        rc_a, rc_b = a["details"]["root_cause"], b["details"]["root_cause"]
        assert [x["value"] for x in rc_a["keys"]] == [x["value"] for x in rc_b["keys"]]
        if rc_a == rc_b:
            assert a["reasons"] == b["reasons"]
            same += 1
        else:  # only while a spike of the key's project was open
            assert any(ps.project == a["project"] and ps.started_at_ms <= a["updated_at_ms"] and a["started_at_ms"] <= ps.updated_at_ms
                       for ps in project_spikes.values()), aid
    assert same >= 1, "no key-level spike explained exactly as one core does"
