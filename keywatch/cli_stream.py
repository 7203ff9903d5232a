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
) -> None:
    """The streaming worker: input topic → decode → detect → ClickHouse (embedded broker if no bootstrap)."""
    from keywatch.stream.worker import run_worker

    settings = _settings()
    logging.getLogger().setLevel((loglevel or settings.log_level).upper())
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
    events: int = typer.Option(200_000, "--events", "-n", help="events to produce"),
    per_message: int = typer.Option(100, "--per-message", help="events per Kafka message (1 = one JSON object each)"),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="write the results as JSON"),
    keys: int = typer.Option(200, "--keys"),
) -> None:
    """Worker end-to-end events/s (consume+decode+detect+insert) next to a raw consume+insert baseline."""
    from keywatch.bench import run_bench

    raise typer.Exit(run_bench(_settings(), n_events=events, per_message=per_message, json_out=json_out, keys=keys))
