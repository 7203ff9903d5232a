"""Alerts (contract §2) and the incident book that turns detector findings into alerts.

Detectors report `Finding`s. One incident (same kind and `incident_key`) keeps one alert: the
first finding opens it with a stable, deterministic `alert_id`; later findings update it (a
new `version`) only when the evidence materially grows, so a stream of findings never becomes
a stream of copies. An incident closes after `quiet_ms` of event time without findings.

>>> book = IncidentBook(quiet_ms=3_600_000)
>>> f = Finding(kind="key_theft", provider="openai", key_id="k1", project=None, ts_ms=1000,
...             started_at_ms=500, score=0.7, reasons=["new country"], cost_impact_usd=1.0)
>>> a = book.report(f); a.version, a.severity
(1, 'high')
>>> from dataclasses import replace
>>> book.report(replace(f, ts_ms=2000)) is None   # nothing new: no copy
True
>>> book.report(replace(f, ts_ms=3000, score=0.95)).version
2
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from keywatch.models.events import format_ts

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


def severity_for(score: float) -> Severity:
    """Default mapping from a [0, 1] score to a severity (detectors may set their own)."""
    if score >= 0.9:
        return "critical"
    if score >= 0.7:
        return "high"
    if score >= 0.4:
        return "medium"
    return "low"


@dataclass(slots=True)
class Finding:
    """What a detector saw at event time `ts_ms`; the book decides if it is a new alert."""

    kind: str
    provider: str
    key_id: str | None
    project: str | None
    ts_ms: int
    started_at_ms: int
    score: float
    reasons: list[str]
    cost_impact_usd: float = 0.0
    severity: Severity | None = None  # None: derived from score
    incident_key: str = ""  # distinguishes incidents of one kind on one key/project
    details: dict[str, Any] = field(default_factory=dict)  # root cause, signals, coverage …


class Alert(msgspec.Struct, kw_only=True):
    """One incident's alert. Contract fields first; the rest are keywatch extensions."""

    alert_id: str
    kind: str
    provider: str
    key_id: str | None
    project: str | None
    started_at: str
    detected_at: str
    severity: Severity
    score: float
    reasons: list[str]
    cost_impact_usd: float
    # --- extensions ---
    status: str = "open"  # open | acknowledged | resolved
    version: int = 1
    updated_at: str = ""
    started_at_ms: int = 0
    detected_at_ms: int = 0
    updated_at_ms: int = 0
    details: dict[str, Any] = {}

    def to_contract(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


_IES = re.compile(r"ies\b")
_PLURAL = re.compile(r"(?<=[A-Za-z])s\b")
_NUMBERS = re.compile(r"[$€]?[-+]?\d[\d,]*(?:\.\d+)?[%×]?")


def reason_shape(reason: str) -> str:
    """A reason with its numbers blanked: "spend $5.99 …" and "spend $6.10 …" are one kind of evidence.

    >>> reason_shape("spend $77.78 vs expected $0.01 (+543063%)") == reason_shape("spend $6 vs expected $1 (+500%)")
    True
    >>> reason_shape("12 requests from 3 new IPs") == reason_shape("1 request from 1 new IP")
    True
    """
    # "1 request from 1 new IP" and "12 requests from 3 new IPs" are the same evidence too: the
    # shape is a comparison key, never shown, so crude singulars are fine.
    return _PLURAL.sub("", _IES.sub("y", _NUMBERS.sub("#", reason)))


def merge_reasons(new: list[str], old: list[str], limit: int = 12) -> list[str]:
    """Latest wording of each kind of evidence, newest evidence first, bounded."""
    out: dict[str, str] = {}
    for r in list(new) + list(old):
        out.setdefault(reason_shape(r), r)
    return list(out.values())[:limit]


def alert_id_for(kind: str, provider: str, key_id: str | None, project: str | None, incident_key: str, opened_ms: int) -> str:
    """Deterministic: a replay of the same input gives the same ids (no duplicate rows)."""
    raw = f"{kind}|{provider}|{key_id or ''}|{project or ''}|{incident_key}|{opened_ms}"
    return "kw_" + hashlib.sha256(raw.encode()).hexdigest()[:20]


class IncidentBook:
    """Open incidents by (kind, provider, key or project, incident_key). Picklable."""

    def __init__(self, quiet_ms: int = 3_600_000, min_score_step: float = 0.05, min_cost_growth: float = 0.5) -> None:
        self.quiet_ms = quiet_ms
        self.min_score_step = min_score_step
        self.min_cost_growth = min_cost_growth
        self.open: dict[tuple, Alert] = {}
        self.last_seen_ms: dict[tuple, int] = {}
        self.closed: list[Alert] = []  # closed inside `report`, handed out by the next `expire`

    def __setstate__(self, state: dict) -> None:  # snapshots from before `closed` existed
        self.__dict__.update(state)
        self.__dict__.setdefault("closed", [])

    @staticmethod
    def _key(kind: str, provider: str, key_id: str | None, project: str | None, incident_key: str) -> tuple:
        return (kind, provider, key_id if key_id is not None else f"project:{project}", incident_key)

    def is_open(self, kind: str, provider: str, key_id: str | None, project: str | None = None, incident_key: str = "",
                at_ms: int | None = None) -> bool:
        """Open now; with `at_ms`, open at that event time (not yet quiet for `quiet_ms`), so a
        detector asking mid-batch gets the answer it would get from any other batch cut."""
        k = self._key(kind, provider, key_id, project, incident_key)
        if k not in self.open:
            return False
        return at_ms is None or at_ms - self.last_seen_ms.get(k, at_ms) < self.quiet_ms

    def open_keys_at(self, at_ms: int) -> list[tuple]:
        """Keys of the incidents open at event time `at_ms`, whatever the batch holds after it:
        opened at or before `at_ms` and not quiet by then, including those that a later finding
        in this batch already closed (still in `closed`). One alert's findings are never
        `quiet_ms` apart, so "last finding + quiet_ms" bounds its open time."""
        q = self.quiet_ms
        out = [k for k, a in self.open.items()
               if a.detected_at_ms <= at_ms and at_ms - self.last_seen_ms.get(k, at_ms) < q]
        for a in self.closed:
            if a.detected_at_ms <= at_ms < a.updated_at_ms:
                out.append(self._key(a.kind, a.provider, a.key_id, a.project, ""))
        return out

    def open_for_key(self, provider: str, key_id: str) -> list[Alert]:
        return [a for k, a in self.open.items() if k[1] == provider and k[2] == key_id]

    def report(self, f: Finding) -> Alert | None:
        """Record a finding; return the alert when it is new or materially updated."""
        k = self._key(f.kind, f.provider, f.key_id, f.project, f.incident_key)
        score = min(1.0, max(0.0, float(f.score)))
        sev = f.severity or severity_for(score)
        cur = self.open.get(k)
        if cur is not None and f.ts_ms - self.last_seen_ms.get(k, f.ts_ms) >= self.quiet_ms:
            # The incident went quiet before this finding: close it here, in event time, so the
            # outcome does not depend on where batch boundaries fall.
            self.closed.append(self._resolve(self.open.pop(k), self.last_seen_ms[k] + self.quiet_ms))
            cur = None
        self.last_seen_ms[k] = max(self.last_seen_ms.get(k, f.ts_ms), f.ts_ms)
        if cur is None:
            alert = Alert(
                alert_id=alert_id_for(f.kind, f.provider, f.key_id, f.project, f.incident_key, f.ts_ms),
                kind=f.kind, provider=f.provider, key_id=f.key_id, project=f.project,
                started_at=format_ts(min(f.started_at_ms, f.ts_ms)), detected_at=format_ts(f.ts_ms),
                severity=sev, score=round(score, 4), reasons=list(f.reasons),
                cost_impact_usd=round(max(0.0, f.cost_impact_usd), 4),
                updated_at=format_ts(f.ts_ms), started_at_ms=min(f.started_at_ms, f.ts_ms),
                detected_at_ms=f.ts_ms, updated_at_ms=f.ts_ms, details=dict(f.details),
            )
            self.open[k] = alert
            return alert
        grew = (
            SEVERITIES.index(sev) > SEVERITIES.index(cur.severity)
            or score >= cur.score + self.min_score_step
            or (f.cost_impact_usd > cur.cost_impact_usd * (1 + self.min_cost_growth) and f.cost_impact_usd - cur.cost_impact_usd >= 1.0)
            # New *kinds* of evidence count; the same evidence with new numbers does not.
            or bool({reason_shape(r) for r in f.reasons[:3]} - {reason_shape(r) for r in cur.reasons})
        )
        if not grew:
            return None
        merged = merge_reasons(f.reasons, cur.reasons)
        worst = sev if SEVERITIES.index(sev) > SEVERITIES.index(cur.severity) else cur.severity
        updated = msgspec.structs.replace(
            cur, severity=worst, score=round(max(score, cur.score), 4), reasons=merged,
            cost_impact_usd=round(max(cur.cost_impact_usd, f.cost_impact_usd), 4),
            started_at_ms=min(cur.started_at_ms, f.started_at_ms),
            started_at=format_ts(min(cur.started_at_ms, f.started_at_ms)),
            version=cur.version + 1, updated_at=format_ts(f.ts_ms), updated_at_ms=f.ts_ms,
            details={**cur.details, **f.details},
        )
        self.open[k] = updated
        return updated

    @staticmethod
    def _resolve(alert: Alert, at_ms: int) -> Alert:
        return msgspec.structs.replace(alert, status="resolved", version=alert.version + 1,
                                       updated_at=format_ts(at_ms), updated_at_ms=at_ms)

    def expire(self, now_ms: int) -> list[Alert]:
        """Close incidents quiet for `quiet_ms`; return them (and any closed by `report`) resolved."""
        closed, self.closed = self.closed, []
        for k in [k for k, t in self.last_seen_ms.items() if now_ms - t >= self.quiet_ms]:
            alert = self.open.pop(k, None)
            t = self.last_seen_ms.pop(k)
            if alert is not None and alert.status != "resolved":
                closed.append(self._resolve(alert, t + self.quiet_ms))
        return closed

    def set_status(self, alert_id: str, status: str, now_ms: int) -> Alert | None:
        for k, a in self.open.items():
            if a.alert_id == alert_id:
                self.open[k] = msgspec.structs.replace(a, status=status, version=a.version + 1, updated_at=format_ts(now_ms), updated_at_ms=now_ms)
                return self.open[k]
        return None
