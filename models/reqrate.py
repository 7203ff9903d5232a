"""Request counts beside the spend series: how many calls a spike is made of, vs the busiest hour.

A runaway loop on a cheap model is tiny in dollars but enormous in calls, and a key whose calls
mix a cheap and an expensive model has spend minutes so heavy-tailed that dollars alone cannot
tell a loop from a normal busy minute. `RequestRates` keeps, per series row (numpy, 3 floats):
the requests of the current above-band run, this hour's requests, and a slowly decaying peak of
the hourly request rate (what the busiest hour usually looks like). Rows that do not learn (an
incident is open) do not move their peak, so a loop never becomes its own baseline.

>>> import numpy as np
>>> rq = RequestRates()
>>> for t in range(120):                       # two hours at 2 requests/minute
...     rq.add(0, 2); _ = rq.step(t, 1, np.array([False]), np.array([True]))
>>> round(float(rq.peak[0]), 2)
2.0
>>> for t in range(120, 123):                   # then a loop at 40 requests/minute
...     rq.add(0, 40); _ = rq.step(t, 1, np.array([True]), np.array([False]))
>>> float(rq.run[0]), round(float(rq.peak[0]), 2)
(120.0, 2.0)
"""

from __future__ import annotations

import numpy as np

PEAK_DECAY = 0.995  # per hour: the busiest hour is remembered for about a week


class RequestRates:
    # True while no request was ever counted: every total is then +0.0 and stays so, and a
    # `step` would change nothing (the detector skips it: a global core has no key rows, so
    # never any requests).
    idle = False

    def __init__(self, capacity: int = 16) -> None:
        self.idle = True
        self.cur: dict[int, float] = {}
        self.peak = np.zeros(capacity)
        self.hour = np.zeros(capacity)
        self.run = np.zeros(capacity)

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        if "idle" not in st:  # snapshots from before the flag: idle if every total is zero
            self.idle = not (self.cur or self.peak.any() or self.hour.any() or self.run.any())

    def add(self, r: int, n: int) -> None:
        self.cur[r] = self.cur.get(r, 0.0) + n

    def reset(self, r: int) -> None:
        """A new (or reused) series row starts from nothing."""
        self._grow(r + 1)
        self.peak[r] = self.hour[r] = self.run[r] = 0.0
        self.cur.pop(r, None)

    def _grow(self, n: int) -> None:
        if n > len(self.peak):
            cap = max(n, 2 * len(self.peak))
            for name in ("peak", "hour", "run"):
                old = getattr(self, name)
                new = np.zeros(cap)
                new[: len(old)] = old
                setattr(self, name, new)

    def step(self, t: int, n: int, on: np.ndarray, learn: np.ndarray | None) -> np.ndarray:
        """Close minute `t` for rows 0..n-1 (`on`: in an above-band run; `learn`: may learn,
        None: all). A minute without requests adds nothing: those adds are skipped."""
        self._grow(n)
        xq = None
        if self.cur:
            self.idle = False
            xq = np.zeros(n)
            xq[np.fromiter(self.cur.keys(), np.int64, len(self.cur))] = np.fromiter(self.cur.values(), np.float64, len(self.cur))
            self.cur = {}
        # Totals are sums of request counts from +0.0, never −0.0: adding a zero is the identity.
        self.run[:n] = np.where(on, self.run[:n] if xq is None else self.run[:n] + xq, 0.0)
        if xq is not None:
            self.hour[:n] += xq if learn is None else np.where(learn, xq, 0.0)
        if (t + 1) % 60 == 0:  # an hour ends: its rate feeds the (decaying) peak
            top = np.maximum(self.peak[:n] * PEAK_DECAY, self.hour[:n] / 60.0)
            self.peak[:n] = top if learn is None else np.where(learn, top, self.peak[:n])
            self.hour[:n] = 0.0
        return np.zeros(n) if xq is None else xq
