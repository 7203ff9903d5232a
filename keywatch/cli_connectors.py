"""`keywatch ingest` and `keywatch poll`: provider data → canonical events → Kafka, a file, or replay.

    keywatch ingest cloudtrail/*.json.gz --format cloudtrail            # to the input topic
    keywatch ingest spend.jsonl --format litellm --replay --alerts-out alerts.jsonl
    keywatch poll openai --out usage.jsonl                              # one incremental poll

Bad records are never fatal: they are written to a dead-letter JSON Lines file (next to the
output) and counted. Exit status: 0 when the inputs could be read, 1 when not, 2 for bad
settings or arguments. `keywatch/cli.py` registers both commands with one line each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


class _Out:
    """Where validated events go: Kafka (default), a JSON Lines file, or the detection core."""

    def __init__(self, settings, *, out: Path | None, replay: bool, alerts_out: Path | None,
                 dead_out: Path, batch_size: int) -> None:
        from keywatch.models.events import to_dict

        self.to_dict = to_dict
        self.alerts: dict = {}
        self.core = self.fh = self.producer = None
        self.sent = 0
        if replay:
            from keywatch.models.registry import build_core

            self.core, self.alerts_out = build_core(settings), alerts_out
        elif out is not None:
            self.fh = open(out, "ab")
        else:
            if not settings.kafka_bootstrap:
                console.print("[red]KEYWATCH_KAFKA_BOOTSTRAP is not set[/red]: give --out FILE or --replay --alerts-out OUT")
                raise typer.Exit(2)
            from keywatch.stream.produce import EventProducer, Placement

            self.producer = EventProducer(settings.kafka_bootstrap, settings.input_topic, placement=Placement.from_settings(settings))
        self.batch_size = batch_size
        self.dead_out = dead_out
        self.dead_fh = None

    def __call__(self, events: list, dead: list) -> None:
        from keywatch.stream.connectors.ingest import dead_letter_json

        if dead:
            if self.dead_fh is None:
                self.dead_out.parent.mkdir(parents=True, exist_ok=True)
                self.dead_fh = open(self.dead_out, "ab")
            self.dead_fh.writelines(dead_letter_json(d) for d in dead)
        if not events:
            return
        self.sent += len(events)
        if self.core is not None:
            for a in self.core.process(events).alerts:
                self.alerts[a.alert_id] = a  # first-raised order, latest state (as replay does)
        elif self.fh is not None:
            self.fh.writelines(orjson.dumps(self.to_dict(e)) + b"\n" for e in events)
        else:  # each chunk in event-time order: its partitions then are too (stream/produce.py)
            ordered = sorted(events, key=lambda e: e.ts_ms)
            self.producer.send_events([self.to_dict(e) for e in ordered], self.batch_size)

    def close(self) -> None:
        if self.core is not None:
            with open(self.alerts_out, "wb") as fh:
                fh.writelines(orjson.dumps(a.to_contract()) + b"\n" for a in self.alerts.values())
        for f in (self.fh, self.dead_fh):
            if f is not None:
                f.close()
        if self.producer is not None:
            self.producer.close()


def ingest(
    paths: List[str] = typer.Argument(..., help="exported files (.gz too), or - for stdin"),
    fmt: List[str] = typer.Option(..., "--format", "-f", help="one per PATH, or one for all: canonical, openai-usage, openai-costs, openai-audit, anthropic-usage, anthropic-cost, bedrock-invocation, cloudtrail, litellm, otlp"),
    replay: bool = typer.Option(False, "--replay", help="run straight through the detection core (no broker)"),
    alerts_out: Optional[Path] = typer.Option(None, "--alerts-out", help="with --replay: alerts, JSON Lines"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write canonical events (JSON Lines) instead of Kafka"),
    dead_letters_out: Optional[Path] = typer.Option(None, "--dead-letters-out"),
    batch_size: int = typer.Option(100, "--batch-size", min=1, help="events per Kafka message"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Normalise exported provider files into canonical events (Kafka, a file, or replay)."""
    from keywatch.cli import load_settings
    from keywatch.stream.connectors.ingest import FORMATS, JOINED_FORMATS, Ingester
    from keywatch.stream.connectors.join import RequestJoin
    from keywatch.stream.decode import EventDecoder

    settings = load_settings()
    fmts = fmt * len(paths) if len(fmt) == 1 else fmt
    if len(fmts) != len(paths) or any(f not in FORMATS for f in fmts):
        console.print(f"[red]--format[/red]: give one per PATH or one for all, from: {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if replay and alerts_out is None:
        console.print("[red]--replay needs --alerts-out[/red]")
        raise typer.Exit(2)
    for p in paths:  # fail before doing any work if a file cannot be read
        if p != "-" and not Path(p).is_file():
            console.print(f"[red]cannot read[/red] {p}")
            raise typer.Exit(1)
    base = alerts_out if replay else out
    dead_out = dead_letters_out or (base.with_name(base.name + ".dead_letters.jsonl") if base
                                    else settings.data_dir / "connectors" / "ingest.dead_letters.jsonl")
    sink = _Out(settings, out=out, replay=replay, alerts_out=alerts_out, dead_out=dead_out, batch_size=batch_size)
    decoder = EventDecoder.from_settings(settings, streaming=False)
    # One join for the whole run, so an invocation-log file and a CloudTrail file pair up.
    join = RequestJoin(max_wait_s=float("inf")) if set(fmts) & JOINED_FORMATS else None
    ingesters = {f: Ingester(f, decoder, join=join) for f in set(fmts)}
    started = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[records]} records"),
                      TimeElapsedColumn(), console=console, disable=quiet) as progress:
            sizes = [Path(p).stat().st_size if p != "-" else 0 for p in paths]
            task = progress.add_task("ingest", total=sum(sizes) or None, records=0)
            for p, f, size in zip(paths, fmts, sizes):
                ing = ingesters[f]
                progress.update(task, description=f"{Path(p).name} ({f})")
                for events, dead in ing.feed_file(p):
                    sink(events, dead)
                    progress.update(task, records=sum(i.records for i in ingesters.values()))
                progress.advance(task, size)
            if join is not None:
                sink(*next(iter(i for f, i in ingesters.items() if f in JOINED_FORMATS)).finish())
    except OSError as exc:
        console.print(f"[red]cannot read[/red] {exc.filename}: {exc.strerror}")
        raise typer.Exit(1)
    finally:
        sink.close()
    if not quiet:
        _summary(ingesters, sink, dead_out, alerts_out if replay else out, time.perf_counter() - started, join)


def _summary(ingesters: dict, sink: _Out, dead_out: Path, out: Path | None, seconds: float, join) -> None:
    dead_by: dict[str, int] = {}
    for i in ingesters.values():
        for k, v in i.dead_by_reason.items():
            dead_by[k] = dead_by.get(k, 0) + v
    t = Table(title="ingest", show_header=False)
    rows = [("records", sum(i.records for i in ingesters.values())), ("events", sink.sent),
            ("dead letters", f"{sum(dead_by.values())} {dead_by or ''} → {dead_out}"),
            ("destination", str(out) if out else "kafka"), ("time", f"{seconds:.2f} s")]
    if join is not None:
        rows.append(("bedrock join", f"{join.joined} joined, {join.unjoined} un-joined"))
    if sink.core is not None:
        rows.append(("alerts", len(sink.alerts)))
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)


def poll(
    provider: str = typer.Argument(..., help="openai or anthropic"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="append canonical events (JSON Lines) instead of Kafka"),
    loop: bool = typer.Option(False, "--loop", help="keep polling every KEYWATCH_POLL_INTERVAL_S"),
    batch_size: int = typer.Option(100, "--batch-size", min=1),
) -> None:
    """Read the provider's admin usage and cost APIs from the saved cursor (incremental)."""
    from keywatch.cli import load_settings
    from keywatch.stream.connectors.poll import PollError, Poller

    settings = load_settings()
    if provider not in ("openai", "anthropic"):
        console.print("[red]provider[/red] must be openai or anthropic")
        raise typer.Exit(2)
    dead_out = (out.with_name(out.name + ".dead_letters.jsonl") if out
                else settings.data_dir / "connectors" / f"poll-{provider}.dead_letters.jsonl")
    try:
        poller = Poller(provider, settings)
    except PollError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    sink = _Out(settings, out=out, replay=False, alerts_out=None, dead_out=dead_out, batch_size=batch_size)
    try:
        while True:
            try:
                r = poller.poll_once(sink)
                console.print(f"{provider}: {r.pages} pages, {r.events} events, {r.dead} dead letters, {r.retries} retries")
            except PollError as exc:
                console.print(f"[red]poll failed[/red] {exc}")
                if not loop:
                    raise typer.Exit(1)
            if not loop:
                break
            time.sleep(settings.poll_interval_s)
    finally:
        sink.close()

