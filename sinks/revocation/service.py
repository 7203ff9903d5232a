"""`RevocationService`: list, approve, reject and undo decisions — for the CLI and the HTTP API.

Approvals bypass rate limits and the circuit breaker (a person decided) but not dry run: with
`KEYWATCH_REVOCATION_ENABLED` false an approval is recorded as `dry_run` and nothing is called.
Errors are `RevocationError` with `.status` (404 unknown id, 409 wrong state, 410 expired) so
an HTTP layer can map them directly.

    svc = RevocationService.from_settings(settings, client)
    for d in svc.list():                       # pending approvals, newest first
        print(d.decision_id, d.provider, d.key_id, d.reason)
    await svc.approve("rv_…", actor="alice")   # → Decision(outcome="executed"|"failed"|"dry_run")
    svc.reject("rv_…", actor="alice", reason="planned load test")
    await svc.undo("rv_…", actor="alice")      # re-enables a disabled key
"""

from __future__ import annotations

import time
from typing import Callable

from keywatch.sinks.revocation.adapters import Target, build_adapters
from keywatch.sinks.revocation.engine import RevocationEngine, decision_id, expire_pending
from keywatch.sinks.revocation.policy import Policy
from keywatch.sinks.revocation.store import APPROVABLE, Decision, RevocationStore

UNDOABLE_ACTIONS = ("disable",)


class RevocationError(ValueError):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def load_policy(settings) -> Policy:
    """The configured policy, or an empty one (matches nothing) when no file is set."""
    return Policy.load(settings.revocation_policy_file) if settings.revocation_policy_file else Policy()


def build_engine(settings, client, *, clock: Callable[[], float] = time.time, retry=None, metrics=None,
                 notify=(), policy: Policy | None = None) -> RevocationEngine:
    store = RevocationStore(client, settings.clickhouse_database)
    return RevocationEngine(
        policy or load_policy(settings), build_adapters(settings, retry=retry), store,
        live=settings.revocation_enabled, approval_ttl_s=settings.revocation_approval_ttl_s,
        clock=clock, metrics=metrics, notify=notify,
    )


class RevocationService:
    def __init__(self, engine: RevocationEngine) -> None:
        self.engine = engine
        self.store = engine.store

    @classmethod
    def from_settings(cls, settings, client=None, **kw) -> "RevocationService":
        if client is None:
            from keywatch.sinks.clickhouse import connect

            client = connect(settings)
        return cls(build_engine(settings, client, **kw))

    def _now_ms(self) -> int:
        return self.engine._now_ms()

    def expire(self) -> list[Decision]:
        """Mark approvals past their TTL `expired`; return them."""
        return expire_pending(self.store, self._now_ms(), actor="policy")

    def list(self, status: str = "pending", limit: int = 100, key_id: str | None = None) -> list[Decision]:
        """`pending` (approvable), `all`, or one outcome name; newest first."""
        self.expire()
        outcomes = APPROVABLE if status == "pending" else None if status == "all" else (status,)
        return self.store.list(outcomes, key_id=key_id, limit=limit)

    def get(self, decision_id_: str) -> Decision:
        d = self.store.get(decision_id_)
        if d is None:
            raise RevocationError(f"no revocation decision {decision_id_}", 404)
        return d

    def history(self, decision_id_: str) -> list[dict]:
        """The decision's audit trail, oldest first (compact rows for the API and the CLI)."""
        return [_history_row(d) for d in self.store.history(decision_id_)]

    def _pending(self, decision_id_: str) -> Decision:
        d = self.get(decision_id_)
        if d.outcome not in APPROVABLE:
            raise RevocationError(f"{decision_id_} is not waiting for approval (outcome {d.outcome})")
        if d.expires_ms is not None and d.expires_ms <= self._now_ms():
            self.expire()
            raise RevocationError(f"{decision_id_} expired without approval", 410)
        return d

    @staticmethod
    def _actor(actor: str) -> str:
        actor = (actor or "").strip()
        if not actor or actor == "policy":
            raise RevocationError("an approval needs the name of the person approving", 400)
        return actor[:128]

    async def approve(self, decision_id_: str, actor: str) -> Decision:
        """Run the pending action now (limits and breaker do not apply; dry run does)."""
        actor = self._actor(actor)
        d = self._pending(decision_id_)
        d = d.evolve(actor=actor, reason=f"{d.reason}; approved by {actor}", error="", completed_ms=None)
        if d.action not in ("disable", "delete"):
            raise RevocationError(f"{decision_id_}: nothing to execute (action {d.action})")
        if not self.engine.live:
            return self.engine._record(d.evolve(outcome="dry_run", dry_run=True, completed_ms=self._now_ms(),
                                                reason=d.reason + "; dry run: provider not called"))
        target = Target(d.provider, d.key_id, d.project or None)
        return await self.engine.execute(d.evolve(dry_run=False), target)

    def reject(self, decision_id_: str, actor: str, reason: str = "") -> Decision:
        actor = self._actor(actor)
        d = self._pending(decision_id_)
        note = f"; rejected by {actor}" + (f": {reason[:200]}" if reason else "")
        return self.engine._record(d.evolve(outcome="rejected", actor=actor, completed_ms=self._now_ms(), reason=d.reason + note))

    async def undo(self, decision_id_: str, actor: str) -> Decision:
        """Re-enable a key that keywatch disabled. Returns the undo decision (action `enable`)."""
        actor = self._actor(actor)
        d = self.get(decision_id_)
        if d.outcome != "executed" or d.undo_of:
            raise RevocationError(f"{decision_id_} cannot be undone (outcome {d.outcome})")
        if d.action not in UNDOABLE_ACTIONS or not d.reversible:
            raise RevocationError(f"{decision_id_}: {d.action} is irreversible; the key must be re-issued", 409)
        now = self._now_ms()
        u = d.evolve(decision_id=decision_id(d.decision_id, d.provider, d.key_id, "undo"), action="enable", actor=actor,
                     undo_of=d.decision_id, outcome="started", reason=f"undo of {d.decision_id} by {actor}",
                     request_id="", status_code=0, error="", attempts=0, requested_ms=now, completed_ms=None,
                     expires_ms=None, duration_ms=0.0, dry_run=not self.engine.live)
        if not self.engine.live:
            return self.engine._record(u.evolve(outcome="dry_run", completed_ms=now, reason=u.reason + "; dry run"))
        done = await self.engine.execute(u, Target(d.provider, d.key_id, d.project or None), verb="enable")
        if done.outcome == "executed":
            self.engine._record(d.evolve(outcome="undone", actor=actor, completed_ms=self._now_ms(),
                                         reason=f"{d.reason}; undone by {actor} ({done.decision_id})"))
        return done


def build_revocation_hook(settings, sink=None, metrics=None, notify=()) -> RevocationEngine | None:
    """The worker's / replay's alert hook, or None when no policy file is configured.

    Raises `PolicyError` for a bad policy file, so a typo stops the worker at start.
    """
    if not settings.revocation_policy_file:
        return None
    if sink is not None:
        client = sink.client
    else:
        from keywatch.sinks.clickhouse import connect

        client = connect(settings)
    return build_engine(settings, client, metrics=metrics, notify=notify)


def replay_callback(settings) -> Callable:
    """`keywatch replay --revoke`: an `on_output` callback running the revocation hook per chunk.

    Opens ClickHouse (the audit trail is mandatory), so in embedded mode the worker must be
    stopped. Limits use wall-clock time, so replaying a long history trips them quickly: safe.
    """
    import asyncio

    engine = build_revocation_hook(settings)
    if engine is None:
        raise RevocationError("--revoke needs KEYWATCH_REVOCATION_POLICY_FILE", 400)

    def on_output(out) -> None:
        if out.alerts:
            asyncio.run(engine.handle(list(out.alerts)))

    return on_output


def _history_row(d: Decision) -> dict:
    return {"version": d.version, "outcome": d.outcome, "actor": d.actor, "dry_run": d.dry_run,
            "requested_ms": d.requested_ms, "completed_ms": d.completed_ms, "status_code": d.status_code,
            "reason": d.reason, "error": d.error}
