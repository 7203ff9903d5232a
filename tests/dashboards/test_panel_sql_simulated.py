"""Panel queries over the real detectors' output: simulated traffic → detection core → chDB.

Complements test_panel_sql.py (hand-written sample story): here rows come from
`keywatch.simulate` and `build_core`, so a detector writing a table or details JSON in a shape
a panel does not expect shows up as an error or an empty panel.
"""

from __future__ import annotations

import msgspec
import pytest

from keywatch.dashboards.build import build_all, sql_targets
from keywatch.dashboards.macros import expand
from keywatch.dashboards.panels import ALL
from keywatch.models.events import Event
from keywatch.models.registry import build_core
from keywatch.simulate import SimConfig, generate
from keywatch.sinks.clickhouse import ClickHouseSink

# Must have rows with this small simulation (others depend on which incidents fire).
MUST_HAVE_ROWS = {"Risk score per key", "Source countries", "Spend by provider", "Spend by project", "Spend by model",
                  "Top keys by spend", "Actual vs forecast band", "Cost spikes and root cause", "Projected month-end"}


@pytest.mark.integration
def test_panels_over_simulated_detector_output(ch_db):
    client, settings = ch_db
    db = settings.clickhouse_database
    cfg = SimConfig(keys=8, projects=2, days=1.0, seed=3, incidents=["loud_burst", "runaway_loop"], warmup_days=0.5)
    events = [msgspec.convert(e, Event) for e in generate(cfg)]
    core, sink = build_core(settings), ClickHouseSink(client, db)
    for i in range(0, len(events), 5000):
        sink.write(core.process(events[i:i + 5000]))
    lo, hi = cfg.start_ms // 1000, int(cfg.start_ms // 1000 + cfg.days * 86400)
    errors, empty = [], set()
    for dash in build_all(db):
        for panel, target in sql_targets(dash):
            sql = expand(target["rawSql"], from_s=lo, to_s=hi, interval_s=600,
                         variables={"db": db, "provider": ALL, "project": ALL, "key": ALL})
            try:
                if not client.query(sql).result_rows:
                    empty.add(panel["title"])
            except Exception as exc:  # report every broken panel at once
                errors.append(f"{panel['title']}: {str(exc)[:300]}")
    assert not errors, "\n".join(errors)
    assert not (MUST_HAVE_ROWS & empty), MUST_HAVE_ROWS & empty
    root_causes = client.query(expand(next(t["rawSql"] for d in build_all(db) for p, t in sql_targets(d)
                                           if p["title"] == "Cost spikes and root cause"),
                                      from_s=lo, to_s=hi, interval_s=600,
                                      variables={"db": db, "provider": ALL, "project": ALL, "key": ALL})).named_results()
    assert any(r["root_cause"].startswith("key ") for r in root_causes), "root cause not extracted from details JSON"
