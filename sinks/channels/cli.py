"""`keywatch channels …`: check the channels file, show or send digests, send a test alert.

    keywatch channels check                  # validate KEYWATCH_CHANNELS_FILE, list routes
    keywatch channels digest                 # pending digest alerts per route and channel
    keywatch channels digest --send          # send every digest now (ignores digest_at)
    keywatch channels test --route soc       # a synthetic alert through one route's channels

Deliveries are recorded in ClickHouse when a server DSN is set (embedded chDB belongs to the
running worker, so with it these commands only log).
"""

from __future__ import annotations

import asyncio
import time
from typing import List, Optional

import typer

channels_app = typer.Typer(no_args_is_help=True, help="Alert channels (email, Slack, PagerDuty, webhooks).")


def _dispatcher():
    from keywatch.cli import console, load_settings
    from keywatch.sinks.channels.config import ChannelsConfigError
    from keywatch.sinks.channels.dispatch import Dispatcher

    settings = load_settings()
    if not settings.channels_file:
        console.print("[red]KEYWATCH_CHANNELS_FILE is not set[/red]")
        raise typer.Exit(2)
    sink = None
    if not settings.embedded_clickhouse:
        from keywatch.sinks.clickhouse import ClickHouseSink, connect

        sink = ClickHouseSink(connect(settings), settings.clickhouse_database)
    try:
        return Dispatcher.from_settings(settings, sink=sink), console
    except ChannelsConfigError as exc:
        console.print(f"[red]invalid channels file[/red] {exc}")
        raise typer.Exit(2)


@channels_app.command("check")
def check() -> None:
    """Validate the channels file (secrets resolved, never printed)."""
    d, console = _dispatcher()
    for name, spec in d.config.channels.items():
        console.print(f"channel {name}: {spec.type}")
    for r in d.config.routes:
        console.print(f"route {r.name}: kinds={r.kinds or 'all'} severity={r.min_severity}..{r.max_severity} "
                      f"mode={r.mode} → {', '.join(r.channels)}")


@channels_app.command("digest")
def digest(
    send: bool = typer.Option(False, "--send", help="send now instead of listing"),
    route: Optional[List[str]] = typer.Option(None, "--route", help="only these digest routes"),
) -> None:
    """List pending digest alerts, or send them now with --send."""
    d, console = _dispatcher()
    if send:
        async def run():
            try:
                return await d.flush_digests(force=True, routes=route or None)
            finally:
                await d.aclose()

        for name, n in asyncio.run(run()).items():
            console.print(f"digest {name}: {n} alert(s) sent")
        return
    for r in d.config.routes:
        if r.mode == "digest" and (not route or r.name in route):
            for c in r.channels:
                console.print(f"digest {r.name} → {c}: {len(d.box.pending(r.name, c))} pending, "
                              f"last sent {d.box.last_sent(r.name) or 'never'}")


@channels_app.command("test")
def test(route: str = typer.Option(..., "--route"), severity: str = typer.Option("high", "--severity")) -> None:
    """Send a synthetic alert through one route's channels (bypasses its filters, not its rate limit)."""
    from keywatch.models.alerts import Alert
    from keywatch.models.events import format_ts

    d, console = _dispatcher()
    chosen = next((r for r in d.config.routes if r.name == route), None)
    if chosen is None:
        console.print(f"[red]no route {route!r}[/red]")
        raise typer.Exit(2)
    d.config = d.config.model_copy(update={"routes": [chosen.model_copy(update={
        "kinds": [], "min_severity": "low", "max_severity": "critical", "providers": [], "projects": [], "mode": "immediate"})]})
    now = int(time.time() * 1000)
    alert = Alert(alert_id=f"kw_test_{now}", kind=(chosen.kinds or ["test"])[0], provider="test", key_id="key_test",
                  project=None, started_at=format_ts(now), detected_at=format_ts(now), severity=severity, score=0.5,
                  reasons=["keywatch channel test"], cost_impact_usd=0.0, started_at_ms=now, detected_at_ms=now)
    rows: list = []
    d._record = rows.extend if d.sink is None else (lambda r: (rows.extend(r), d.sink.insert("alert_deliveries", r, _cols())))

    async def run():
        try:
            await d([alert])
        finally:
            await d.aclose()

    asyncio.run(run())
    for r in rows:
        console.print(f"{r[5]}: attempt {r[8]} {r[9]} {r[10] or ''} {r[11]}")
    if not rows or any(r[9] == "failed" for r in rows):
        raise typer.Exit(1)


def _cols():
    from keywatch.sinks.channels.dispatch import DELIVERY_COLUMNS

    return DELIVERY_COLUMNS
