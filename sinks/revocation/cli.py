"""`keywatch revoke list | show | approve | reject | undo`: the human side of revocation.

Where it acts: in embedded mode (no `KEYWATCH_CLICKHOUSE_DSN`) the running worker owns chDB, so
the commands go through its HTTP API (`/revocations…`, token `KEYWATCH_API_TOKEN`); the worker's
own engine then executes an approval. With a ClickHouse server DSN, or when no worker answers,
they work directly against ClickHouse. Exit codes: 0 done, 1 the provider call failed (or the
API failed), 2 bad settings/policy/token or unreachable backend, 3 unknown id or wrong state.
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


MAX_SCAN = 10_000  # provider is filtered after the query; pending queues are small


class _Direct:
    """RevocationService in this process (ClickHouse server, or chDB while no worker runs)."""

    def __init__(self, svc) -> None:
        self.svc = svc

    def list(self, status: str, limit: int, key_id: str | None, provider: str | None):
        rows = self.svc.list(status, limit=MAX_SCAN if provider else limit, key_id=key_id)
        return [d for d in rows if provider is None or d.provider == provider][:limit]

    def get(self, decision_id: str):
        return self.svc.get(decision_id)

    def history(self, decision_id: str) -> list[dict]:
        return self.svc.history(decision_id)

    def approve(self, decision_id: str, actor: str):
        return asyncio.run(self.svc.approve(decision_id, actor))

    def reject(self, decision_id: str, actor: str, reason: str):
        return self.svc.reject(decision_id, actor, reason)

    def undo(self, decision_id: str, actor: str):
        return asyncio.run(self.svc.undo(decision_id, actor))


class _Api:
    """The same operations through the worker's HTTP API (keywatch.apiclient.ApiBackend)."""

    def __init__(self, api) -> None:
        self.api = api

    @staticmethod
    def _decision(d: dict):
        from keywatch.sinks.revocation.store import Decision

        return Decision(**{k: v for k, v in d.items() if k != "history"})

    def list(self, status: str, limit: int, key_id: str | None, provider: str | None):
        rows = self.api.revocations({"status": status, "limit": limit, "key": key_id, "provider": provider})
        return [self._decision(d) for d in rows]

    def get(self, decision_id: str):
        return self._decision(self.api.revocation(decision_id))

    def history(self, decision_id: str) -> list[dict]:
        return self.api.revocation(decision_id).get("history", [])

    def approve(self, decision_id: str, actor: str):
        return self._decision(self.api.revocation_action(decision_id, "approve", {"actor": actor}))

    def reject(self, decision_id: str, actor: str, reason: str):
        return self._decision(self.api.revocation_action(decision_id, "reject", {"actor": actor, "reason": reason}))

    def undo(self, decision_id: str, actor: str):
        return self._decision(self.api.revocation_action(decision_id, "undo", {"actor": actor}))


def _service(settings):
    from keywatch.sinks.revocation.policy import PolicyError
    from keywatch.sinks.revocation.service import RevocationService

    try:
        return RevocationService.from_settings(settings)
    except PolicyError as exc:
        err.print(f"[red]invalid revocation policy[/red] {exc}")
        raise typer.Exit(2)
    except Exception as exc:  # noqa: BLE001 - most likely the worker holds the chDB path
        hint = "" if settings.clickhouse_dsn else " (is the worker running? it owns the embedded database: start its HTTP API or set KEYWATCH_CLICKHOUSE_DSN)"
        err.print(f"[red]cannot open ClickHouse[/red]: {type(exc).__name__}{hint}")
        raise typer.Exit(2)


def _backend():
    """The worker's API in embedded mode when it answers; else the service in this process."""
    from keywatch.apiclient import ApiBackend
    from keywatch.cli import load_settings

    settings = load_settings()
    if settings.embedded_clickhouse:
        api = ApiBackend(settings)
        if api.alive():
            return _Api(api)
    return _Direct(_service(settings))


def _run(fn):
    from keywatch.apiclient import BackendError
    from keywatch.sinks.revocation.service import RevocationError

    try:
        return fn()
    except RevocationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3)
    except BackendError as exc:
        hint = " (set KEYWATCH_API_TOKEN to the worker's token)" if exc.status in (401, 403) else ""
        err.print(f"[red]{exc}[/red]{hint}")
        raise typer.Exit(3 if exc.status in (400, 404, 409, 410) else 2 if exc.status in (0, 401, 403) else 1)


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
    provider: Optional[str] = typer.Option(None, help="only this provider"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """Decisions, newest first (default: those waiting for approval)."""
    b = _backend()
    rows = _run(lambda: b.list(status, limit, key_id, provider))
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
    """One decision's current state and its audit trail."""
    from keywatch.models.events import format_ts

    b = _backend()
    _show(_run(lambda: b.get(decision_id)))
    for h in _run(lambda: b.history(decision_id)):
        out.print(f"  v{h['version']} {format_ts(h['requested_ms'])} {h['outcome']} actor={h['actor']} "
                  f"status={h['status_code'] or '-'} {h['error'] or h['reason']}")


@revoke_app.command("approve")
def approve_cmd(decision_id: str, actor: Optional[str] = typer.Option(None, help="who approves (default: login name)")) -> None:
    """Execute a pending revocation now."""
    b = _backend()
    d = _run(lambda: b.approve(decision_id, _actor(actor)))
    _show(d)
    if d.outcome == "failed":
        raise typer.Exit(1)


@revoke_app.command("reject")
def reject_cmd(decision_id: str, reason: str = typer.Option("", help="why (kept in the audit row)"),
               actor: Optional[str] = typer.Option(None)) -> None:
    """Drop a pending revocation."""
    b = _backend()
    _show(_run(lambda: b.reject(decision_id, _actor(actor), reason)))


@revoke_app.command("undo")
def undo_cmd(decision_id: str, actor: Optional[str] = typer.Option(None)) -> None:
    """Re-enable a key keywatch disabled (not possible for deleted keys)."""
    b = _backend()
    d = _run(lambda: b.undo(decision_id, _actor(actor)))
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
