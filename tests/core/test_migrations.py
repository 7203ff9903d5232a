from __future__ import annotations

import pytest

from keywatch.sinks.migrate import MigrationError, Migration, load_migrations, migrate, migration_params


def test_migrations_are_numbered_uniquely():
    ms = load_migrations()
    assert ms[0].version == 1
    assert len({m.version for m in ms}) == len(ms)


def test_migrate_is_idempotent(ch_db):
    client, settings = ch_db
    assert migrate(client, migration_params(settings)) == []  # fixture already applied all
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM {settings.clickhouse_database}").result_rows}
    assert {"usage_events", "alerts", "dead_letters", "scores", "usage_minute", "spend_minute_by_project"} <= tables


def test_edited_migration_is_refused(ch_db, monkeypatch):
    client, settings = ch_db
    import keywatch.sinks.migrate as m

    real = m.load_migrations()
    edited = [Migration(x.version, x.name, x.sql + "\n-- edited") if x.version == 1 else x for x in real]
    monkeypatch.setattr(m, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(client, migration_params(settings))


def test_rollup_sums_per_minute(ch_db):
    from keywatch.models.core import DetectionCore
    from keywatch.models.events import UsageEvent
    from keywatch.sinks.clickhouse import ClickHouseSink

    client, settings = ch_db
    db = settings.clickhouse_database
    t0 = 1795622400000
    evs = [UsageEvent(event_id=f"e{i}", ts=t0 + i * 1000, provider="openai", key_id="k1", project="p",
                      model="gpt-4o", input_tokens=10, cost_usd=0.5, status=500 if i == 0 else 200) for i in range(3)]
    ClickHouseSink(client, db).write(DetectionCore([]).process(evs))
    row = client.query(f"SELECT sum(events), sum(input_tokens), sum(cost_usd), sum(errors) FROM {db}.usage_minute").result_rows[0]
    assert row == (3, 30, 1.5, 1)
    assert client.query(f"SELECT sum(cost_usd) FROM {db}.spend_minute_by_project WHERE project = 'p'").result_rows[0][0] == 1.5
