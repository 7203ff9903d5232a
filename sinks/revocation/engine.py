"""The revocation engine: alerts in → policy decision → (maybe) a provider call, all audited.

`RevocationEngine.handle(alerts)` is the async alert hook (see `keywatch/hooks.py`); the worker
runs it in a background task, off the detection hot path. Per alert with a key:

1. duplicate of a decision already taken (same incident and key)? nothing at all;
2. no rule matches (or `action: none`), or the key is cooling down → `skipped_by_policy`;
3. protected key, `require_approval`, or an irreversible action not explicitly allowed →
   `pending_approval` (stored, logged, and sent to the notify hooks as an alert record);
4. circuit breaker open / rate limit reached → `circuit_open` / `rate_limited` (approvable);
5. dry run (the default) → `dry_run`; otherwise a `started` row, the call, then `executed`
   or `failed`. Where a provider can disable a key, keywatch disables rather than deletes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable, Iterable

from keywatch.models.alerts import Alert
from keywatch.sinks.revocation.adapters import DEFAULT_ADAPTERS, Adapter, CallResult, Target
from keywatch.sinks.revocation.guard import Guard
from keywatch.sinks.revocation.policy import Policy, Rule
from keywatch.sinks.revocation.store import APPROVABLE, Decision, RevocationStore

log = logging.getLogger("keywatch.revocation")
_DETAIL_KEYS = ("user_name", "principal")  # what an adapter may need from an alert's details


def decision_id(alert_id: str, provider: str, key_id: str, suffix: str = "") -> str:
    """Deterministic: the same incident on the same key is always the same decision."""
    return "rv_" + hashlib.sha256(f"{alert_id}|{provider}|{key_id}|{suffix}".encode()).hexdigest()[:20]


class RevocationEngine:
    def __init__(self, policy: Policy, adapters: dict[str, Adapter], store: RevocationStore, *, live: bool,
                 approval_ttl_s: float, clock: Callable[[], float] = time.time, metrics=None,
                 notify: Iterable[Callable[[list[Alert]], Any]] = ()) -> None:
        self.policy = policy
        self.adapters = adapters
        self.store = store
        self.live = live and not policy.dry_run
        self.approval_ttl_s = policy.approval_ttl_s or approval_ttl_s
        self.clock = clock
        self.metrics = metrics
        self.notify = list(notify)
        self.guard = Guard(policy, clock)
        self._seeded = False
        self._last_expire = 0.0

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def adapter_for(self, provider: str) -> tuple[str, Adapter | None]:
        name = self.policy.adapters.get(provider) or DEFAULT_ADAPTERS.get(provider) or "webhook"
        return name, self.adapters.get(name)

    def seed(self) -> None:
        """Re-learn recent decisions from the store (once, lazily, before the first alert)."""
        if not self._seeded:
            self.guard.seed(self.store.recent(self._now_ms() - int(self.guard.horizon_s() * 1000)))
            self._seeded = True

    async def __call__(self, alerts: list[Alert]) -> None:
        """The alert hook. Never raises: a failure is logged and recorded, ingestion goes on."""
        try:
            await self.handle(alerts)
        except Exception:  # noqa: BLE001 - a hook must not take the worker down
            log.exception("revocation hook failed")

    async def handle(self, alerts: list[Alert]) -> list[Decision]:
        """Decide on every alert; run the allowed calls concurrently; return the decisions."""
        self.seed()
        self.expire_due()
        decided: list[Decision] = []
        calls = []
        for a in alerts:
            d, target = self.decide(a)
            if d is None:
                continue
            if d.outcome == "started":
                calls.append(self.execute(d, target))
            else:
                decided.append(self._record(d))
        decided.extend(await asyncio.gather(*calls))
        pending = [d for d in decided if d.outcome in APPROVABLE and d.action != "none"]
        if pending:
            await self._notify(pending)
        return decided

    def decide(self, a: Alert) -> tuple[Decision | None, Target | None]:
        """The policy decision for one alert (synchronous: no await between check and mark)."""
        if not a.key_id or a.status == "resolved":
            return None, None  # project-level alerts name no key; a resolved incident needs nothing
        provider, key, project = a.provider, a.key_id, a.project or ""
        did = decision_id(a.alert_id, provider, key)
        if self.guard.seen(did):
            return None, None  # one action per key per incident, however often the alert updates
        rule = self.policy.match(a.kind, provider, a.project, a.severity, a.score)
        adapter_name, adapter = self.adapter_for(provider)
        base = Decision(
            decision_id=did, alert_id=a.alert_id, alert_kind=a.kind, severity=a.severity, score=a.score,
            provider=provider, adapter=adapter_name, key_id=key, project=project, action="none", reversible=True,
            rule=rule.name if rule else "", actor="policy", dry_run=not self.live, outcome="skipped_by_policy",
            requested_ms=self._now_ms(),
        )
        if rule is None or rule.action == "none":
            # Skips are recorded once per alert version: an update may escalate into a match.
            skip = base.evolve(decision_id=decision_id(a.alert_id, provider, key, f"skip:v{a.version}"),
                               reason="no rule matched" if rule is None else f"rule {rule.name}: action none")
            if self.guard.seen(skip.decision_id):
                return None, None
            self.guard.mark(skip.decision_id)
            return skip.evolve(completed_ms=base.requested_ms), None
        self.guard.mark(did)
        self.guard.flag(provider, key)
        target = Target(provider, key, a.project, {k: a.details[k] for k in _DETAIL_KEYS if k in a.details})
        action, reversible, why = self._choose_action(rule, adapter)
        d = base.evolve(action=action, reversible=reversible, reason=why)
        if action == "none":
            return d.evolve(completed_ms=d.requested_ms), None
        left = self.guard.cooling_down(provider, key)
        if left > 0:
            return d.evolve(reason=f"cool-down: another action on this key {self.policy.cooldown_s - left:.0f} s ago",
                            completed_ms=d.requested_ms), None
        approval = self._approval_reason(rule, d, provider, key, a.project)
        expires = d.requested_ms + int(self.approval_ttl_s * 1000)
        if approval:
            self.guard.touch_key(provider, key)
            return d.evolve(outcome="pending_approval", reason=approval, expires_ms=expires,
                            protected=self.policy.is_protected(provider, key, a.project)), target
        verdict, why_not = self.guard.check(project, key)
        if verdict:
            self.guard.touch_key(provider, key)
            return d.evolve(outcome=verdict, reason=why_not, expires_ms=expires), target
        self.guard.record_action(project, provider, key)
        if not self.live:
            note = "" if adapter else f"; no {adapter_name} adapter configured"
            return d.evolve(outcome="dry_run", reason=(d.reason + note).lstrip("; "), completed_ms=d.requested_ms), target
        return d.evolve(outcome="started"), target

    def _choose_action(self, rule: Rule, adapter: Adapter | None) -> tuple[str, bool, str]:
        # Reversible before irreversible: disable wherever the provider can, whatever the rule says.
        if adapter is None or adapter.supports_disable:
            why = f"rule {rule.name}" + ("; disable instead of delete (reversible first)" if rule.action == "delete" else "")
            return "disable", True, why
        if adapter.supports_delete:
            return "delete", False, f"rule {rule.name}; {adapter.name} can only delete (irreversible)"
        return "none", True, f"rule {rule.name}; {adapter.name} cannot revoke keys"

    def _approval_reason(self, rule: Rule, d: Decision, provider: str, key: str, project: str | None) -> str:
        if self.policy.is_protected(provider, key, project):
            return "protected key: never revoked automatically"
        if rule.require_approval:
            return f"rule {rule.name} requires approval"
        if not d.reversible and not rule.allow_irreversible:
            return f"{d.action} is irreversible; rule {rule.name} does not allow it automatically"
        return ""

    async def execute(self, d: Decision, target: Target, verb: str | None = None) -> Decision:
        """Audit `started`, call the adapter, audit the result. Nothing is called unaudited."""
        _, adapter = self.adapter_for(d.provider)
        try:
            started = self.store.write(d.evolve(outcome="started", completed_ms=None))
        except Exception as exc:  # noqa: BLE001 - no audit row, no call
            log.error("revocation %s not attempted: cannot write the audit row (%s)", d.decision_id, type(exc).__name__)
            self._count("failed")
            return d.evolve(outcome="failed", error=f"audit write failed: {type(exc).__name__}")
        t0 = time.perf_counter()
        if adapter is None:
            res = CallResult(ok=False, attempts=0, error=f"no {d.adapter} adapter configured (credentials missing?)")
        else:
            res = await getattr(adapter, verb or d.action)(target, d.decision_id)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        reason = d.reason + ("; already gone at the provider (404)" if res.already_done else "")
        final = started.evolve(
            outcome="executed" if res.ok else "failed", status_code=res.status_code, request_id=res.request_id,
            error=res.error, attempts=res.attempts, completed_ms=self._now_ms(), duration_ms=ms, reason=reason,
            # A failure stays approvable (a retry by a person) until the approval TTL runs out.
            expires_ms=None if res.ok else self._now_ms() + int(self.approval_ttl_s * 1000),
        )
        return self._record(final)

    def _record(self, d: Decision) -> Decision:
        stored = self.store.write(d)
        self._count(d.outcome)
        level = logging.WARNING if d.outcome in ("failed", "pending_approval", "circuit_open", "rate_limited") else logging.INFO
        log.log(level, "revocation %s %s %s key=%s project=%s action=%s actor=%s status=%s %s%s",
                d.decision_id, d.outcome, d.provider, d.key_id, d.project or "-", d.action, d.actor,
                d.status_code or "-", d.reason, f" error={d.error}" if d.error else "")
        return stored

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.revocations.labels(outcome).inc()

    async def _notify(self, decisions: list[Decision]) -> None:
        records = [approval_alert(d) for d in decisions]
        for hook in self.notify:
            try:
                res = hook(records)
                if asyncio.iscoroutine(res):
                    await res
            except Exception:  # noqa: BLE001 - a broken channel must not block revocation
                log.exception("revocation approval notification failed")

    def expire_due(self, force: bool = False) -> list[Decision]:
        """Expire approvals past their TTL (at most once a minute unless forced)."""
        now = self.clock()
        if not force and now - self._last_expire < 60:
            return []
        self._last_expire = now
        return expire_pending(self.store, self._now_ms(), actor="policy")


def expire_pending(store: RevocationStore, now_ms: int, actor: str) -> list[Decision]:
    out = []
    for d in store.list(APPROVABLE, limit=10_000):
        if d.expires_ms is not None and d.expires_ms <= now_ms:
            out.append(store.write(d.evolve(outcome="expired", completed_ms=now_ms, reason=d.reason + "; approval expired")))
            log.warning("revocation %s expired without approval (%s key=%s)", d.decision_id, d.provider, d.key_id)
    return out


def approval_alert(d: Decision) -> Alert:
    """An alert-shaped record of a decision waiting for a human, for the alert channels."""
    from keywatch.models.events import format_ts

    return Alert(
        alert_id="kw_" + d.decision_id, kind="revocation_approval", provider=d.provider, key_id=d.key_id,
        project=d.project or None, started_at=format_ts(d.requested_ms), detected_at=format_ts(d.requested_ms),
        severity=d.severity if d.severity in ("high", "critical") else "high", score=d.score,
        reasons=[f"{d.action} of key {d.key_id} needs approval ({d.outcome}): {d.reason}",
                 f"approve: keywatch revoke approve {d.decision_id}", f"reject: keywatch revoke reject {d.decision_id}"],
        cost_impact_usd=0.0, started_at_ms=d.requested_ms, detected_at_ms=d.requested_ms, updated_at_ms=d.requested_ms,
        updated_at=format_ts(d.requested_ms),
        details={"decision_id": d.decision_id, "alert_id": d.alert_id, "action": d.action, "outcome": d.outcome,
                 "expires_at": format_ts(d.expires_ms) if d.expires_ms else None},
    )
