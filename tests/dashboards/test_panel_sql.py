"""Every ClickHouse panel query runs against the current schema and returns rows.

The queries are expanded exactly as the grafana-clickhouse-datasource plugin expands them (macros
and template variables), for "All" and for one selected key, over the sample data's time range.
A migration that drops or renames a column a panel uses fails here.
"""

from __future__ import annotations

import pytest

from keywatch.dashboards import sample
from keywatch.dashboards.build import build_all, sql_targets
from keywatch.dashboards.macros import expand
from keywatch.dashboards.panels import ALL

SELECTIONS = {
    "all": {"provider": ALL, "project": ALL, "key": ALL},
    "stolen key": {"provider": "bedrock", "project": "proj-a", "key": "key_stolen"},
}
# Panels that legitimately have no rows for a narrow selection (the spike is on another key).
EMPTY_OK = {("stolen key", "Cost spikes in range"), ("stolen key", "Cost spikes and root cause")}


@pytest.mark.integration
@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_every_panel_query_returns_rows(filled_db, selection):
    client, settings = filled_db
    db = settings.clickhouse_database
    failures = []
    for dash in build_all(db):
        for panel, target in sql_targets(dash):
            sql = expand(target["rawSql"], from_s=sample.START_MS // 1000, to_s=sample.END_MS // 1000,
                         interval_s=300, variables={"db": db, **SELECTIONS[selection]})
            try:
                rows = client.query(sql).result_rows
            except Exception as exc:  # collect all broken panels in one run
                failures.append(f"{dash['title']} / {panel['title']}: {str(exc)[:300]}")
                continue
            if not rows and (selection, panel["title"]) not in EMPTY_OK:
                failures.append(f"{dash['title']} / {panel['title']}: no rows")
    assert not failures, "\n".join(failures)


@pytest.mark.integration
def test_variable_queries_list_values(filled_db):
    client, settings = filled_db
    db = settings.clickhouse_database
    for dash in build_all(db):
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                sql = expand(var["query"], from_s=0, to_s=1, interval_s=1,
                             variables={"db": db, "provider": ALL, "project": ALL, "key": ALL})
                assert client.query(sql).result_rows, var["name"]
