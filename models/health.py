"""Telemetry health: a dead-letter flood, or a telemetry stream that goes silent.

Both are attack signals as much as operations problems: an attacker who can write to the input
topic can flood it with junk to hide in the noise, and one who deletes the model-invocation
logging configuration makes a provider's usage stream stop. Neither may pass silently.

- `dead_letter_flood`: over a sliding window of event time, at least `flood_min_rejected`
  messages rejected and a rejected share of at least `flood_ratio`.
- `telemetry_gap`: a (provider, source) stream that had settled into a steady rate falls
  silent for longer than `max(gap_min_ms, gap_factor × its mean inter-arrival time, 1.5 × the
  longest gap it has shown before)` while other streams keep the clock moving. The longest
  earlier gap makes quiet nights of a diurnal stream normal; `settle_span_ms` (a day) makes
  sure one night has been seen before the stream is judged. Severity rises to high when the provider's logging
  configuration was deleted shortly before.

>>> from keywatch.models.core import DetectionCore
>>> core = DetectionCore([TelemetryHealthDetector(flood_min_rejected=10)])
>>> out = core.process([], rejected={"not_json": 50})
>>> [a.kind for a in out.alerts]
['dead_letter_flood']
"""

from __future__ import annotations

from collections import deque

from keywatch.models.alerts import Finding
from keywatch.models.core import Batch, Context

LOGGING_TAMPER = {"DeleteModelInvocationLoggingConfiguration", "PutModelInvocationLoggingConfiguration"}


class _Stream:
    __slots__ = ("first_ts", "last_ts", "count", "alerted", "max_gap")

    def __init__(self, ts: int) -> None:
        self.first_ts = self.last_ts = ts
        self.count = 0
        self.alerted = False
        self.max_gap = 0


class TelemetryHealthDetector:
    name = "telemetry_health"

    def __init__(
        self,
        flood_ratio: float = 0.25,
        flood_min_rejected: int = 500,
        window_ms: int = 10 * 60_000,
        gap_min_ms: int = 30 * 60_000,
        gap_factor: float = 30.0,
        settle_events: int = 200,
        settle_span_ms: int = 24 * 3_600_000,
    ) -> None:
        self.flood_ratio = flood_ratio
        self.flood_min_rejected = flood_min_rejected
        self.window_ms = window_ms
        self.gap_min_ms = gap_min_ms
        self.gap_factor = gap_factor
        self.settle_events = settle_events
        self.settle_span_ms = settle_span_ms
        self._window: deque[tuple[int, int, int, dict[str, int]]] = deque()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._tamper_ms: dict[str, int] = {}

    def process(self, batch: Batch, ctx: Context) -> None:
        # Walk the batch in event time and look for silent streams at each minute boundary, so
        # the result does not depend on where batches are cut.
        self._flood(batch, ctx, ctx.watermark_ms)
        for e in batch.audit:
            if e.action in LOGGING_TAMPER and e.error_code is None:
                self._tamper_ms[e.provider] = e.ts_ms
        streams = self._streams
        next_check = -(1 << 62)  # before any event time: the first event checks
        for e in batch.usage:
            ts = e.ts_ms
            if ts >= next_check:
                self._gaps(ctx, ts)
                next_check = (ts // 60_000 + 1) * 60_000
            k = (e.provider, e.source or "usage")
            s = streams.get(k)
            if s is None:
                s = streams[k] = _Stream(ts)
            gap = ts - s.last_ts
            if gap > 0:
                if gap > s.max_gap:
                    s.max_gap = gap
                s.last_ts = ts
            s.count += 1
            s.alerted = False
        self._gaps(ctx, ctx.watermark_ms)

    def _flood(self, batch: Batch, ctx: Context, now: int) -> None:
        accepted = len(batch.usage) + len(batch.audit) + len(batch.billing)
        rejected = sum(batch.rejected.values())
        if accepted or rejected:
            self._window.append((now, accepted, rejected, batch.rejected))
        while self._window and now - self._window[0][0] > self.window_ms:
            self._window.popleft()
        rej = sum(w[2] for w in self._window)
        total = rej + sum(w[1] for w in self._window)
        if rej < self.flood_min_rejected or rej < self.flood_ratio * total:
            return
        reasons: dict[str, int] = {}
        for w in self._window:
            for r, n in w[3].items():
                reasons[r] = reasons.get(r, 0) + n
        top = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
        ratio = rej / total
        ctx.report(Finding(
            kind="dead_letter_flood", provider="keywatch", key_id=None, project=None, ts_ms=now,
            started_at_ms=next(w[0] for w in self._window if w[2]), score=min(1.0, 0.5 + ratio / 2),
            reasons=[f"{rej} of {total} messages rejected in {self.window_ms // 60_000} min ({ratio:.0%}): {top}"],
            severity="high" if ratio >= 0.5 else "medium", details={"rejected_by_reason": reasons},
        ))

    def _gaps(self, ctx: Context, now: int) -> None:
        for (provider, source), s in self._streams.items():
            span = s.last_ts - s.first_ts
            if s.alerted or s.count < self.settle_events or span < self.settle_span_ms:
                continue
            mean_gap = span / s.count
            silent = now - s.last_ts
            if silent < max(self.gap_min_ms, self.gap_factor * mean_gap, 1.5 * s.max_gap):
                continue
            tamper = self._tamper_ms.get(provider)
            tampered = tamper is not None and s.last_ts - 3_600_000 <= tamper <= now
            reasons = [f"no {source} telemetry from {provider} for {silent / 60_000:.0f} min "
                       f"(usually one every {mean_gap / 1000:.0f} s)"]
            if tampered:
                reasons.append("model-invocation logging configuration was changed just before")
            s.alerted = True
            ctx.report(Finding(
                kind="telemetry_gap", provider=provider, key_id=None, project=None, ts_ms=now,
                started_at_ms=s.last_ts, score=0.85 if tampered else 0.5, reasons=reasons,
                severity="high" if tampered else "medium", incident_key=source,
            ))
