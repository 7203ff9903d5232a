"""/spend/projection and /budgets: live from the cost detectors' describe(), or from ClickHouse."""

from __future__ import annotations

import asyncio

import httpx

from api_helpers import cost_core, traffic
from keywatch.apiclient import BackendError, DirectBackend
from keywatch.stream import api, spend


def test_projection_from_the_live_detectors(api_rt):
    r = asyncio.run(api.spend_projection(api_rt, {}))
    assert r.status == 200 and r.body["source"] == "core"
    rows = {(p["level"], p["provider"], p["project"]): p for p in r.body["projections"]}
    assert set(rows) == {("project", "openai", "proj-a"), ("project", "anthropic", "proj-b"),
                         ("provider", "openai", ""), ("provider", "anthropic", "")}
    a = rows[("project", "openai", "proj-a")]
    assert 0 < a["day_spent_usd"] <= a["eod_projected_usd"] <= a["eom_projected_usd"]
    assert a["at"].startswith("2026-11-25T")
    assert r.body["totals"]["day_spent_usd"] == round(sum(p["day_spent_usd"] for p in rows.values()
                                                          if p["level"] == "provider"), 2)
    only = asyncio.run(api.spend_projection(api_rt, {"level": "project", "provider": "openai"})).body["projections"]
    assert [(p["provider"], p["project"]) for p in only] == [("openai", "proj-a")]
    assert asyncio.run(api.spend_projection(api_rt, {"level": "model"})).status == 400


def test_projection_falls_back_to_clickhouse(api_rt):
    live = asyncio.run(api.spend_projection(api_rt, {"project": "proj-b"})).body["projections"]
    api_rt.core = cost_core(api_rt.settings)  # a fresh worker: nothing projected yet
    r = asyncio.run(api.spend_projection(api_rt, {"project": "proj-b"}))
    assert r.body["source"] == "clickhouse" and r.body["projections"] == live


def test_per_partition_cores_are_summed(api_rt):
    try:  # the worker's per-partition facade (stream/partitions.py): `.cores` is {partition: core}
        from keywatch.stream.partitions import PartitionCores
    except ImportError:
        class PartitionCores:
            def __init__(self, factory):
                self.cores = {}

    twin = cost_core(api_rt.settings)
    twin.process(traffic())
    facade = PartitionCores(lambda: cost_core(api_rt.settings))
    facade.cores.update({0: api_rt.core, 1: twin})
    api_rt.core = facade
    one = {(p["level"], p["project"]): p["month_spent_usd"] for p in spend.live_projections(twin, {})}
    both = asyncio.run(api.spend_projection(api_rt, {})).body["projections"]
    assert {(p["level"], p["project"]): p["month_spent_usd"] for p in both} == {k: round(2 * v, 6) for k, v in one.items()}
    b = {x["budget_id"]: x for x in asyncio.run(api.budgets(api_rt)).body["budgets"]}
    assert b["key:key_b/month"]["spent_usd"] == round(2 * spend.live_budget_spend(twin)["key:key_b/month"], 4)


def test_budgets(api_rt):
    r = asyncio.run(api.budgets(api_rt))
    assert r.status == 200 and r.body["count"] == 2
    proj, key = r.body["budgets"]  # most used first
    assert (proj["budget_id"], proj["period"], proj["state"], proj["source"]) == ("project:proj-a/day", "day", "over", "core")
    assert proj["used_pct"] > 100 and proj["remaining_usd"] < 0 and proj["step_crossed_pct"] == 100
    assert proj["last_step_alerted_pct"] == 100.0  # the detector's budget_status row for this period
    assert proj["period_start"] == "2026-11-25T00:00:00.000Z" and proj["period_end"] == "2026-11-26T00:00:00.000Z"
    assert (key["budget_id"], key["scope"], key["state"], key["last_step_alerted_pct"]) == ("key:key_b/month", "key", "ok", None)
    assert key["period_start"].startswith("2026-11-01")
    # Read from ClickHouse alone (no live detector) the spend is the same.
    client, db = api_rt.sink.client, api_rt.sink.db
    stored = {x["budget_id"]: x for x in spend.budget_status(client, db, spend.budget_config(api_rt.settings))}
    assert stored["project:proj-a/day"]["source"] == "clickhouse"
    assert abs(stored["project:proj-a/day"]["spent_usd"] - proj["spent_usd"]) < 1e-3
    assert abs(stored["key:key_b/month"]["spent_usd"] - key["spent_usd"]) < 1e-3


def test_bad_budgets_file(api_rt, make_settings, tmp_path):
    (tmp_path / "bad.yaml").write_text("budgets:\n  - {project: p, amount_usd: -1}\n")
    api_rt.settings = make_settings(CLICKHOUSE_DATABASE=api_rt.sink.db, BUDGETS_FILE=tmp_path / "bad.yaml")
    r = asyncio.run(api.budgets(api_rt))
    assert r.status == 500 and "positive amount_usd" in r.body["error"]


def test_direct_backend_reads_clickhouse(api_rt):
    d = DirectBackend(api_rt.sink.client, api_rt.sink.db, api_rt.settings)
    p = d.spend_projection({"level": "provider", "provider": None})
    assert p["source"] == "clickhouse" and {x["provider"] for x in p["projections"]} == {"openai", "anthropic"}
    assert d.budgets()["count"] == 2
    try:
        d.spend_projection({"level": "key"})
    except BackendError as exc:
        assert exc.status == 400
    else:
        raise AssertionError("level=key accepted")


def test_over_http(api_rt, serve):
    port = serve(api_rt)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.get("/spend/projection", params={"level": "provider"})
        assert r.status_code == 200 and r.json()["count"] == 2
        assert c.get("/spend/projection", params={"level": "nope"}).status_code == 400
        assert c.get("/budgets").json()["budgets"][0]["state"] == "over"
