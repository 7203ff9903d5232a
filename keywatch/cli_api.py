"""CLI commands of issue 6: `alerts list|show|ack|feedback`, `key`, `report`, `spend`, `dashboards build|push`.

`register(app)` adds them to the main Typer app (one line in `keywatch/cli.py`). Data comes from
`keywatch.apiclient.backend`: the worker's API in embedded mode, ClickHouse otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

alerts_app = typer.Typer(no_args_is_help=True, help="List, inspect, acknowledge and label alerts.")
dash_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code.")
out = Console()
err = Console(stderr=True)


def _settings():
    from keywatch.cli import load_settings

    return load_settings()


def _run(fn):
    """Call a backend operation; print its error and exit 1 instead of a traceback."""
    from keywatch.apiclient import BackendError

    try:
        return fn()
    except BackendError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1)


def _backend(mutating: bool = False):
    from keywatch.apiclient import backend

    return backend(_settings(), mutating=mutating)


@alerts_app.command("list")
def alerts_list(
    kind: Optional[str] = typer.Option(None), severity: Optional[str] = typer.Option(None),
    status: Optional[str] = typer.Option(None), key: Optional[str] = typer.Option(None),
    since: Optional[str] = typer.Option(None, help="RFC 3339 or epoch ms"), limit: int = typer.Option(50),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Latest version of each alert, newest first."""
    params = {"kind": kind, "severity": severity, "status": status, "key": key, "since": since, "limit": limit}
    alerts = _run(lambda: _backend().alerts(params))
    if as_json:
        out.print_json(json.dumps(alerts, default=str))
        return
    t = Table(title=f"{len(alerts)} alerts")
    for c in ("detected_at", "alert_id", "kind", "severity", "score", "key_id", "cost $", "status", "reason"):
        t.add_column(c)
    for a in alerts:
        t.add_row(a["detected_at"], a["alert_id"], a["kind"], a["severity"], f'{a["score"]:.2f}', a["key_id"] or "—",
                  f'{a["cost_impact_usd"]:.2f}', a["status"], (a["reasons"] or [""])[0][:60])
    out.print(t)


@alerts_app.command("show")
def alerts_show(alert_id: str) -> None:
    """One alert with its evidence and the actions taken on it (JSON)."""
    out.print_json(json.dumps(_run(lambda: _backend().alert(alert_id)), default=str))


@alerts_app.command("ack")
def alerts_ack(alert_id: str, note: str = typer.Option("", help="free text"), actor: str = typer.Option("")) -> None:
    """Acknowledge an alert (needs the running worker and KEYWATCH_API_TOKEN)."""
    a = _run(lambda: _backend(mutating=True).ack(alert_id, {"note": note, "actor": actor}))
    out.print(f"{a['alert_id']}: {a['status']} (version {a['version']})")


@alerts_app.command("feedback")
def alerts_feedback(
    alert_id: str,
    label: str = typer.Argument(..., help="not_anomaly | planned_activity | confirmed"),
    window: Optional[float] = typer.Option(None, "--window", help="seconds to accept this behaviour"),
    note: str = typer.Option(""), actor: str = typer.Option(""),
) -> None:
    """Tell the detectors whether an alert was right (suppresses repeats, updates baselines)."""
    body = {"label": label, "note": note, "actor": actor}
    if window is not None:
        body["window_s"] = window
    res = _run(lambda: _backend(mutating=True).feedback(alert_id, body))
    a = res.get("alert") or {}
    out.print(f"{alert_id}: {label} recorded; alert status {a.get('status', '?')}")


def key(key_id: str, hours: int = typer.Option(24, help="hours of activity before the key's last event")) -> None:
    """Risk, baseline and recent activity of one key."""
    out.print_json(json.dumps(_run(lambda: _backend().key(key_id, hours)), default=str))


def report(alert_id: str, html: Path = typer.Option(..., "--html", help="output file")) -> None:
    """Write a self-contained incident report (timeline chart, evidence, response) as HTML."""
    from keywatch.report_html import render

    data = _run(lambda: _backend().report_data(alert_id))
    html.write_text(render(data), encoding="utf-8")
    err.print(f"report for {alert_id} → {html}")


def spend(
    level: Optional[str] = typer.Option(None, help="project | provider"), provider: Optional[str] = typer.Option(None),
    project: Optional[str] = typer.Option(None), as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Projected end-of-day / end-of-month spend per project and provider, and budget status."""
    b = _backend()
    proj = _run(lambda: b.spend_projection({"level": level, "provider": provider, "project": project}))
    budgets = _run(lambda: b.budgets())
    if as_json:
        out.print_json(json.dumps({"projection": proj, "budgets": budgets}, default=str))
        return
    t = Table(title=f"spend projection ({proj['source']})")
    for c in ("level", "provider", "project", "today $", "end of day $", "month $", "end of month $", "as of"):
        t.add_column(c, justify="right" if "$" in c else "left")
    for r in proj["projections"]:
        t.add_row(r["level"], r["provider"], r["project"] or "—", f'{r["day_spent_usd"]:,.2f}',
                  f'{r["eod_projected_usd"]:,.2f}', f'{r["month_spent_usd"]:,.2f}', f'{r["eom_projected_usd"]:,.2f}', r["at"])
    out.print(t)
    bt = Table(title=f"{budgets['count']} budgets")
    for c in ("budget", "period", "spent $", "amount $", "used", "step alerted", "state"):
        bt.add_column(c, justify="right" if c in ("spent $", "amount $", "used") else "left")
    colour = {"over": "red", "warning": "yellow", "ok": "green"}
    for r in budgets["budgets"]:
        step = r["last_step_alerted_pct"]
        bt.add_row(r["budget_id"], f'{r["period"]} from {(r["period_start"] or "—")[:10]}', f'{r["spent_usd"]:,.2f}',
                   f'{r["amount_usd"]:,.2f}', f'{r["used_pct"]:.0f}%', f"{step:.0f}%" if step else "—",
                   f'[{colour[r["state"]]}]{r["state"]}[/{colour[r["state"]]}]')
    out.print(bt)


@dash_app.command("build")
def dashboards_build(out_dir: Optional[Path] = typer.Option(None, help="default: the package's dashboards/json")) -> None:
    """Regenerate the dashboards' JSON from the Python definitions."""
    from keywatch.dashboards.build import JSON_DIR, write_all

    for p in write_all(out_dir or JSON_DIR, _settings().clickhouse_database):
        err.print(f"wrote {p}")


@dash_app.command("push")
def dashboards_push(folder: str = typer.Option("keywatch", help="folder uid")) -> None:
    """Upload the dashboards to KEYWATCH_GRAFANA_URL (token KEYWATCH_GRAFANA_TOKEN), by uid, overwriting."""
    from grafana_client.client import GrafanaException

    from keywatch.dashboards.push import push

    s = _settings()
    try:
        done = push(s.grafana_url, s.secret("grafana_token"), folder_uid=folder)
    except (GrafanaException, OSError) as exc:
        err.print(f"[red]push failed[/red] {exc}")
        raise typer.Exit(1)
    for d in done:
        err.print(f"{d.uid}: {d.title} → {s.grafana_url.rstrip('/')}{d.url} (version {d.version})")


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(dash_app, name="dashboards")
    app.command("key")(key)
    app.command("report")(report)
    app.command("spend")(spend)
