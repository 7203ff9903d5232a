"""Safety state of automatic revocation: idempotency, cool-down, rate limits, circuit breaker.

Poisoned or broken telemetry must not be able to revoke every key. So, beyond the policy's
rules: one decision per key per incident (decision ids are deterministic, and remembered);
after an action on a key, none on it for `cooldown_s`; at most N automatic actions an hour,
globally and per project; and a circuit breaker that halts *all* automation for
`breaker_open_s` once too many actions, or too many distinct flagged keys, fall in a short
window. Human approvals bypass limits and breaker (a person decided), never idempotency.

State is in memory and re-learnt from the `revocations` table at start (`seed`), so a restart
neither forgets a tripped breaker nor re-revokes a key. Times are wall-clock seconds: limits
are about real calls to real providers, whatever the event time of the alerts.

>>> from keywatch.sinks.revocation.policy import Policy
>>> g = Guard(Policy(max_actions_per_hour=2, breaker_max_actions=10), clock=lambda: 1000.0)
>>> verdicts = []
>>> for i in range(3):
...     verdicts.append(g.check("p", f"k{i}")[0])
...     g.record_action("p", "openai", f"k{i}")
>>> verdicts
[None, None, 'rate_limited']
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable

from keywatch.sinks.revocation.policy import Policy

HOUR = 3600.0
ACTION_OUTCOMES = ("started", "executed", "dry_run", "failed")  # automatic calls made (or simulated)


class Guard:
    def __init__(self, policy: Policy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.actions: deque[tuple[float, str, str]] = deque()  # (t, project, key) of automatic actions
        self.flagged: deque[tuple[float, str]] = deque()  # (t, provider:key) with an actionable alert
        self.last_on_key: dict[str, float] = {}  # provider:key → time of its last action or approval request
        self.decided: dict[str, float] = {}  # decision id → time (idempotency)
        self.open_until = 0.0
        self.open_reason = ""

    # --- idempotency and cool-down ---------------------------------------------------------
    def seen(self, decision_id: str) -> bool:
        return decision_id in self.decided

    def mark(self, decision_id: str) -> None:
        self.decided[decision_id] = self.clock()

    def cooling_down(self, provider: str, key_id: str) -> float:
        """Seconds of cool-down left on this key (0 when none)."""
        last = self.last_on_key.get(f"{provider}:{key_id}")
        return 0.0 if last is None else max(0.0, last + self.policy.cooldown_s - self.clock())

    def touch_key(self, provider: str, key_id: str, at: float | None = None) -> None:
        k = f"{provider}:{key_id}"
        t = self.clock() if at is None else at
        self.last_on_key[k] = max(t, self.last_on_key.get(k, t))

    # --- rate limits and breaker -----------------------------------------------------------
    def flag(self, provider: str, key_id: str, at: float | None = None) -> None:
        """Note an actionable alert on a key (protected or not): the breaker counts these."""
        self.flagged.append((self.clock() if at is None else at, f"{provider}:{key_id}"))

    def record_action(self, project: str, provider: str, key_id: str, at: float | None = None) -> None:
        t = self.clock() if at is None else at
        self.actions.append((t, project, f"{provider}:{key_id}"))
        self.touch_key(provider, key_id, t)

    def trip(self, reason: str, at: float | None = None) -> None:
        self.open_until = (self.clock() if at is None else at) + self.policy.breaker_open_s
        self.open_reason = reason

    def check(self, project: str, key_id: str) -> tuple[str | None, str]:
        """May one more automatic action run now? (None, "") or (outcome, reason)."""
        now = self.clock()
        self._prune(now)
        p = self.policy
        if now < self.open_until:
            return "circuit_open", f"circuit breaker open until {time.strftime('%H:%M:%SZ', time.gmtime(self.open_until))}: {self.open_reason}"
        window = now - p.breaker_window_s
        recent = sum(1 for t, _, _ in self.actions if t >= window)
        keys = len({k for t, k in self.flagged if t >= window})
        if recent >= p.breaker_max_actions:
            self.trip(f"tripped: {recent} automatic actions in {p.breaker_window_s:g} s (limit {p.breaker_max_actions})")
            return "circuit_open", self.open_reason
        if keys > p.breaker_max_keys:
            self.trip(f"tripped: {keys} distinct keys flagged in {p.breaker_window_s:g} s (limit {p.breaker_max_keys})")
            return "circuit_open", self.open_reason
        hour = now - HOUR
        if sum(1 for t, _, _ in self.actions if t >= hour) >= p.max_actions_per_hour:
            return "rate_limited", f"at most {p.max_actions_per_hour} automatic actions per hour (all projects)"
        if sum(1 for t, proj, _ in self.actions if t >= hour and proj == project) >= p.max_actions_per_project_per_hour:
            return "rate_limited", f"at most {p.max_actions_per_project_per_hour} automatic actions per hour in project {project or '(none)'}"
        return None, ""

    def _prune(self, now: float) -> None:
        horizon = now - max(HOUR, self.policy.breaker_window_s)
        while self.actions and self.actions[0][0] < horizon:
            self.actions.popleft()
        while self.flagged and self.flagged[0][0] < horizon:
            self.flagged.popleft()
        if len(self.decided) > 100_000:  # ids older than a week: their incidents are long closed
            old = now - 7 * 86400
            self.decided = {k: t for k, t in self.decided.items() if t >= old}

    # --- restart ---------------------------------------------------------------------------
    def horizon_s(self) -> float:
        p = self.policy
        return max(HOUR, p.breaker_window_s, p.cooldown_s, p.breaker_open_s, 7 * 86400)

    def seed(self, decisions: Iterable) -> None:
        """Re-learn from stored decisions (oldest first) so a restart changes nothing."""
        for d in decisions:
            t = d.requested_ms / 1000
            self.decided[d.decision_id] = t
            if d.actor != "policy" or d.undo_of:
                continue
            if d.action != "none" and d.outcome != "skipped_by_policy":
                self.flag(d.provider, d.key_id, t)
            if d.outcome in ACTION_OUTCOMES:
                self.record_action(d.project, d.provider, d.key_id, t)
            elif d.outcome in ("pending_approval", "rate_limited", "circuit_open", "executed"):
                self.touch_key(d.provider, d.key_id, t)
            if d.outcome == "circuit_open" and d.reason.startswith("tripped") and t + self.policy.breaker_open_s > self.open_until:
                self.open_until, self.open_reason = t + self.policy.breaker_open_s, d.reason
