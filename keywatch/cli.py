"""The `keywatch` command line. Each area registers its own sub-commands here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from keywatch.settings import Settings, SettingsError, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="keywatch: catch stolen LLM API keys and cost spikes in seconds.")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")
app.add_typer(db_app, name="db")
console = Console(stderr=True)


def load_settings() -> Settings:
    """Resolve settings once; a bad setting ends the command with its name and exit code 2."""
    try:
        return get_settings()
    except SettingsError as exc:
        console.print(f"[red]invalid setting[/red] {exc}")
        raise typer.Exit(2)


@app.command()
def replay(
    files: List[Path] = typer.Argument(..., help="canonical events, JSON Lines (.gz too)"),
    alerts_out: Path = typer.Option(..., "--alerts-out", help="alerts, one JSON object per line"),
    dead_letters_out: Optional[Path] = typer.Option(None, "--dead-letters-out", help="default: <alerts-out>.dead_letters.jsonl"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    revoke: bool = typer.Option(False, "--revoke", help="also run key revocation (policy file; dry run unless enabled)"),
    reader_process: Optional[bool] = typer.Option(None, "--reader-process/--inline", help="read and decode in a second process (default: for inputs of 16 MB or more, given a spare core); the output is the same"),
) -> None:
    """Run event files through the detection core (no broker, no server) and write the alerts."""
    from keywatch.gctune import fewer_collections
    from keywatch.models.registry import build_core
    from keywatch.replay import replay as run_replay
    from keywatch.stream.decode import EventDecoder

    settings = load_settings()
    dead_out = dead_letters_out or alerts_out.with_name(alerts_out.name + ".dead_letters.jsonl")
    try:
        with fewer_collections(settings.gc_threshold):  # KEYWATCH_GC_THRESHOLD, as the worker
            summary = run_replay(
                files, alerts_out, build_core(settings), EventDecoder.from_settings(settings, streaming=False),
                dead_letters_out=dead_out, on_output=_revocation_callback(settings) if revoke else None,
                reader_process=reader_process,
            )
    except OSError as exc:
        console.print(f"[red]cannot read[/red] {exc.filename}: {exc.strerror}")
        raise typer.Exit(1)
    if not quiet:
        t = Table(title="replay", show_header=False)
        for k, v in [
            ("files", summary.files), ("lines", summary.lines), ("events", summary.events),
            ("duplicates", summary.duplicates), ("dead letters", f"{summary.dead_letters} {summary.dead_by_reason or ''} → {dead_out}"),
            ("alerts", f"{summary.alerts} {summary.alerts_by_kind or ''} → {alerts_out}"),
            ("throughput", f"{summary.events_per_s:,.0f} events/s ({summary.seconds:.2f} s"
                            + ("; reader process" + (", detectors split" if summary.split else "") + ")"
                               if summary.reader == "process" else ")")),
        ]:
            t.add_row(k, str(v))
        console.print(t)


@app.command("settings")
def show_settings(markdown: bool = typer.Option(False, "--markdown", help="the README's settings table")) -> None:
    """Every setting: environment variable, current value (secrets redacted), meaning."""
    from keywatch.settings import settings_table

    settings = load_settings()
    rows = settings_table(settings)
    if markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for name, _value, default, desc in rows:
            print(f"| `{name}` | `{default}` | {desc} |")
        return
    t = Table(title="keywatch settings")
    for col in ("variable", "value", "meaning"):
        t.add_column(col, overflow="fold")
    for name, value, _default, desc in rows:
        t.add_row(name, value, desc)
    Console().print(t)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (also done at worker start)."""
    from keywatch.sinks.clickhouse import connect
    from keywatch.sinks.migrate import migrate, migration_params

    settings = load_settings()
    client = connect(settings, migrate_schema=False)
    applied = migrate(client, migration_params(settings))
    console.print(f"applied: {', '.join(applied) if applied else 'nothing (schema is current)'}")


@db_app.command("serve")
def db_serve(
    host: Optional[str] = typer.Option(None, "--host", help="default: KEYWATCH_CHSERVER_HOST (127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="default: KEYWATCH_CHSERVER_PORT (8123); 0 = a free port"),
    path: Optional[Path] = typer.Option(None, "--path", help="chDB data path; default: the embedded one, KEYWATCH_DATA_DIR/chdb"),
) -> None:
    """Serve the embedded chDB over ClickHouse's HTTP interface, so several processes share it
    (KEYWATCH_CLICKHOUSE_DSN=http://127.0.0.1:8123). Stops on SIGTERM/Ctrl-C."""
    from keywatch.sinks.chserver import serve

    serve(load_settings(), host=host, port=port, path=path)


# --- sub-commands of other areas are registered below (one line each) ------------------------
from keywatch.sinks.revocation.cli import revoke_app, replay_on_output as _revocation_callback; app.add_typer(revoke_app, name="revoke")  # noqa: E402,E702  (issue 5)
from keywatch.cli_eval import eval_app; app.add_typer(eval_app, name="eval")  # noqa: E402,E702  (issue 3; cost adds `eval nab`)
from keywatch.simulate import simulate_command; app.command("simulate")(simulate_command)  # noqa: E402,E702  (issue 3)
from keywatch import cli_stream; app.command("worker")(cli_stream.worker)  # noqa: E402,E702  (stream)
app.command("demo")(cli_stream.demo)  # stream
app.command("bench")(cli_stream.bench)  # stream
from keywatch import bench_core; bench_core.register(app)  # noqa: E402,E702  (issue 8: `keywatch bench-core`)
from keywatch import bench_sink; bench_sink.register(app)  # noqa: E402,E702  (issue 8: `keywatch bench-sink`)
from keywatch import cli_api; cli_api.register(app)  # noqa: E402,E702  (issue 6: alerts, key, report, dashboards)
from keywatch import cli_connectors; app.command("ingest")(cli_connectors.ingest)  # noqa: E402,E702  (issue 7)
app.command("poll")(cli_connectors.poll)  # issue 7
from keywatch.sinks.channels.cli import channels_app; app.add_typer(channels_app, name="channels")  # noqa: E402,E702  (issue 4)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
