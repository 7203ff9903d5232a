"""Idle keys' key-theft state is packed in memory (models/keytheft_cold.py): the same alerts,
scores and rows as with every key unpacked, a fraction of the memory, and a packed key still
expires, snapshots, answers `describe_key` and takes feedback."""

from __future__ import annotations

import pickle
import sys
import zlib

import orjson
import pytest

from keywatch.bench_memory import deep_size
from keywatch.models.keytheft_cold import pack, packed_last_ts, unpack
from keywatch.models.keytheft_zdict import CURRENT, DICTIONARIES
from keywatch.models.keytheft_state import dump_state, load_state
from keywatch.models.registry import build_core
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, generate
from keywatch.stream.decode import EventDecoder
from keywatch.stream.partitions import PartitionCores

from .test_signals import MIN, T0, settled_core, theft_alerts, usage

HOUR = 60 * MIN


def _events(cfg: SimConfig) -> list:
    d = EventDecoder()
    lines = [orjson.dumps(e) for e in generate(cfg)]
    return [e for i in range(0, len(lines), 5000) for e in d.decode_block(lines[i:i + 5000])]


def _run(events: list, cold_s: float) -> tuple[list, list, dict]:
    core = build_core(Settings().model_copy(update={"key_cold_after_s": cold_s}))
    det = core.detector("key_theft")
    alerts, scores, rows, seen = [], [], {}, {"packed": 0, "back": 0}
    for i in range(0, len(events), 1500):  # sweeps fall inside batches, as in a worker
        before = set(det.cold)
        out = core.process(events[i:i + 1500])
        seen["packed"] = max(seen["packed"], len(det.cold))
        seen["back"] += len(before - set(det.cold))
        alerts += [a.to_contract() for a in out.alerts]
        scores += out.scores
        for table, r in out.rows.items():
            rows.setdefault(table, []).extend(r)
    return alerts, [scores, rows], seen


def test_packing_idle_keys_changes_no_alert_score_or_row():
    cfg = SimConfig(keys=24, projects=3, days=2.5, seed=11, incidents=["loud_burst", "low_and_slow", "probe_only",
                                                                        "reseller_proxy"], warmup_days=1.2)
    events = _events(cfg)
    alerts, out, seen = _run(events, 3600.0)
    ref_alerts, ref_out, ref_seen = _run(events, 0.0)
    assert ref_seen == {"packed": 0, "back": 0}  # the control packs nothing
    assert seen["packed"] >= 3 and seen["back"] >= 3  # keys went idle, were packed, and came back
    assert any(a["kind"] == "key_theft" for a in alerts)
    assert alerts == ref_alerts
    assert out[0] == ref_out[0]
    # Rows as sets: cost-spike rows are emitted in bank-row order, and packed key rows (the same
    # setting packs them, models/costspike_cold.py) free bank rows that other series then reuse.
    assert {t: sorted(map(orjson.dumps, r)) for t, r in out[1].items()} == {t: sorted(map(orjson.dumps, r)) for t, r in ref_out[1].items()}


def test_a_packed_key_is_small_and_comes_back_as_it_was():
    core = settled_core(minutes=2 * 1440)
    det = core.detector("key_theft")
    st = det.keys[("openai", "k1")]
    end = T0 + 2 * 1440 * MIN
    core.process([usage(0, end + 70 * MIN, key="k2")])  # past the sweep mark, k1 idle 70 minutes
    assert ("openai", "k1") in det.cold and ("openai", "k1") not in det.keys
    blob = det.cold[("openai", "k1")]
    assert len(blob) < 1200 and sys.getsizeof(blob) < deep_size(st) / 3
    described = det.describe_key("k1")  # read from the packed state; it stays packed
    assert described["baseline"] == st.base.summary() and described["baseline"]["requests_learned"] > 0
    assert ("openai", "k1") in det.cold
    out = core.process([usage(i, end + 71 * MIN + i * MIN, key="k1") for i in range(5)])  # the known host
    back = det.keys[("openai", "k1")]
    assert ("openai", "k1") not in det.cold and back.base.learned >= st.base.learned and not theft_alerts(out)
    out = core.process([usage(i, end + 80 * MIN + i * 5_000, key="k1", ip=f"45.9.9.{i}", country="KP") for i in range(60)])
    assert theft_alerts(out)  # a stranger is still caught


def test_keys_with_open_evidence_are_not_packed():
    core = settled_core(minutes=2 * 1440)
    det = core.detector("key_theft")
    end = T0 + 2 * 1440 * MIN
    core.process([usage(f"x{i}", end + i * 3000, ip=f"45.{i}.7.7", country="RU") for i in range(3)])
    assert det.keys[("openai", "k1")].ev is not None
    core.process([usage(0, end + 90 * MIN, key="k2")])
    assert ("openai", "k1") in det.keys and ("openai", "k1") not in det.cold


def test_a_packed_key_expires_into_key_baselines_and_snapshots_with_the_detector():
    core = settled_core(minutes=1440)
    det = core.detector("key_theft")
    det.idle_expire_ms = 5 * HOUR
    end = T0 + 1440 * MIN
    core.process([usage(0, end + 70 * MIN, key="k2")])
    assert ("openai", "k1") in det.cold
    again = pickle.loads(pickle.dumps(core))  # a snapshot holds the packed key as it is
    assert again.detector("key_theft").cold == det.cold
    old = again.detector("key_theft")  # a detector pickled before packing existed
    for name in ("cold", "cold_min", "cold_after_ms"):
        del old.__dict__[name]
    old.__setstate__(pickle.loads(pickle.dumps(old.__dict__)))
    assert old.cold == {} and old.cold_after_ms == 3_600_000
    out = core.process([usage(1, end + 6 * HOUR, key="k2")])
    rows = [r for r in out.rows.get("key_baselines", []) if r["key_id"] == "k1"]
    assert len(rows) == 1 and ("openai", "k1") not in det.cold and ("openai", "k1") not in det.keys
    assert rows[0]["state"] == dump_state(load_state(rows[0]["state"])) and load_state(rows[0]["state"]).base.learned >= 1000


def test_feedback_on_a_packed_key_unpacks_and_applies():
    core = settled_core(minutes=2 * 1440)
    det = core.detector("key_theft")
    end = T0 + 2 * 1440 * MIN
    out = core.process([usage(f"x{i}", end + i * 3000, ip=f"45.{i}.7.7", country="RU", ua="python-requests/2.31.0",
                              model="gpt-4") for i in range(20)])
    alert = theft_alerts(out)[0]
    det.keys[("openai", "k1")].ev = None  # as if closed; idle for 90 minutes: packed
    core.process([usage(0, end + 90 * MIN, key="k2")])
    assert ("openai", "k1") in det.cold
    det.on_feedback(alert, "planned_activity", end + 10 * HOUR)
    st = det.keys[("openai", "k1")]
    assert ("openai", "k1") not in det.cold and st.suppress_until == end + 10 * HOUR


def test_pack_reads_back_its_last_seen_time():
    st = settled_core(minutes=30).detector("key_theft").keys[("openai", "k1")]
    assert packed_last_ts(pack(st)) == st.base.last_ts == T0 + 29 * MIN


def test_the_tracked_keys_gauge_counts_packed_keys():
    """`keywatch_tracked_keys` (stream/metrics.py, the ops dashboard) reads each core's key-theft
    detector: before, no detector answered and the gauge stayed 0."""
    cores = PartitionCores(lambda: settled_core(minutes=30))
    core = cores.core_for(0)
    core.process([usage(0, T0 + 30 * MIN, key="k2"), usage(1, T0 + 31 * MIN, key="k3")])
    assert cores.tracked_keys() == 3
    core.process([usage(2, T0 + 100 * MIN, key="k3")])  # k1 and k2 idle over an hour: packed
    det = core.detector("key_theft")
    assert len(det.cold) == 2 and len(det.keys) == 1 and cores.tracked_keys() == 3
    # … and the spill gauges (`keywatch_idle_spill_bytes`): k1 and k2's packed state on disk
    disk, in_memory = cores.spilled()
    assert [d.name for d in core.detectors] == ["key_theft"]
    assert disk == sum(len(b) for b in det.cold.values()) > 0 and in_memory == 0


def test_packed_state_uses_the_preset_dictionary_and_older_blobs_still_unpack():
    """Blobs name their preset dictionary by Adler-32: one packed with it is smaller, one packed
    before it (no dictionary, older snapshots) unpacks as it was, an unknown one is a clear error."""
    st = settled_core(minutes=2 * 1440).detector("key_theft").keys[("openai", "k1")]
    raw = pickle.dumps(st, protocol=5)
    head = st.base.last_ts.to_bytes(8, "little", signed=True)
    new, old = pack(st), head + zlib.compress(raw, 1)
    assert len(new) < 0.85 * len(old)
    assert pickle.dumps(unpack(new), protocol=5) == pickle.dumps(unpack(old), protocol=5) == raw
    assert zlib.adler32(DICTIONARIES[1117699417]) == 1117699417 and CURRENT is DICTIONARIES[1117699417]  # never changed
    other = zlib.compressobj(1, zdict=b"another dictionary")
    with pytest.raises(ValueError, match="preset dictionary"):
        unpack(head + other.compress(raw) + other.flush())
