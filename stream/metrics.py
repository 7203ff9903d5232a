"""Prometheus metrics of the worker (served at `/metrics`). One registry per process.

Names are part of the operations dashboard's queries: add, do not rename.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events_in = Counter("keywatch_events_in_total", "Events accepted, by kind", ["kind"], registry=r)
        self.messages_in = Counter("keywatch_messages_in_total", "Kafka messages consumed", registry=r)
        self.events_rejected = Counter("keywatch_events_rejected_total", "Dead letters, by reason", ["reason"], registry=r)
        self.duplicates = Counter("keywatch_duplicate_events_total", "Events dropped as already seen (same event_id)", registry=r)
        self.late_events = Counter(
            "keywatch_late_events_total",
            "Events older than the minute their partition's detection had reached (input out of event-time order "
            "across batches: their spend counts in a later minute)", registry=r)
        self.batch_latency = Histogram(
            "keywatch_batch_seconds", "Time to process and store one batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram("keywatch_batch_events", "Events per batch", registry=r,
                                    buckets=(1, 10, 100, 1000, 5000, 10000, 50000))
        self.batch_bytes = Histogram("keywatch_batch_bytes", "Kafka message bytes per batch (KEYWATCH_BATCH_MAX_BYTES bounds it)",
                                     registry=r, buckets=(1e3, 1e4, 1e5, 1e6, 4e6, 8e6, 16e6, 64e6))
        self.event_to_alert = Histogram(
            "keywatch_event_to_alert_seconds", "Wall time from an event's arrival to its alert being stored", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.alerts = Counter("keywatch_alerts_total", "Alerts raised or updated", ["kind", "severity"], registry=r)
        self.revocations = Counter("keywatch_revocations_total", "Revocation decisions, by outcome", ["outcome"], registry=r)
        self.sink_errors = Counter("keywatch_sink_errors_total", "Failed ClickHouse writes (retried)", registry=r)
        self.consumer_lag = Gauge("keywatch_consumer_lag", "Messages behind the log end", ["topic", "partition"], registry=r)
        self.tracked_keys = Gauge("keywatch_tracked_keys", "Keys with detector state, unpacked or packed (in memory or a spill file)", registry=r)
        self.idle_spill_bytes = Gauge("keywatch_idle_spill_bytes", "Live bytes of idle keys' packed state in spill files on disk", registry=r)
        self.idle_spill_in_memory = Gauge(
            "keywatch_idle_spill_in_memory_keys",
            "Idle keys whose packed state is held in memory instead of the spill file (KEYWATCH_IDLE_SPILL_DIR=memory, or the file failed)", registry=r)
        self.backpressure = Gauge("keywatch_backpressure", "1 while the worker is paused waiting for the sink", registry=r)
        self.project_level_waiting = Gauge(
            "keywatch_project_level_waiting_events",
            "Events held for project-level detection until every active input partition reaches their event time", registry=r)
        self.partition_restores = Counter(
            "keywatch_partition_restores_total",
            "Input partitions taken over on assignment, by where their detector state came from (snapshot, parked, legacy, new)",
            ["source"], registry=r)
        self.population_deltas = Counter(
            "keywatch_population_deltas_total",
            "Key theft's project-population deltas shared with the group's other workers: sent, merged (theirs), bad (dead letters)",
            ["direction"], registry=r)
        self.memory_trimmed = Counter(
            "keywatch_memory_trimmed_bytes_total",
            "Freed heap memory returned to the OS by the periodic malloc_trim (KEYWATCH_MEMORY_TRIM_S)", registry=r)
        self.deliveries = Counter("keywatch_alert_deliveries_total", "Alert channel deliveries, by channel and outcome", ["channel", "outcome"], registry=r)

    def set_keys(self, tracked: int, spilled_bytes: int, in_memory: int) -> None:
        """The key gauges: tracked keys, and where idle keys' packed state is (models/spill.py)."""
        self.tracked_keys.set(tracked)
        self.idle_spill_bytes.set(spilled_bytes)
        self.idle_spill_in_memory.set(in_memory)
