"""A small, self-contained spend simulator for the cost tests (independent of keywatch.simulate)."""

from __future__ import annotations

import math
import random

from keywatch.models.events import UsageEvent

DAY0 = 1795564800000  # 2026-11-25T00:00:00Z
MIN = 60_000


def steady(days: float, keys: int = 8, seed: int = 1, project: str = "p1", provider: str = "openai"):
    """One bucket event per key per minute; daily seasonality (peak mid-day) and gamma noise."""
    rnd = random.Random(seed)
    n = 0
    for m in range(int(days * 1440)):
        daily = 1.0 + 0.8 * math.sin(2 * math.pi * ((m % 1440) / 1440 - 0.25))
        for k in range(keys):
            cost = 0.02 * daily * (1 + k % 3) * rnd.gammavariate(4, 0.25)
            n += 1
            yield UsageEvent(event_id=f"s{seed}-{n}", ts=DAY0 + m * MIN + k * 1000, provider=provider, key_id=f"key{k}",
                             project=project, model="gpt-4o-mini" if k % 2 else "gpt-4o", region="us-east-1",
                             cost_usd=round(cost, 6), requests=3)
