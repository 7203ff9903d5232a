"""The `revocations` table (migration 0005): the audit trail and the approval queue.

A `Decision` is written at every state change with a higher `version` (ReplacingMergeTree):
`started` goes in *before* a provider is called, the final outcome after, so a crash mid-call
leaves a visible `started` row rather than nothing. Reads use `FINAL` for the current state.
Only key ids, never secrets, are ever stored (enforced by what `Decision` has, and tested).

Outcomes: started · executed · dry_run · skipped_by_policy · pending_approval · rate_limited ·
circuit_open · failed · rejected · expired · undone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

# Outcomes a human can still approve (within the TTL). Rate-limited and breaker-held decisions
# are approvable on purpose: a real attack during a tripped breaker still has a fast human path;
# approving a `failed` one retries it.
APPROVABLE = ("pending_approval", "rate_limited", "circuit_open", "failed")
FINAL_OUTCOMES = ("executed", "dry_run", "skipped_by_policy", "failed", "rejected", "expired", "undone")


@dataclass
class Decision:
    decision_id: str
    alert_id: str
    alert_kind: str
    severity: str
    score: float
    provider: str
    adapter: str
    key_id: str
    project: str
    action: str  # disable | delete | enable (undo) | none
    reversible: bool
    rule: str
    actor: str  # "policy" or the user who approved / rejected / undid
    dry_run: bool
    outcome: str
    reason: str = ""
    protected: bool = False
    request_id: str = ""
    status_code: int = 0
    error: str = ""
    attempts: int = 0
    undo_of: str = ""
    requested_ms: int = 0
    completed_ms: int | None = None
    expires_ms: int | None = None
    duration_ms: float = 0.0
    version: int = 0

    def evolve(self, **changes: Any) -> "Decision":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the HTTP API, the CLI and hook records)."""
        return asdict(self)


_COLUMNS = [
    "decision_id", "version", "alert_id", "alert_kind", "severity", "score", "provider", "adapter", "key_id",
    "project", "action", "reversible", "rule", "actor", "dry_run", "protected", "outcome", "reason",
    "request_id", "status_code", "error", "attempts", "undo_of", "requested_at", "completed_at", "expires_at",
    "duration_ms",
]
_TIME_COLUMNS = {"requested_at": "requested_ms", "completed_at": "completed_ms", "expires_at": "expires_ms"}


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _ms(v: datetime | None) -> int | None:
    if v is None:
        return None
    if v.tzinfo is None:  # chDB returns naive datetimes in UTC
        v = v.replace(tzinfo=timezone.utc)
    return int(round(v.timestamp() * 1000))


class RevocationStore:
    """Reads and writes decisions in `{db}.revocations`. Thread-safe version numbering."""

    def __init__(self, client, database: str) -> None:
        self.client = client
        self.table = f"{database}.revocations"
        self.audit_table = f"{database}.revocation_audit"  # append-only copy (migration 0010)
        self._lock = threading.Lock()
        self._last_version = 0

    def _next_version(self) -> int:
        # Wall-clock nanoseconds, strictly increasing in this process: across processes (CLI
        # and worker) the later write wins, which is what an operator expects.
        with self._lock:
            self._last_version = max(self._last_version + 1, time.time_ns())
            return self._last_version

    def write(self, d: Decision) -> Decision:
        """Insert the decision's current state as a new version; return it with that version."""
        d = d.evolve(version=self._next_version())
        row = []
        for c in _COLUMNS:
            if c in _TIME_COLUMNS:
                row.append(_dt(getattr(d, _TIME_COLUMNS[c])))
            elif c in ("reversible", "dry_run", "protected"):
                row.append(int(getattr(d, c)))
            else:
                row.append(getattr(d, c))
        self.client.insert(self.table, [row], column_names=_COLUMNS)
        return d

    def _select(self, where: str, params: dict[str, Any], limit: int = 1000, order: str = "requested_at DESC",
                source: str | None = None) -> list[Decision]:
        source = source or f"{self.table} FINAL"
        sql = f"SELECT {', '.join(_COLUMNS)} FROM {source} WHERE {where} ORDER BY {order} LIMIT {int(limit)}"
        rows = self.client.query(sql, parameters=params).result_rows
        names = {f.name for f in fields(Decision)}
        out = []
        for r in rows:
            rec = dict(zip(_COLUMNS, r))
            kw = {k: v for k, v in rec.items() if k in names}
            for col, attr in _TIME_COLUMNS.items():
                kw[attr] = _ms(rec[col])
            for b in ("reversible", "dry_run", "protected"):
                kw[b] = bool(kw[b])
            out.append(Decision(**kw))
        return out

    def get(self, decision_id: str) -> Decision | None:
        found = self._select("decision_id = {id:String}", {"id": decision_id}, limit=1)
        return found[0] if found else None

    def history(self, decision_id: str) -> list[Decision]:
        """Every state the decision went through (`started` before the provider call, then its
        outcome, approvals, undo), oldest first — from the append-only `revocation_audit`."""
        return self._select("decision_id = {id:String}", {"id": decision_id}, limit=10_000, order="version",
                            source=self.audit_table)

    def list(self, outcomes: tuple[str, ...] | None = None, *, since_ms: int | None = None, key_id: str | None = None,
             limit: int = 100) -> list[Decision]:
        """Current state of decisions, newest first, optionally filtered."""
        where, params = ["1"], {}
        if outcomes:
            where.append("outcome IN {outcomes:Array(String)}")
            params["outcomes"] = list(outcomes)
        if since_ms is not None:
            where.append("requested_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
            params["since"] = int(since_ms)
        if key_id is not None:
            where.append("key_id = {key:String}")
            params["key"] = key_id
        return self._select(" AND ".join(where), params, limit=limit)

    def recent(self, since_ms: int) -> list[Decision]:
        """Everything since `since_ms`, oldest first: what the engine's guards re-learn at start."""
        return self._select("requested_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')", {"since": int(since_ms)},
                            limit=100_000, order="requested_at ASC")
