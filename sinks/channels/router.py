"""Which alert goes where, and when not to send it again.

`Ledger` remembers, per (route, channel, alert_id), the highest severity delivered: an alert is
sent when first seen, again only when its severity rises (never for a mere score or reason
update), and once more when it resolves (for channels that send resolves). `RateLimit` caps
deliveries per route in a sliding window. Both live in memory, bounded.

>>> led = Ledger()
>>> led.decide(("soc", "pd", "kw_1"), "high", "open"), led.decide(("soc", "pd", "kw_1"), "high", "open")
('trigger', None)
>>> led.decide(("soc", "pd", "kw_1"), "critical", "open"), led.decide(("soc", "pd", "kw_1"), "high", "resolved")
('update', 'resolve')
>>> led.decide(("soc", "pd", "kw_2"), "high", "resolved") is None   # never triggered: nothing to resolve
True
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from keywatch.models.alerts import SEVERITIES
from keywatch.sinks.channels.config import ChannelsConfig, Route

_RESOLVED = 99


class Ledger:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._sent: OrderedDict[tuple, int] = OrderedDict()

    def decide(self, key: tuple, severity: str, status: str) -> str | None:
        """Reserve and return the event to send (`trigger`/`update`/`resolve`), or None."""
        prev = self._sent.get(key)
        if status == "resolved":
            if prev is None or prev == _RESOLVED:
                return None
            self._set(key, _RESOLVED)
            return "resolve"
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        if prev is None:
            self._set(key, rank)
            return "trigger"
        if prev != _RESOLVED and rank > prev:
            self._set(key, rank)
            return "update"
        return None

    def rollback(self, key: tuple, severity: str | None) -> None:
        """Undo a reservation whose delivery failed (the next rise or resolve may try again)."""
        if severity is None:
            self._sent.pop(key, None)
        else:
            self._set(key, SEVERITIES.index(severity))

    def previous(self, key: tuple) -> str | None:
        v = self._sent.get(key)
        return SEVERITIES[v] if v is not None and v != _RESOLVED else None

    def _set(self, key: tuple, value: int) -> None:
        self._sent[key] = value
        self._sent.move_to_end(key)
        while len(self._sent) > self.capacity:
            self._sent.popitem(last=False)


class RateLimit:
    """At most `max` deliveries per `per_s` seconds (sliding window)."""

    def __init__(self, max_n: int, per_s: float, clock=time.monotonic) -> None:
        self.max_n, self.per_s, self.clock = max_n, per_s, clock
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        now = self.clock()
        while self._times and now - self._times[0] >= self.per_s:
            self._times.popleft()
        if len(self._times) >= self.max_n:
            return False
        self._times.append(now)
        return True


def match_routes(config: ChannelsConfig, alert: dict[str, Any]) -> list[Route]:
    """The routes an alert goes to, in file order (`stop: true` ends the search)."""
    out = []
    for route in config.routes:
        if route.matches(str(alert.get("kind")), str(alert.get("severity")), str(alert.get("provider")), alert.get("project")):
            out.append(route)
            if route.stop:
                break
    return out
