"""Probation for networks a key's baseline accepted from evidence: low trust until earned.

A new network that raised no alert for an hour joins the key's baseline (evidence acceptance,
`ACCEPT_MS`): that is how a developer's new office line stops being "new". It is also how an
attacker with a raised alert threshold gets their own network learned, by trickling a few quiet
requests a day, so that the later abuse from it looks like "the usual callers". So a network
accepted that way is known but LOW-TRUST: it stays on probation until it is at least
`PROBATION_MS` old *and* carried a meaningful share of the key's traffic (≥ `GOOD_SHARE`, ≥
`GOOD_MIN` requests) on `GOOD_DAYS` distinct days. Only `MAX_PER_DAY` networks are accepted per
key per day of event time (the rest stay quarantined and are new again next time). While a
network is on probation and has so far carried only a small share of the key's traffic (< `EST_MAX`
since its acceptance, as of the last full hour: a trickle), a surge carried by it is new-caller evidence
(see `keytheft_window`). A network that has carried most of the key's traffic since it was
accepted (the key moved) is still on probation, but its surges are the key's own.

Memory is bounded: at most `MAX_ENTRIES` networks, 22 bytes each in a snapshot; keys without
accepted networks carry none of this (`KeyState.prob is None`).

>>> from keywatch.models.keyids import KeyIds, tag
>>> p, known = Probation(), KeyIds()                # `known`: the key's identity sets
>>> t = 1_793_577_600_000
>>> sorted(p.admit([7, 8, 9], t, 1, 10))           # rate limit: two networks a day
[7, 8]
>>> for v in (7, 8): _ = known.add(tag("n16", v), t // 3_600_000)  # accepted: now in the key's /16s
>>> p.observe(t + 1, 7, 5, known), p.observe(t + 2, 3, 5, known), round(p.share(t + 2, 10.0), 2)
(True, False, 0.5)
>>> for d in range(1, 9): _ = p.observe(t + d * DAY_MS, 7, 30, known)     # 30 requests a day, all of them
>>> list(p.n16)                                    # 7 earned trust after 7 days; 8 carried nothing
[8]
"""

from __future__ import annotations

import math
from array import array

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PROBATION_MS = 7 * DAY_MS
GOOD_DAYS = 3
GOOD_SHARE = 0.1
GOOD_MIN = 10
MAX_PER_DAY = 2
MAX_ENTRIES = 8
EST_MAX = 30  # % of the key's traffic since acceptance below which a network is still a stranger
T10 = 600_000.0


class Probation:
    """Networks (/16, IPv6 /32) on probation for one key, in parallel arrays."""

    __slots__ = ("n16", "acc", "day_req", "good", "req", "off", "est", "all_req", "hour", "day", "day_tot", "lt", "lt_ts")
    _I = ("n16", "acc", "day_req", "req")

    def __init__(self) -> None:
        self.n16 = array("L")  # the network
        self.acc = array("L")  # accepted at (event-time hour)
        self.day_req = array("L")  # its requests on `day`
        self.good = array("B")  # distinct days it carried a meaningful share of the key's traffic
        self.req = array("L")  # its requests since acceptance
        self.off = array("q")  # `all_req` when it was accepted (less the evidence window's requests)
        self.est = array("B")  # % of the key's traffic it carried since acceptance, as of the last full hour
        self.hour = -1  # the event-time hour `est` was last updated at
        self.all_req = 0  # the key's requests counted here
        self.day = -1  # the event-time day counted in `day_req` / `day_tot`
        self.day_tot = 0  # the key's requests on `day`
        self.lt = 0.0  # requests from networks on probation, decayed with the key's 10-minute constant
        self.lt_ts = 0

    def __len__(self) -> int:
        return len(self.n16)

    def __getstate__(self):
        head = array("q", [self.day, self.day_tot, self.lt_ts, self.all_req, self.hour]).tobytes() + array("d", [self.lt]).tobytes()
        return head + b"".join(array("I", getattr(self, f)).tobytes() for f in self._I) + self.off.tobytes() + \
            self.good.tobytes() + self.est.tobytes()

    def __setstate__(self, state: bytes) -> None:
        self.day, self.day_tot, self.lt_ts, self.all_req, self.hour = array("q", state[:40])
        self.lt = array("d", state[40:48])[0]
        n = (len(state) - 48) // 26
        pos = 48
        for name in self._I:
            setattr(self, name, array("L", array("I", state[pos:pos + 4 * n]).tolist()))
            pos += 4 * n
        self.off = array("q", state[pos:pos + 8 * n])
        pos += 8 * n
        self.good, self.est = array("B", state[pos:pos + n]), array("B", state[pos + n:pos + 2 * n])

    def admit(self, nets, ts: int, novel_req: int, req: int) -> set[int]:
        """Put `nets` on probation as far as the daily limit and capacity allow; returns those admitted.
        `novel_req` of the evidence window's `req` requests came from new callers: their share so far."""
        today = ts // DAY_MS
        used = sum(1 for h in self.acc if h // 24 == today)
        out = set()
        for v in nets:
            if v in self.n16:
                out.add(v)
                continue
            if used >= MAX_PER_DAY or len(self.n16) >= MAX_ENTRIES:
                break
            self.n16.append(v)
            self.acc.append(ts // HOUR_MS)
            self.day_req.append(0)
            self.good.append(0)
            self.req.append(novel_req)
            self.off.append(self.all_req - req)
            self.est.append(min(100, round(100 * novel_req / req)) if req > 0 else 0)
            used += 1
            out.add(v)
        return out

    def observe(self, ts: int, n16: int, requests: int, key_ids) -> bool:
        """Count one call of the key (`n16` = -1 without network data); True if from a network on
        probation. `key_ids`: the key's identity sets (models/keyids.py), read once a day."""
        if ts // DAY_MS != self.day:
            if ts // DAY_MS > self.day:
                self._roll(ts, key_ids.values("n16"))
            else:  # late event from an earlier day: count it, not the day's share
                return n16 in self.n16
        if ts // HOUR_MS > self.hour:  # the share so far, without this hour's (a surge's) traffic
            self.hour = ts // HOUR_MS
            for i in range(len(self.n16)):
                base = self.all_req - self.off[i]
                if base > 0 and self.req[i] <= base:
                    self.est[i] = min(100, round(100 * self.req[i] / base))
        self.day_tot += requests
        self.all_req += requests
        try:
            i = self.n16.index(n16)
        except ValueError:
            return False
        self.day_req[i] += requests
        self.req[i] += requests
        if self.est[i] < EST_MAX:  # a stranger so far: its traffic is what `share` measures
            dt = ts - self.lt_ts
            self.lt = (self.lt * math.exp(-dt / T10) if dt > 0 else self.lt) + requests
            self.lt_ts = max(self.lt_ts, ts)
        return True

    def share(self, ts: int, c10: float) -> float:
        """Share of the key's recent (10-minute decayed) requests from networks on probation that
        have so far carried little of its traffic."""
        if c10 <= 0 or not self.lt:
            return 0.0
        dt = ts - self.lt_ts
        return min(1.0, (self.lt * math.exp(-dt / T10) if dt > 0 else self.lt) / c10)

    def age_days(self, ts: int) -> float:
        """Days since the most recent network on probation was accepted."""
        return (ts // HOUR_MS - max(self.acc, default=ts // HOUR_MS)) / 24.0

    def _roll(self, ts: int, known16: list[int]) -> None:
        # Close the counted day, then release networks that earned trust (or left the baseline).
        tot = self.day_tot
        for i in range(len(self.n16)):
            if self.day_req[i] >= max(GOOD_MIN, GOOD_SHARE * tot):
                self.good[i] = min(255, self.good[i] + 1)
            self.day_req[i] = 0
        self.day, self.day_tot = ts // DAY_MS, 0
        for i in reversed(range(len(self.n16))):
            earned = ts - self.acc[i] * HOUR_MS >= PROBATION_MS and self.good[i] >= GOOD_DAYS
            if earned or self.n16[i] not in known16:
                for a in (self.n16, self.acc, self.day_req, self.good, self.req, self.off, self.est):
                    del a[i]
