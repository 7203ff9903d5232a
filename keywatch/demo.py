"""`keywatch demo` (`make demo`): the whole pipeline on one machine, with a live view.

Starts the embedded broker (verified Tansu), runs `keywatch worker` as a child process (it owns
the embedded chDB), streams simulated traffic — normal keys, a stolen key used from new
networks, and a runaway-loop cost spike — and shows throughput and alerts as they fire. Ends on
Ctrl-C, after ``--duration`` seconds, or when the traffic is exhausted and processed; prints
where the data is and how to query it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from keywatch.settings import Settings
from keywatch.procs import stop_process
from keywatch.stream.broker import EmbeddedBroker, ensure_topics, free_port, topic_specs
from keywatch.stream.produce import EventProducer, Placement, paced
from keywatch.stream.status import StatusFile

SEV_STYLE = {"low": "dim", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}


def simulated_events(keys: int, seed: int, days: float = 2.5) -> tuple[Iterator[dict], list[dict]]:
    """Time-ordered events ending now (the worker rejects future timestamps), plus ground truth."""
    start = int(time.time() * 1000) - int(days * 86_400_000)
    if importlib.util.find_spec("keywatch.simulate") is not None:
        from keywatch.simulate import SimConfig, generate, ground_truth

        cfg = SimConfig(keys=keys, days=days, start_ms=start, seed=seed, incidents=["loud_burst", "runaway_loop"],
                        warmup_days=min(1.5, days * 0.6))
        return generate(cfg), ground_truth(cfg)
    return _fallback(keys, start, days), []


def _fallback(keys: int, start: int, days: float) -> Iterator[dict]:
    """A minimal generator (used only if keywatch.simulate is absent): steady keys, then a burst."""
    step, n = 60_000, int(days * 86_400_000 / 60_000)
    for i in range(n):
        ts = start + i * step
        for k in range(keys):
            yield {"kind": "usage", "event_id": f"d{i}-{k}", "ts": ts, "provider": "openai", "key_id": f"key_{k}",
                   "model": "gpt-4o-mini", "input_tokens": 500, "output_tokens": 100, "source_ip": f"10.0.0.{k}", "country": "US"}
        if i > n * 0.8:
            for j in range(20):
                yield {"kind": "usage", "event_id": f"x{i}-{j}", "ts": ts + j, "provider": "openai", "key_id": "key_0",
                       "model": "gpt-4o", "input_tokens": 8000, "output_tokens": 4000, "source_ip": f"203.0.113.{j}", "country": "RU"}


def _view(st: dict, produced: int, started: float, rates: list) -> Group:
    now = time.time()
    rates.append((now, st.get("events_in", 0)))
    while len(rates) > 2 and now - rates[0][0] > 5:
        rates.pop(0)
    (t0, e0), (t1, e1) = rates[0], rates[-1]
    eps = (e1 - e0) / (t1 - t0) if t1 > t0 else 0.0
    top = Table.grid(padding=(0, 3))
    for label, value in [("elapsed", f"{now - started:,.0f} s"), ("produced", f"{produced:,}"),
                         ("processed", f"{st.get('events_in', 0):,}"), ("events/s", f"{eps:,.0f}"),
                         ("dead letters", f"{st.get('dead_letters', 0):,}"), ("alerts", f"{st.get('alerts', 0):,}"),
                         ("worker", "ready" if st.get("ready") else "starting…")]:
        top.add_row(f"[bold]{label}[/bold]", value)
    alerts = Table(title="alerts — one row per incident, latest evidence first", expand=True)
    for col in ("kind", "severity", "key", "score", "cost $", "reasons"):
        alerts.add_column(col, overflow="fold")
    for a in list(reversed(st.get("recent_alerts", [])))[:12]:
        alerts.add_row(a.get("kind", ""), f"[{SEV_STYLE.get(a.get('severity'), '')}]{a.get('severity')}[/]",
                       str(a.get("key_id") or a.get("project") or ""), f"{a.get('score', 0):.2f}",
                       f"{a.get('cost_impact_usd', 0):,.2f}", "; ".join((a.get("reasons") or [])[:3]))
    return Group(Panel(top, title="keywatch demo — Ctrl-C to stop"), alerts)


def run_demo(settings: Settings, *, duration: float | None, rate: float, keys: int, seed: int) -> int:
    console = Console()
    data_dir = settings.data_dir / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    data_dir.mkdir(parents=True, exist_ok=True)
    events, truth = simulated_events(keys, seed)
    stop = threading.Event()
    counter = {"produced": 0}
    started = time.time()
    with EmbeddedBroker(log_file=data_dir / "broker.log") as broker:
        ensure_topics(broker.bootstrap, topic_specs(settings))
        env = {**os.environ, "KEYWATCH_DATA_DIR": str(data_dir), "KEYWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
               "KEYWATCH_KAFKA_REBALANCE_TIMEOUT_S": "1.5", "KEYWATCH_WEB_PORT": str(free_port(settings.web_host))}
        with open(data_dir / "worker.log", "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "keywatch.cli", "worker", "--loglevel", "WARNING"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def produce() -> None:
            with EventProducer(broker.bootstrap, settings.input_topic, placement=Placement.from_settings(settings)) as p:
                for chunk in paced(events, rate, chunk=max(1, int(rate / 20))):
                    if stop.is_set():
                        break
                    counter["produced"] += p.send_events(chunk, batch_size=20)
                    p.flush()
            counter["done"] = True

        status_path = data_dir / "worker.status.json"
        producer = threading.Thread(target=produce, daemon=True)
        producer_started = False
        rates: list = []
        st: dict = {}
        try:
            with Live(_view({}, 0, started, rates), console=console, refresh_per_second=4) as live:
                while True:
                    st = StatusFile.read(status_path)
                    if st.get("ready") and not producer_started:
                        producer.start()
                        producer_started = True
                    live.update(_view(st, counter["produced"], started, rates))
                    if worker.poll() is not None:
                        console.print(f"[red]worker exited ({worker.returncode}); see {data_dir / 'worker.log'}[/red]")
                        break
                    if duration is not None and time.time() - started >= duration:
                        break
                    if counter.get("done") and st.get("events_in", 0) + st.get("duplicates", 0) >= counter["produced"] \
                            and time.time() - (st.get("last_batch_at") or 0) > 2:
                        break
                    time.sleep(0.25)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            stop_process(worker)
            st = StatusFile.read(status_path) or st
    _summary(console, settings, st, counter["produced"], time.time() - started, data_dir, truth)
    return 0


def _summary(console: Console, settings: Settings, st: dict, produced: int, seconds: float, data_dir: Path, truth: list) -> None:
    t = Table(title="keywatch demo — summary", show_header=False)
    by_kind = st.get("alerts_by_kind") or {}
    db = settings.clickhouse_database
    for k, v in [("events produced", f"{produced:,}"), ("events processed", f"{st.get('events_in', 0):,}"),
                 ("dead letters", f"{st.get('dead_letters', 0):,} {st.get('dead_by_reason') or ''}"),
                 ("alerts (incidents)", f"{st.get('alerts', 0):,} {by_kind or ''}, {st.get('alert_updates', 0):,} updates"),
                 ("injected incidents", ", ".join(f"{x['type']} on {x['key_id']}" for x in truth) or "-"),
                 ("run time", f"{seconds:,.0f} s"), ("data", str(data_dir))]:
        t.add_row(k, v)
    console.print(t)
    console.print(
        "Query it (the worker has stopped, so the chDB path is free):\n"
        f"  [bold]KEYWATCH_DATA_DIR={data_dir} keywatch worker[/bold]   # resume the stack on this data\n"
        f"  python -c \"import chdb; print(chdb.query(\\\"SELECT kind, severity, key_id, score FROM {db}.alerts FINAL "
        f"ORDER BY detected_at\\\", 'PrettyCompact', path='{data_dir / 'chdb'}'))\"")
