"""The dashboard JSON has what Grafana needs, and the provisioning files point at it."""

from __future__ import annotations

from pathlib import Path

import yaml

from keywatch.dashboards import ops
from keywatch.dashboards.build import build_all, load_all, render
from keywatch.dashboards.panels import CLICKHOUSE_UID, PROMETHEUS_UID
from keywatch.stream.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def test_committed_json_is_current():
    # Regenerate with `keywatch dashboards build` after editing dashboards/*.py.
    assert [render(d) for d in load_all()] == [render(d) for d in build_all()]


def test_uids_titles_and_panel_ids_unique():
    dashes = build_all()
    assert len({d["uid"] for d in dashes}) == len(dashes)
    assert all(len(d["uid"]) <= 40 for d in dashes)
    for d in dashes:
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), d["title"]
        titles = [p["title"] for p in d["panels"] if p["type"] != "row"]
        assert len(titles) == len(set(titles)), d["title"]


def test_data_source_references():
    for d in build_all():
        for p in d["panels"]:
            for t in p.get("targets", []):
                ds = t["datasource"]
                assert (ds["type"], ds["uid"]) in {("grafana-clickhouse-datasource", CLICKHOUSE_UID), ("prometheus", PROMETHEUS_UID)}
                assert ("rawSql" in t) == (ds["uid"] == CLICKHOUSE_UID)
                assert t["refId"]


def test_grid_panels_do_not_overlap():
    for d in build_all():
        cells: dict[tuple[int, int], str] = {}
        for p in d["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{d['title']}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_template_variables():
    soc, spend, pipeline = build_all()
    for d in (soc, spend):
        names = [v["name"] for v in d["templating"]["list"]]
        assert names == ["db", "provider", "project", "key"]
    assert [v["name"] for v in pipeline["templating"]["list"]] == ["db"]


def test_prometheus_metric_names_exist():
    registered = set()
    for family in Metrics().registry.collect():
        # Labelled metrics have no samples until first use: derive the exposed series names.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        registered |= {family.name + s for s in suffixes}
    used = ops.metric_names()
    assert used and used <= registered, used - registered


def test_provisioning_points_at_generated_json():
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/keywatch.yaml").read_text())
    assert ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid[CLICKHOUSE_UID]["type"] == "grafana-clickhouse-datasource"
    assert by_uid[CLICKHOUSE_UID]["jsonData"]["defaultDatabase"] == "keywatch"
    assert by_uid[PROMETHEUS_UID]["type"] == "prometheus"
    prov = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/keywatch.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    svc = compose["services"]
    assert {"kafka", "clickhouse", "grafana", "prometheus", "worker"} <= set(svc)
    assert "grafana-clickhouse-datasource" in svc["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in svc["grafana"]["volumes"] if v.startswith("."))
    # The provisioned path is the mount of dashboards/json, which holds every generated file.
    host_dir = next(h for h, c in mounts.items() if c == provider["options"]["path"])
    assert (INFRA / host_dir).resolve() == ROOT / "dashboards" / "json"
    assert sorted(p.name for p in (ROOT / "dashboards/json").glob("*.json")) == ["key-theft-live.json", "pipeline.json", "spend.json"]
    assert "KRaft" in (INFRA / "docker-compose.yml").read_text() and svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert svc["worker"]["build"]["dockerfile"] == "infra/Dockerfile" and (INFRA / "Dockerfile").exists()
    prom = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["worker:6066"]
