"""Operations dashboard "Pipeline": is the worker keeping up, and what is it rejecting?

Prometheus panels use the metric names of `keywatch.stream.metrics.Metrics` (a test checks that
every name used here is registered there); the dead-letter panels read ClickHouse `dead_letters`.

>>> sorted(metric_names())[:2]
['keywatch_alert_deliveries_total', 'keywatch_alerts_total']
"""

from __future__ import annotations

import re

from keywatch.dashboards.panels import Grid, ch_panel, constant_var, dashboard, prom_panel

UID = "keywatch-pipeline"
R = "[$__rate_interval]"


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{R})))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)]


def build(db: str) -> dict:
    g = Grid()
    g.row("Throughput")
    g.place(prom_panel("Events/s by kind", [(f"sum by (kind) (rate(keywatch_events_in_total{R}))", "{{kind}}"),
                                            (f"sum(rate(keywatch_messages_in_total{R}))", "kafka messages")],
                       unit="ops"), w=12, h=8)
    g.place(prom_panel("Consumer lag", [("sum by (topic, partition) (keywatch_consumer_lag)", "{{topic}}/{{partition}}"),
                                        ("sum(keywatch_project_level_waiting_events)", "events held for project level")],
                       unit="short", description="Messages behind the log end; rising = the worker is not keeping up. "
                       "Events held for project-level detection wait for lagging partitions (docs/operations.md)."),
            w=12, h=8)
    g.place(prom_panel("Batch latency", _quantiles("keywatch_batch_seconds"), unit="s"), w=8, h=8)
    g.place(prom_panel("Event → alert latency", _quantiles("keywatch_event_to_alert_seconds"), unit="s"), w=8, h=8)
    g.place(prom_panel("Batch size", _quantiles("keywatch_batch_events"), unit="short"), w=8, h=8)
    g.row("Errors")
    g.place(prom_panel("Dead-letter rate by reason", [(f"sum by (reason) (rate(keywatch_events_rejected_total{R}))", "{{reason}}")],
                       unit="ops"), w=8, h=8)
    g.place(prom_panel("Sink errors and backpressure", [(f"sum(rate(keywatch_sink_errors_total{R}))", "sink errors/s"),
                                                         ("max(keywatch_backpressure)", "paused")]), w=8, h=8)
    g.place(prom_panel("Duplicates and late events/s", [(f"sum(rate(keywatch_duplicate_events_total{R}))", "duplicates"),
                                                        (f"sum(rate(keywatch_late_events_total{R}))", "late")], unit="ops",
                       description="Late: older than the minute their partition's detection had reached, so cost "
                       "spikes count them in a later minute. Keep each partition in event-time order (docs/operations.md)."),
            w=8, h=8)
    g.row("Outputs")
    g.place(prom_panel("Alerts/s by kind and severity",
                       [(f"sum by (kind, severity) (rate(keywatch_alerts_total{R}))", "{{kind}} {{severity}}")]), w=8, h=8)
    g.place(prom_panel("Deliveries by channel and outcome",
                       [(f"sum by (channel, outcome) (rate(keywatch_alert_deliveries_total{R}))", "{{channel}} {{outcome}}")]),
            w=8, h=8)
    g.place(prom_panel("Revocations and tracked keys",
                       [(f"sum by (outcome) (increase(keywatch_revocations_total{R}))", "revocations {{outcome}}"),
                        ("sum(keywatch_tracked_keys)", "tracked keys")]), w=8, h=8)
    g.row("Scale-out")
    g.place(prom_panel("Shared project populations (key theft)",
                       [(f"sum by (direction) (rate(keywatch_population_deltas_total{R}))", "{{direction}}")], unit="ops",
                       description="Deltas of key theft's project populations between a group's workers "
                       "(KEYWATCH_POPULATION_SHARE_S): sent, merged (other workers'), bad (dead letters). With "
                       "several workers, merged near zero means the workers do not hear each other and new keys "
                       "meet only their worker's share of their project (docs/operations.md)."),
            w=12, h=8)
    g.row("Dead letters (ClickHouse)")
    g.place(ch_panel("Dead letters by reason", """
SELECT $__timeInterval(received_at) AS time, reason, count() AS dead_letters
FROM ${db}.dead_letters
WHERE $__timeFilter(received_at)
GROUP BY time, reason ORDER BY time""", fieldConfig={"defaults": {"custom": {"drawStyle": "bars"}}, "overrides": []}),
        w=10, h=9)
    g.place(ch_panel("Latest dead letters", """
SELECT received_at, reason, error, topic, partition, offset, idx, payload_size, substring(payload, 1, 300) AS payload
FROM ${db}.dead_letters
WHERE $__timeFilter(received_at)
ORDER BY received_at DESC LIMIT 200""", kind="table"), w=14, h=9)
    return dashboard(UID, "Pipeline", g, [constant_var("db", db, "ClickHouse database")],
                     tags=["operations"], refresh="10s", time_from="now-1h")


_METRIC = re.compile(r"\b(keywatch_[a-z0-9_]+)")


def metric_names(dash: dict | None = None) -> set[str]:
    """Every `keywatch_*` series name used by the dashboard's Prometheus targets."""
    dash = dash or build("keywatch")
    return {m for p in dash["panels"] for t in p.get("targets", []) if "expr" in t for m in _METRIC.findall(t["expr"])}
