"""Telemetry health: dead-letter floods and silent streams raise alerts; normal noise does not."""

from __future__ import annotations

from keywatch.models.core import DetectionCore
from keywatch.models.events import AuditEvent, UsageEvent
from keywatch.models.health import TelemetryHealthDetector

T0 = 1795622400000


def usage(i: int, ts: int, provider="bedrock", source=None) -> UsageEvent:
    return UsageEvent(event_id=f"{provider}{i}", ts=ts, provider=provider, key_id="k", model="m", source=source)


def test_dead_letter_flood_raises_one_alert_and_a_trickle_does_not():
    core = DetectionCore([TelemetryHealthDetector(flood_min_rejected=100, flood_ratio=0.25)])
    alerts = []
    for b in range(20):  # a trickle: 1 bad message per 100 good ones
        alerts += core.process([usage(b * 100 + i, T0 + b * 1000 + i) for i in range(100)], rejected={"validation": 1}).alerts
    assert alerts == []
    for b in range(20, 30):  # a flood: half the input is junk
        alerts += core.process([usage(b * 100 + i, T0 + b * 1000 + i) for i in range(100)], rejected={"not_json": 100}).alerts
    flood = [a for a in alerts if a.kind == "dead_letter_flood"]
    assert len({a.alert_id for a in flood}) == 1
    assert "not_json" in flood[0].reasons[0] and flood[0].severity in ("medium", "high")


def test_silent_stream_after_logging_tamper_is_a_high_telemetry_gap():
    core = DetectionCore([TelemetryHealthDetector(settle_events=100, settle_span_ms=3_600_000, gap_min_ms=20 * 60_000)])
    minute = 60_000
    # three hours of steady bedrock and openai usage, one event a minute each
    evs = [usage(i, T0 + i * minute) for i in range(180)] + [usage(i, T0 + i * minute, "openai") for i in range(180)]
    assert [a for a in core.process(evs).alerts if a.kind == "telemetry_gap"] == []
    t = T0 + 180 * minute
    tamper = AuditEvent(event_id="a1", ts=t, provider="bedrock", action="DeleteModelInvocationLoggingConfiguration")
    core.process([tamper])
    # only openai keeps reporting for 40 minutes
    alerts = []
    for j in range(40):
        alerts += core.process([usage(1000 + j, t + j * minute, "openai")]).alerts
    gaps = [a for a in alerts if a.kind == "telemetry_gap"]
    assert [(a.provider, a.severity) for a in gaps] == [("bedrock", "high")]
    assert "logging" in " ".join(gaps[0].reasons)


def test_quiet_nights_of_a_diurnal_stream_are_not_gaps():
    core = DetectionCore([TelemetryHealthDetector()])  # defaults: judged after a day of history
    minute, hour = 60_000, 3_600_000
    alerts, i = [], 0
    for day in range(4):
        for m in range(0, 24 * 60, 2):
            if 1 <= m // 60 < 6:  # nobody calls bedrock between 01:00 and 06:00
                continue
            ts = T0 + day * 24 * hour + m * minute
            alerts += core.process([usage(i, ts), usage(i, ts, "openai")]).alerts
            i += 1
        # openai keeps a trickle going at night, so the clock moves
        for m in range(60, 6 * 60, 10):
            alerts += core.process([usage(10**6 + i, T0 + day * 24 * hour + m * minute, "openai")]).alerts
            i += 1
    assert [a for a in alerts if a.kind == "telemetry_gap"] == []
