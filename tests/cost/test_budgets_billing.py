"""Budgets alert once per step per period; billing divergence; rows land in ClickHouse."""

from keywatch.models.billing import BillingDetector
from keywatch.models.budgets import BudgetDetector
from keywatch.models.core import DetectionCore
from keywatch.models.events import BillingEvent, UsageEvent

from .sim import DAY0, MIN

HOUR = 60 * MIN


def usage(i, ts, project="p1", key="k1", cost=1.0):
    return UsageEvent(event_id=f"u{i}-{ts}-{project}-{key}", ts=ts, provider="openai", key_id=key, project=project, model="gpt-4o", cost_usd=cost)


def test_budget_steps_once_per_period(make_settings, tmp_path):
    f = tmp_path / "budgets.yaml"
    f.write_text("thresholds: [50, 80, 100]\nbudgets:\n"
                 "  - {project: p1, period: day, amount_usd: 20}\n"
                 "  - {key_id: k2, period: month, amount_usd: 100, thresholds: [90]}\n")
    core = DetectionCore([BudgetDetector.from_settings(make_settings(BUDGETS_FILE=str(f)))])
    alerts = []
    for day in range(2):  # two days: each step once per day, never repeated within the day
        evs = [usage(i, DAY0 + day * 86_400_000 + i * MIN) for i in range(40)]  # $40 a day: 200 %
        alerts += core.process(evs).alerts
    first = {a.alert_id: a for a in reversed(alerts)}  # one incident per step; later versions resolve it
    steps = sorted((a.details["period_start"][:10], a.details["step_pct"]) for a in first.values() if a.kind == "budget")
    assert steps == [("2026-11-25", 50), ("2026-11-25", 80), ("2026-11-25", 100),
                     ("2026-11-26", 50), ("2026-11-26", 80), ("2026-11-26", 100)]
    assert all(a.key_id is None and a.project == "p1" for a in alerts)
    # key budget: a jump over the step raises one alert, key_id set
    out = core.process([usage(99, DAY0 + 50 * HOUR, key="k2", project="p2", cost=95.0)])
    assert [(a.kind, a.key_id, a.details["step_pct"]) for a in out.alerts if a.status == "open"] == [("budget", "k2", 90)]
    assert [a for a in core.process([usage(100, DAY0 + 51 * HOUR, key="k2", project="p2", cost=5.0)]).alerts if a.status == "open"] == []


def test_billing_divergence():
    core = DetectionCore([BillingDetector(pct=10, min_usd=5)])
    evs = [usage(i, DAY0 + i * 10 * MIN) for i in range(100)]  # $100 on day 1
    evs += [usage(i, DAY0 + i * 10 * MIN, project="p2") for i in range(100)]
    core.process(evs)
    bills = [
        BillingEvent(event_id="b1", ts=DAY0, provider="openai", project="p1", amount_usd=104.0),  # within 10 %
        BillingEvent(event_id="b2", ts=DAY0, provider="openai", project="p2", amount_usd=160.0),  # unseen usage
        BillingEvent(event_id="b3", ts=DAY0, period_end=DAY0 + 86_400_000, provider="openai", amount_usd=120.0),  # all: stale prices
    ]
    out = core.process(bills)
    div = {(a.project, round(a.details["diff_usd"])) for a in out.alerts if a.kind == "billing_divergence"}
    assert div == {("p2", 60), (None, -80)}
    assert len(out.rows["billing_reconciliation"]) == 3
    assert any("does not see" in a.reasons[0] for a in out.alerts if a.project == "p2")


def test_rows_fit_the_migration(ch_db):
    from keywatch.models.costspike import CostSpikeDetector
    from keywatch.sinks.clickhouse import ClickHouseSink

    client, settings = ch_db
    f = settings.data_dir / "b.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("budgets:\n  - {project: p1, period: day, amount_usd: 5}\n")
    det_b = BudgetDetector([{"project": "p1", "period": "day", "amount_usd": 5}])
    core = DetectionCore([CostSpikeDetector(), det_b, BillingDetector()])
    evs = [usage(i, DAY0 + i * MIN) for i in range(40)]
    out = core.process(evs + [BillingEvent(event_id="b", ts=DAY0, provider="openai", project="p1", amount_usd=1.0)])
    sink = ClickHouseSink(client, settings.clickhouse_database)
    sink.write(out)
    db = settings.clickhouse_database
    for table in ("spend_forecast", "spend_projection", "budget_status", "billing_reconciliation"):
        assert client.query(f"SELECT count() FROM {db}.{table}").result_rows[0][0] > 0, table
