"""A worker's partition cores share key theft's cross-key state (project populations, the
window model, kill chains): with it split per partition, the worker missed an attack on a new
key that `keywatch replay` catches, and alerted on a benign new key.

The data set has both (seed 5: `new_key_abuse` on one key, `benign_new_key` on another)."""

from __future__ import annotations

import pickle

import orjson
import pytest

from keywatch.eval_partitioned import alerts_of_layout
from keywatch.models.keytheft import KeyTheftDetector
from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.settings import Settings
from keywatch.simulate import SimConfig, ground_truth, write_jsonl
from keywatch.stream.decode import EventDecoder
from keywatch.stream.partitions import PartitionCores
from keywatch.stream.produce import Placement, placement_key

CFG = SimConfig(keys=30, projects=6, days=2.0, seed=5, warmup_days=1.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("shared") / "events.jsonl"
    write_jsonl(CFG, path)
    settings = Settings()
    out = path.with_name("alerts.jsonl")
    replay([path], out, build_core(settings), EventDecoder.from_settings(settings, streaming=False))
    ref = {a["alert_id"] for a in map(orjson.loads, out.read_bytes().splitlines()) if a["kind"] == "key_theft"}
    return path, settings, ref


def _key_theft(alerts: list[dict]) -> set[str]:
    return {a["alert_id"] for a in alerts if a["kind"] == "key_theft"}


def test_worker_layout_raises_replays_key_theft_alerts(data):
    path, settings, ref = data
    attacked = {t["key_id"] for t in ground_truth(CFG) if t["type"] == "new_key_abuse"}
    for partitions in (2, 4, 8):
        alerts, _ = alerts_of_layout(path, settings, partitions)
        assert _key_theft(alerts) == ref, partitions
        assert attacked <= {a["key_id"] for a in alerts if a["kind"] == "key_theft"}


def test_split_cross_key_state_misses_the_new_key_attack(data, monkeypatch):
    """The control: each partition core with its own populations and window model."""
    path, settings, ref = data
    monkeypatch.setattr(KeyTheftDetector, "share_from", lambda self, other: None)
    alerts, _ = alerts_of_layout(path, settings, 4)
    truth = {t["type"]: t["key_id"] for t in ground_truth(CFG)}
    flagged = {a["key_id"] for a in alerts if a["kind"] == "key_theft"}
    assert _key_theft(alerts) != ref
    assert truth["new_key_abuse"] not in flagged and truth["benign_new_key"] in flagged


def test_new_restored_and_parked_cores_share_one_state():
    settings = Settings()
    cores = PartitionCores(lambda: build_core(settings, "partition"))
    first, second = cores.core_for(0), cores.core_for(1)
    shared = first.detector("key_theft")
    restored = pickle.loads(pickle.dumps(second))  # a snapshot's copy: its own objects
    assert restored.detector("key_theft").pops is not shared.pops
    cores.adopt(2, restored)
    cores.adopt(1, second)  # parked and taken back
    for core in (first, second, restored):
        kt = core.detector("key_theft")
        assert all(getattr(kt, name) is getattr(shared, name) for name in KeyTheftDetector.SHARED)


def test_workers_share_only_their_own_partitions(data):
    """`--workers` without population sharing (`KEYWATCH_POPULATION_SHARE_S=0`): each worker of a
    group keeps its own cross-key state, so four workers with one partition each are the
    unshared layout again: the new-key attack is missed and the benign new key flagged."""
    path, settings, ref = data
    truth = {t["type"]: t["key_id"] for t in ground_truth(CFG)}
    alerts, _ = alerts_of_layout(path, settings, 4, workers=4, share=False)
    flagged = {a["key_id"] for a in alerts if a["kind"] == "key_theft"}
    assert _key_theft(alerts) != ref
    assert truth["new_key_abuse"] not in flagged and truth["benign_new_key"] in flagged


def test_four_workers_sharing_populations_raise_replays_alerts(data):
    """The same four workers, placed by key, sharing their project populations after every batch
    as they do over the populations topic (models/keytheft_share.py): replay's key-theft alerts,
    the new-key attack caught and the benign new key not flagged."""
    path, settings, ref = data
    truth = {t["type"]: t["key_id"] for t in ground_truth(CFG)}
    alerts, _ = alerts_of_layout(path, settings, 4, workers=4, share=True)
    flagged = {a["key_id"] for a in alerts if a["kind"] == "key_theft"}
    assert _key_theft(alerts) == ref
    assert truth["new_key_abuse"] in flagged and truth["benign_new_key"] not in flagged


def test_placed_by_project_four_workers_raise_replays_alerts(data):
    """`KEYWATCH_PLACEMENT=project`: a project's keys share a partition, so each of four workers
    sees whole projects and the new key meets its project, as in replay (the layout of the test
    above, which misses the attack, placed differently)."""
    path, settings, ref = data
    by_project = settings.model_copy(update={"placement": "project"})
    alerts, _ = alerts_of_layout(path, by_project, 4, workers=4)
    assert _key_theft(alerts) == ref
    truth = {t["type"]: t["key_id"] for t in ground_truth(CFG)}
    assert truth["new_key_abuse"] in {a["key_id"] for a in alerts if a["kind"] == "key_theft"}


TAMPER = SimConfig(keys=12, projects=3, days=1.5, seed=1, warmup_days=1.0, incidents=["hard_tamper"])


def test_principal_only_audit_reaches_its_keys_worker(tmp_path, monkeypatch):
    """`hard_tamper`: the audit records of the logging tamper name only the principal. Placed by
    the key that principal was last seen with (stream/produce.py `Placement`), two workers raise
    replay's one alert, on the key. The control — placed by project, as before session 10 — sends
    them to the other worker, which knows no principal → key link and raises a second critical
    alert for the same incident, on the principal."""
    path = tmp_path / "events.jsonl"
    write_jsonl(TAMPER, path)
    settings = Settings()
    out = tmp_path / "alerts.jsonl"
    replay([path], out, build_core(settings), EventDecoder.from_settings(settings, streaming=False))
    ref = _key_theft(list(map(orjson.loads, out.read_bytes().splitlines())))
    attacked = {t["key_id"] for t in ground_truth(TAMPER) if t["type"] == "hard_tamper"}
    alerts, _ = alerts_of_layout(path, settings, 4, workers=2)
    assert _key_theft(alerts) == ref
    assert {a["key_id"] for a in alerts if a["kind"] == "key_theft"} == attacked

    monkeypatch.setattr(Placement, "key", lambda self, key_id, project, source, principal=None, provider=None:
                        placement_key(key_id, project, source, self.key_map))
    alerts, _ = alerts_of_layout(path, settings, 4, workers=2)
    flagged = {a["key_id"]: a["severity"] for a in alerts if a["kind"] == "key_theft"}
    assert attacked <= set(flagged) and any(k.startswith("arn:") and s == "critical" for k, s in flagged.items())
