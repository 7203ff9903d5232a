"""`keywatch bench` part: event-to-alert latency of the worker under a steady, paced load.

A simulated stream (keys with a day of history, then attacks and a runaway loop spread over
the paced part) is split at the end of the warm-up day. The warm-up is produced at full speed
and the worker catches up; then the rest is produced at a paced `rate` events/s the way log
shippers do it: every `FLUSH_S` the events of that interval go out as one JSON-array message per
input partition (at 5k events/s and 4 partitions ≈ 25 events/message; each message is keyed by
one of its keys, and all its keys hash to that partition, so a key's events stay on one
partition as with per-key messages), recording the wall time each event was handed to the
producer. The worker publishes
every new alert on its alerts topic only after the batch is stored in ClickHouse, so the wall
time an alert record arrives there is when the alert is stored and visible. Latency of an
alert = that time − produce time of the event it was detected at (same key and event time as
the alert's `detected_at`). Only alerts detected on paced events count.

>>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 99)
(2.5, None)
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import orjson

from keywatch.models.events import format_ts

KINDS = ("loud_burst", "probe_only", "runaway_loop", "new_key_abuse")
WARM_DAYS = 1.05  # a day of history: key baselines and the runaway loop's busiest-hour rate
FLUSH_S = 0.02  # a shipper's flush interval: 100 events per flush at 5k events/s


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_events(rate: float, seconds: float, keys: int, seed: int = 1) -> tuple[list[dict], list[dict]]:
    """(warm-up, paced) events: ~`rate × seconds` paced ones with incidents spread over them."""
    from keywatch.simulate import SimConfig, generate

    start = (int(time.time() * 1000) - 6 * 86_400_000) // 60_000 * 60_000
    probe = sum(1 for _ in generate(SimConfig(keys=keys, days=0.25, start_ms=start, seed=seed, incidents=[])))
    paced_days = max(0.02, rate * seconds / max(1.0, probe / 0.25))
    n_inc = max(2, min(keys // 3, int(seconds / 4)))
    span = paced_days * 86_400 * 0.8
    incidents = [{"type": KINDS[i % len(KINDS)], "at_s": WARM_DAYS * 86_400 + 120 + i * span / n_inc}
                 for i in range(n_inc)]
    cfg = SimConfig(keys=keys, projects=max(1, keys // 20), days=WARM_DAYS + paced_days, start_ms=start, seed=seed,
                    incidents=incidents, warmup_days=WARM_DAYS)
    cut = start + int(WARM_DAYS * 86_400_000)
    warm, paced = [], []
    for e in generate(cfg):
        (warm if e["ts"] < cut else paced).append(e)
    return warm, paced[:int(rate * seconds)]


class AlertWatcher(threading.Thread):
    """Reads the alerts topic, noting each alert id's first arrival (wall time)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=200,
                                      fetch_max_wait_ms=10)  # the observer's own long poll is not keywatch's latency
        self.first: dict[str, tuple[float, dict]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for rec in self.consumer:
                now = time.time()
                a = orjson.loads(rec.value)
                self.first.setdefault(a["alert_id"], (now, a))
                if self.stop.is_set():
                    break
        self.consumer.close()


def run_latency(settings, bootstrap: str, data_dir: Path, *, rate: float, seconds: float, keys: int) -> dict:
    from keywatch.bench import start_worker, stop_worker, wait_events
    from keywatch.stream.broker import ensure_topics
    from keywatch.stream.produce import EventProducer, paced, partition_messages

    data_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    topic, alerts_topic = f"bench.{tag}.latency", f"bench.{tag}.alerts"
    ensure_topics(bootstrap, [(topic, settings.topic_partitions), (alerts_topic, 1), (f"bench.{tag}.dlq", 1)])
    warm, live = latency_events(rate, seconds, keys)
    with EventProducer(bootstrap, topic) as p:
        p.send_events(warm, batch_size=100)
    proc = start_worker(bootstrap, topic, data_dir, KEYWATCH_ALERTS_TOPIC=alerts_topic, KEYWATCH_DLQ_TOPIC=f"bench.{tag}.dlq")
    watcher = AlertWatcher(bootstrap, alerts_topic)
    try:
        wait_events(proc, data_dir, len(warm), timeout=600)
        watcher.start()
        sent: dict[tuple[str | None, str], float] = {}
        started = time.time()
        with EventProducer(bootstrap, topic, linger_ms=1) as p:
            for chunk in paced(live, rate, chunk=max(1, int(rate * FLUSH_S))):
                now = time.time()
                for e in chunk:
                    when = format_ts(e["ts"])
                    sent.setdefault((e.get("key_id"), when), now)
                    sent.setdefault((None, when), now)
                for part, group in partition_messages(chunk, len(chunk), settings.topic_partitions):
                    p.send_raw(orjson.dumps(group), None, part)  # one message per partition and chunk
            p.flush()
            messages = p.messages
        produce_s = time.time() - started
        st = wait_events(proc, data_dir, len(warm) + len(live), timeout=max(60.0, seconds * 4))
        time.sleep(1.0)  # the last batch's alerts reach the topic after its status update
    finally:
        watcher.stop.set()
        stop_worker(proc)
    watcher.join(10)
    lat = []
    for arrived, a in watcher.first.values():
        t0 = sent.get((a.get("key_id"), a["detected_at"])) or sent.get((None, a["detected_at"]))
        if t0 is not None:
            lat.append(max(0.0, arrived - t0))
    return {"rate_target": rate, "rate_achieved": round(len(live) / produce_s, 1), "events": len(live),
            "events_per_message": round(len(live) / max(1, messages), 1),
            "warmup_events": len(warm), "alerts": len(lat),
            "p50_s": _r(percentile(lat, 50)), "p99_s": _r(percentile(lat, 99)), "max_s": _r(max(lat, default=None)),
            "worker_batches": st.get("batches")}


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None
