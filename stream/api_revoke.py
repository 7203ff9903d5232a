"""Revocation endpoints of the worker's HTTP API (issue 5): list, show, approve, reject, undo.

Plain handlers like `keywatch.stream.api`: `handler(runtime, ...) -> Reply`, no faust. They go
through `RevocationService` around the worker's own revocation engine (the alert hook), so an
approval shares the hook's guard state, adapters and dry-run setting. With no policy file the
service still lists and shows stored decisions and can act on them with the configured adapters.
Mutations need the bearer token; the actor comes from the body's `actor` (or the
`X-Keywatch-Actor` header, merged by stream/web.py) and is required.

>>> list_params({"status": "all", "limit": "5"})
('all', 5, None, None)
>>> list_params({"provider": "openai"})
('pending', 100, None, 'openai')
"""

from __future__ import annotations

from typing import Any, Mapping

from keywatch.stream.api import Reply, check_auth, error
from keywatch.stream.queries import MAX_LIMIT, QueryError, parse_limit
from keywatch.stream.runtime import WorkerRuntime

OUTCOMES = ("started", "executed", "dry_run", "skipped_by_policy", "pending_approval", "rate_limited",
            "circuit_open", "failed", "rejected", "expired", "undone")
MAX_SCAN = 10_000  # provider is filtered after the store's query; pending queues are small


def service(rt: WorkerRuntime):
    """The runtime's RevocationService, built once around the revocation hook's engine if any."""
    if rt.revocation is None:
        from keywatch.sinks.revocation.engine import RevocationEngine
        from keywatch.sinks.revocation.service import RevocationService, build_engine

        engine = next((h for h in rt.alert_hooks if isinstance(h, RevocationEngine)), None)
        rt.revocation = RevocationService(engine or build_engine(rt.settings, rt.sink.client, metrics=rt.metrics))
    return rt.revocation


def list_params(params: Mapping[str, str]) -> tuple[str, int, str | None, str | None]:
    status = params.get("status") or "pending"
    if status not in ("pending", "all") + OUTCOMES:
        raise QueryError(f"status must be pending, all or one of {', '.join(OUTCOMES)}")
    limit = parse_limit(params, most=MAX_LIMIT)
    return status, limit, params.get("key") or None, params.get("provider") or None


def list_revocations(rt: WorkerRuntime, params: Mapping[str, str]) -> Reply:
    """GET /revocations?status=pending|all|<outcome>&key=&provider=&limit= (newest first)."""
    try:
        status, limit, key, provider = list_params(params)
    except QueryError as exc:
        return error(400, str(exc))
    found = service(rt).list(status, limit=MAX_SCAN if provider else limit, key_id=key)
    rows = [d.to_dict() for d in found if provider is None or d.provider == provider][:limit]
    return Reply(200, {"revocations": rows, "count": len(rows), "status": status})


def get_revocation(rt: WorkerRuntime, decision_id: str) -> Reply:
    from keywatch.sinks.revocation.service import RevocationError

    try:
        svc = service(rt)
        return Reply(200, {**svc.get(decision_id).to_dict(), "history": svc.history(decision_id)})
    except RevocationError as exc:
        return error(exc.status, str(exc))


async def _act(rt: WorkerRuntime, decision_id: str, auth: str | None, body: Mapping[str, Any], verb: str) -> Reply:
    from keywatch.sinks.revocation.service import RevocationError

    if (denied := check_auth(rt.settings.secret("api_token"), auth)) is not None:
        return denied
    actor = body.get("actor")
    if not isinstance(actor, str) or not actor.strip():
        return error(400, "actor is required (body `actor` or header X-Keywatch-Actor)")
    svc = service(rt)
    try:
        if verb == "approve":
            d = await svc.approve(decision_id, actor)
        elif verb == "undo":
            d = await svc.undo(decision_id, actor)
        else:
            d = svc.reject(decision_id, actor, str(body.get("reason") or ""))
    except RevocationError as exc:
        return error(exc.status, str(exc))
    # A failed provider call is still a recorded outcome: 200 with `outcome: failed` (the CLI
    # exits 1 on it); the decision stays approvable for a retry.
    return Reply(200, d.to_dict())


async def approve(rt: WorkerRuntime, decision_id: str, auth: str | None, body: Mapping[str, Any]) -> Reply:
    return await _act(rt, decision_id, auth, body, "approve")


async def reject(rt: WorkerRuntime, decision_id: str, auth: str | None, body: Mapping[str, Any]) -> Reply:
    return await _act(rt, decision_id, auth, body, "reject")


async def undo(rt: WorkerRuntime, decision_id: str, auth: str | None, body: Mapping[str, Any]) -> Reply:
    return await _act(rt, decision_id, auth, body, "undo")
