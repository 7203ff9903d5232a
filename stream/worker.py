"""`keywatch worker`: the faust app that consumes the input topic and writes to ClickHouse.

Commit-after-write: the agent iterates `take_batches` (stream/take.py) — faust's buffered
`noack_take()`, which leaves acking to us (plain `take()` acks a batch in a ``finally`` when the
generator resumes *or is closed*, so a cancelled or failed batch would be committed), bounded
by bytes as well as messages and filling the next batch while this one is handled. A batch
is acked only after (1) its output is stored in ClickHouse (retried with backoff, never
skipped) and (2) a detector snapshot covering it is stored; faust then commits acked offsets. So a crash loses nothing and re-reads only what the
last snapshot does not hold; `Pipeline` (stream/pipeline.py) makes the re-read exactly-once.
Batch N+1 is decoded and detected (detect thread) while batch N is written (io thread, the only
thread that touches chDB); snapshots wait for a quiescent point (see `Consumer.handle`) and
are taken by a forked child while detection goes on (stream/snapfork.py).

State is per input partition (stream/partitions.py): on assignment a partition's core is
restored from its snapshot, on revocation it is snapshotted, so partitions move between the
workers of one group (same `KEYWATCH_WORKER_ID`, same ClickHouse) with their per-key state.
Project/provider-level detection runs in one worker-wide global core fed by the partition
cores' output (stream/partitions.py), snapshotted with the partition cores.

Delivery guarantees, precisely:

* ClickHouse `usage_events`, `dead_letters`, `scores`: exactly once (re-reads are looked up).
  `alerts`: a re-read may insert the same (alert_id, version) again; ReplacingMergeTree(version)
  keeps one, so read with ``FINAL`` (as the API does). Rollups: exactly once, repaired after an
  interrupted insert (stream/repair.py).
* Kafka output topics `keywatch.alerts` and `keywatch.dlq`: **at least once**. A batch's
  records are produced (and awaited) before its offsets can be acked, but a crash between
  producing and the next snapshot re-reads the batch and produces them again. Consumers
  dedupe: an alert by (`alert_id`, `version`) — keep the highest version per `alert_id`; a dead
  letter by (`topic`, `partition`, `offset`, `index`), the record's message key being
  ``topic:partition:offset``. Alert hooks (channels, revocation) run at most once per raise in
  one process; a re-read after a crash can call them again for the same alert version (the
  channel dispatcher records deliveries per alert and version).
* Backpressure: while ClickHouse writes fail the batch is retried with backoff, the input
  partitions are paused and the `keywatch_backpressure` gauge is 1; nothing is acked past it.
  Drill it with ``KEYWATCH_CHAOS_SINK_FAIL_FILE=/path`` (fault injection only): while that file
  exists every write fails as if ClickHouse were down (tests/stream/test_stream_faults.py).
* Broker restart (embedded Tansu is in memory: topics and offsets are gone): the consumer
  reconnects; a partition whose log end is below the offsets held in state is treated as new
  (state offsets reset), so new data after the restart is processed, not skipped.

Run: ``KEYWATCH_KAFKA_BOOTSTRAP=127.0.0.1:9092 keywatch worker`` (unset: embedded broker).

The batch loop (handle/write/ack/snapshot) is `Consumer` in stream/consumer.py; its rebalance
callbacks are in stream/rebalance.py. This module builds the runtime and wires the faust app.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path

from keywatch.gctune import tune_gc
from keywatch.settings import Settings
from keywatch.stream.consumer import Consumer, dead_letter_record  # noqa: F401  (public here too)
from keywatch.stream.pipeline import Msg, Pipeline  # noqa: F401  (public here too)
from keywatch.stream.rebalance import _tp  # noqa: F401
from keywatch.stream.status import StatusFile

log = logging.getLogger("keywatch.worker")


def build_runtime(settings: Settings):
    """Open ClickHouse (the worker owns embedded chDB), restore the core, build the pipeline."""
    from keywatch.hooks import build_alert_hooks
    from keywatch.sinks.clickhouse import ClickHouseSink, connect
    from keywatch.stream.decode import EventDecoder
    from keywatch.stream.metrics import Metrics
    from keywatch.stream.partitions import tier_cores
    from keywatch.stream.runtime import WorkerRuntime

    # Snapshots hand key-theft models over as River objects; import River now, not in the
    # first snapshot (≈1.4 s of imports there would stall the stream, and that batch's alerts).
    import river.anomaly  # noqa: F401
    from keywatch.stream.state import SnapshotError, StreamState

    client = connect(settings)
    sink = ClickHouseSink(client, settings.clickhouse_database)
    state = StreamState(client, settings.clickhouse_database, settings.group_id,
                        settings.key_hash_secret.get_secret_value().encode())
    legacy = None
    try:  # the pre-partition single-core snapshot: partitions without their own start from it
        legacy = state.load_snapshot("core")
    except (SnapshotError, Exception) as exc:  # a bad snapshot must not stop ingestion
        log.warning("not restoring detector snapshot: %s", exc)
    # Partition cores are restored from their own snapshots when partitions are assigned.
    high_water = {f"{settings.input_topic}:{p}": o for p, o in state.high_water(settings.input_topic).items()}
    metrics = Metrics()
    cores = tier_cores(settings)
    runtime = WorkerRuntime(settings=settings, sink=sink, core=cores, metrics=metrics)
    runtime.alert_hooks = build_alert_hooks(settings, sink, metrics)
    pipeline = Pipeline(runtime, EventDecoder.from_settings(settings, streaming=True), state,
                        topic=settings.input_topic, high_water=high_water, legacy=legacy)
    return runtime, pipeline


def _fetch_wait(ms: int) -> None:
    """Make faust's consumer long-poll for at most `ms` (it hard-codes 1500 ms, with no setting).

    A broker answers a fetch as soon as data is there (fetch_min_bytes=1) — except Tansu, the
    embedded broker, which holds it for the whole wait: measured median delivery 0.38 s with
    1500 ms, 0.016 s with 100 ms. Against Kafka a shorter wait only polls an idle topic more often.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread.__dict__["_create_worker_consumer"]
    create = getattr(create, "__wrapped__", create)

    def _create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms  # read when the consumer starts its fetcher
        return consumer

    _create_worker_consumer.__wrapped__ = create
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def _group_timing(settings: Settings) -> dict[str, float]:
    # Tansu holds a group join for half the session timeout: short timeouts make the embedded
    # stack (demo, tests) start in ~1.5 s. Against real Kafka, faust's defaults apply unless set
    # (Kafka's group.min.session.timeout.ms is 6 s by default).
    t = settings.kafka_rebalance_timeout_s
    if t is None:
        return {}
    return {"broker_rebalance_timeout": t, "broker_session_timeout": 2 * t,
            "broker_heartbeat_interval": max(0.2, t / 3)}


def create_app(settings: Settings, bootstrap: str, runtime, pipeline, status: StatusFile):
    from keywatch.stream.drain import KeywatchApp
    from keywatch.stream.hookrunner import HookRunner
    from keywatch.stream.take import take_batches

    web_port = settings.web_port
    _fetch_wait(settings.kafka_fetch_max_wait_ms)
    app = KeywatchApp(  # faust.App, with a cheaper fetch loop (stream/drain.py)
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()],
        datadir=str(settings.data_dir / "faust"),
        value_serializer="raw", key_serializer="raw",
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # acks wait for the next snapshot; a rebalance must not wait on them
        broker_commit_interval=1.0,
        producer_max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_message_bytes * 2),
        web_enabled=web_port != 0, web_host=settings.web_host, web_port=web_port or 6066,
        web_in_thread=False,
        **_group_timing(settings),
    )
    in_topic = app.topic(settings.input_topic, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw", partitions=settings.topic_partitions)
    dlq = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw", partitions=1)
    alerts = app.topic(settings.alerts_topic, value_serializer="raw", key_serializer="raw", partitions=1)
    hooks = HookRunner(runtime.alert_hooks, settings.hook_queue_max, runtime.metrics)
    consumer = Consumer(app, runtime, pipeline, hooks, status, dlq, alerts)
    app.keywatch_consumer = consumer  # for views and tests

    @app.agent(in_topic, name="keywatch.consume", concurrency=1)
    async def consume(stream):
        consumer.stream = stream
        async for batch in take_batches(stream, settings.batch_max_messages, settings.batch_max_bytes,
                                        settings.batch_max_seconds):
            await consumer.handle(batch)

    @app.task
    async def run_hooks() -> None:
        await hooks.run()

    if settings.population_share_s > 0 and settings.worker_tier != "projects":  # the tiers with key theft
        from keywatch.stream.popshare import PopulationSync

        sync = app.keywatch_populations = PopulationSync(settings, bootstrap, consumer)

        @app.task
        async def share_populations() -> None:
            await sync.run()

    @app.timer(interval=1.0)
    async def snapshot_timer() -> None:
        await consumer.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs) -> None:  # noqa: ARG001
        await consumer.revoked(revoked)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001
        await consumer.assigned(assigned)
        runtime.ready = True
        status.update(ready=True, partitions=sorted(tp.partition for tp in assigned if tp.topic == settings.input_topic),
                      restores=pipeline.restores)

    @app.on_before_shutdown.connect
    async def on_shutdown(app, **kwargs) -> None:  # noqa: ARG001
        await consumer.final_snapshot()
        await hooks.aclose(5.0)

    if importlib.util.find_spec("keywatch.stream.web") is not None:
        importlib.import_module("keywatch.stream.web").register_views(app, runtime)
    return app


def run_worker(settings: Settings, bootstrap: str | None = None, *, loglevel: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. With no bootstrap and embedded Kafka, starts the broker too."""
    from keywatch.stream.broker import ensure_topics, kafka_bootstrap, topic_specs

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    status = StatusFile(settings.data_dir / "worker.status.json", pid=os.getpid())
    with kafka_bootstrap(settings, create_topics=False, log_file=settings.data_dir / "broker.log") if bootstrap is None \
            else _given(bootstrap) as bs:
        ensure_topics(bs, topic_specs(settings))
        runtime, pipeline = build_runtime(settings)
        tune_gc(settings.gc_threshold)  # keywatch/gctune.py
        status.update(bootstrap=bs, ready=False, data_dir=str(settings.data_dir), tier=settings.worker_tier,
                      group=settings.group_id)
        app = create_app(settings, bs, runtime, pipeline, status)
        worker = faust_worker(app, (loglevel or settings.log_level).lower())
        try:
            worker.execute_from_commandline()
        except SystemExit:
            pass
        finally:
            status.update(ready=False, stopped=True)


def faust_worker(app, loglevel: str):
    """faust's `Worker` for `app`, without its terminal spinner.

    At a log level of WARNING or above, faust's worker adds a spinner handler to the root logger
    and sets the root logger to DEBUG, so every debug call of aiokafka, mode and faust builds a
    log record that the handlers then drop: 2.5 % of the time a bench worker (run at WARNING)
    held the interpreter lock (py-spy ``--gil``, session 16). The level the user set stays.
    """
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker


class _given:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def __enter__(self) -> str:
        return self.bootstrap

    def __exit__(self, *exc) -> None:
        return None


def read_status(data_dir: Path) -> dict:
    return StatusFile.read(Path(data_dir) / "worker.status.json")
