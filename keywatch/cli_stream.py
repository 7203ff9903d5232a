"""CLI commands of the streaming backbone: `keywatch worker`, `keywatch demo`, `keywatch bench`.

Registered in keywatch/cli.py. Heavy imports (faust, chDB) happen inside the commands so that
`keywatch --help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def _settings():
    from keywatch.cli import load_settings

    return load_settings()


def worker(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="override KEYWATCH_KAFKA_BOOTSTRAP"),
    loglevel: Optional[str] = typer.Option(None, "--loglevel", help="default: KEYWATCH_LOG_LEVEL"),
    processes: int = typer.Option(1, "--processes", min=1, max=64,
                                  help="worker processes in one consumer group (embedded chDB is then shared through `db serve`)"),
    split_tiers: bool = typer.Option(False, "--split-tiers",
                                     help="with --processes: the workers run per-key detection and one more process the project-level detectors (exact project figures)"),
) -> None:
    """The streaming worker: input topic → decode → detect → ClickHouse (embedded broker if no bootstrap)."""
    settings = _settings()
    logging.getLogger().setLevel((loglevel or settings.log_level).upper())
    if processes > 1 or split_tiers:
        from keywatch.stream.launcher import run_group

        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        raise typer.Exit(run_group(settings, bootstrap or settings.kafka_bootstrap, processes, split_tiers, loglevel))
    from keywatch.stream.worker import run_worker

    run_worker(settings, bootstrap or settings.kafka_bootstrap, loglevel=loglevel)


def demo(
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds; default: until Ctrl-C"),
    rate: float = typer.Option(2000.0, "--rate", help="simulated events per second"),
    keys: int = typer.Option(40, "--keys", help="simulated API keys"),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Embedded broker + chDB + worker, simulated traffic with a key theft and a cost spike, live view."""
    from keywatch.demo import run_demo

    raise typer.Exit(run_demo(_settings(), duration=duration, rate=rate, keys=keys, seed=seed))


def bench(
    events: Optional[int] = typer.Option(None, "--events", "-n", help="events for the batched run (100 per message)"),
    live_events: Optional[int] = typer.Option(None, "--live-events", help="events for the live-event-time runs (one worker, two, split tiers)"),
    single_events: Optional[int] = typer.Option(None, "--single-events", help="events for the one-event-per-message run"),
    keys: Optional[int] = typer.Option(None, "--keys", help="simulated keys of the throughput runs"),
    rate: Optional[float] = typer.Option(None, "--rate", help="paced events/s of the latency run"),
    latency_s: Optional[float] = typer.Option(None, "--latency-seconds", help="seconds of paced load"),
    state_keys: Optional[int] = typer.Option(None, "--state-keys", help="keys for state bytes/key and peak RSS"),
    quick: bool = typer.Option(False, "--quick", help="every size scaled down (CI smoke test, < 90 s)"),
    json_out: Optional[Path] = typer.Option(Path("bench.json"), "--json-out", help="write the results as JSON"),
) -> None:
    """Worker events/s (batched and 1/message) vs a raw baseline, event→alert p50/p99, state/key, RSS, replay."""
    from keywatch.bench import run_bench

    run_bench(_settings(), json_out=json_out, quick=quick, events=events, live_events=live_events, single_events=single_events, keys=keys,
              rate=rate, latency_s=latency_s, state_keys=state_keys)
