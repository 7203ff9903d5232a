"""`keywatch revoke list | show | approve | reject | undo`: the human side of revocation.

Works directly against ClickHouse: a server (`KEYWATCH_CLICKHOUSE_DSN`), or embedded chDB while
the worker is stopped (chDB allows one process per data path; with the worker running, use
its HTTP API instead). Exit codes: 0 done, 1 the provider call failed, 2 bad settings/policy,
3 unknown id or wrong state.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

revoke_app = typer.Typer(no_args_is_help=True, help="Key revocation: pending approvals, approve, reject, undo.")
out = Console()
err = Console(stderr=True)


def _service():
    from keywatch.cli import load_settings
    from keywatch.sinks.revocation.policy import PolicyError
    from keywatch.sinks.revocation.service import RevocationService

    settings = load_settings()
    try:
        return RevocationService.from_settings(settings)
    except PolicyError as exc:
        err.print(f"[red]invalid revocation policy[/red] {exc}")
        raise typer.Exit(2)
    except Exception as exc:  # noqa: BLE001 - most likely the worker holds the chDB path
        hint = "" if settings.clickhouse_dsn else " (is the worker running? it owns the embedded database: use its HTTP API or set KEYWATCH_CLICKHOUSE_DSN)"
        err.print(f"[red]cannot open ClickHouse[/red]: {type(exc).__name__}{hint}")
        raise typer.Exit(2)


def _run(fn):
    from keywatch.sinks.revocation.service import RevocationError

    try:
        return fn()
    except RevocationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3)


def _show(d) -> None:
    colour = {"executed": "green", "failed": "red", "dry_run": "cyan"}.get(d.outcome, "yellow")
    out.print(f"[{colour}]{d.outcome}[/{colour}] {d.decision_id} {d.action} {d.provider} key={d.key_id} "
              f"actor={d.actor} status={d.status_code or '-'} {d.error or d.reason}")


def _actor(actor: Optional[str]) -> str:
    return actor or getpass.getuser()


@revoke_app.command("list")
def list_cmd(
    status: str = typer.Option("pending", help="pending (approvable), all, or an outcome name"),
    key_id: Optional[str] = typer.Option(None, "--key", help="only this key id"),
    limit: int = typer.Option(50, min=1, max=10_000),
) -> None:
    """Decisions, newest first (default: those waiting for approval)."""
    svc = _service()
    rows = svc.list(status, limit=limit, key_id=key_id)
    t = Table(title=f"revocations ({status})")
    for col in ("id", "outcome", "action", "provider", "key", "project", "alert", "requested", "expires", "reason"):
        t.add_column(col)
    from keywatch.models.events import format_ts

    for d in rows:
        t.add_row(d.decision_id, d.outcome, d.action, d.provider, d.key_id, d.project or "-", d.alert_kind,
                  format_ts(d.requested_ms), format_ts(d.expires_ms) if d.expires_ms else "-", (d.error or d.reason)[:80])
    out.print(t)


@revoke_app.command("show")
def show_cmd(decision_id: str) -> None:
    """One decision's current state."""
    svc = _service()
    _show(_run(lambda: svc.get(decision_id)))


@revoke_app.command("approve")
def approve_cmd(decision_id: str, actor: Optional[str] = typer.Option(None, help="who approves (default: login name)")) -> None:
    """Execute a pending revocation now."""
    svc = _service()
    d = _run(lambda: asyncio.run(svc.approve(decision_id, _actor(actor))))
    _show(d)
    if d.outcome == "failed":
        raise typer.Exit(1)


@revoke_app.command("reject")
def reject_cmd(decision_id: str, reason: str = typer.Option("", help="why (kept in the audit row)"),
               actor: Optional[str] = typer.Option(None)) -> None:
    """Drop a pending revocation."""
    svc = _service()
    _show(_run(lambda: svc.reject(decision_id, _actor(actor), reason)))


@revoke_app.command("undo")
def undo_cmd(decision_id: str, actor: Optional[str] = typer.Option(None)) -> None:
    """Re-enable a key keywatch disabled (not possible for deleted keys)."""
    svc = _service()
    d = _run(lambda: asyncio.run(svc.undo(decision_id, _actor(actor))))
    _show(d)
    if d.outcome == "failed":
        raise typer.Exit(1)


def replay_on_output(settings):
    """For `keywatch replay --revoke`: the revocation callback, or exit 2 with the reason."""
    from keywatch.sinks.revocation.policy import PolicyError
    from keywatch.sinks.revocation.service import RevocationError, replay_callback

    try:
        return replay_callback(settings)
    except (PolicyError, RevocationError) as exc:
        err.print(f"[red]cannot revoke[/red] {exc}")
        raise typer.Exit(2)
