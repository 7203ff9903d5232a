"""Helpers shared by the channel tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

from keywatch.models.alerts import Alert


def make_alert(alert_id="kw_a1", kind="key_theft", severity="high", status="open", version=1, **kw) -> Alert:
    base = dict(
        alert_id=alert_id, kind=kind, provider="openai", key_id="key_abc123", project="search",
        started_at="2026-11-25T15:50:00.000Z", detected_at="2026-11-25T16:00:00.000Z", severity=severity,
        score=0.8, reasons=["12 requests from 5 new IPs in 3 new countries"], cost_impact_usd=42.5,
        status=status, version=version, started_at_ms=1795621800000, detected_at_ms=1795622400000,
        updated_at_ms=1795622400000,
    )
    base.update(kw)
    return Alert(**base)
