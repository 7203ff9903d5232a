"""`UnivariateAnomalyScorer`: the online single-series anomaly scorer behind cost spikes.

One series, one value per step, strictly online (score, then learn), O(1) work per row in plain
Python, bounded memory, picklable. It is what `keywatch eval nab` benchmarks; `CostSpikeDetector`
runs it on the project- and provider-level spend series as a `univariate_bank.UnivariateBank`
(all series in numpy at once, bit-identical values: keep the two in step).

Design (all features are scale-free: divided by running robust spreads):

1. Five surprise features per row: (1) distance from the long-run level / its mean absolute
   deviation; (2) size of the step from the previous value / the typical step; (3) distance from
   the time-of-day profile (48 half-hour bins) / that bin's deviation; (4) |log| ratio of the
   short-term step size to the long-run one (volatility change, flatlines); (5) a slower level
   shift (EWMA over ~20 rows vs the long-run level). Baselines learn winsorised values (6 spreads)
   so one spike does not inflate its own yardstick.
2. Calibration layer (`_Record`): each feature's log1p surprise is smoothed at two time scales
   (EWMA over ~5 and ~15 rows: sharp spikes and slower episodes); the calibrated evidence is how
   far a smoothed surprise exceeds its own maximum over the previous `memory` rows (a "new
   record": scale- and tail-free, so noisy series do not fire all the time), kept only when it
   is also ≥ `min_sigma` (3.2) σ above its running mean. The evidence is the max over the 10 records.
   The maximum is kept per block of `block` (32) rows: a monotone deque of (last row, max) per
   complete block, plus the current block's max so far. A block counts while any of its rows
   is in the window, so the window reaches back `memory` rows and up to `block` − 1 more, and a
   record holds at most ⌈memory / block⌉ + 1 entries: ≤ 19 KB a series, where one entry per
   row (until session 28) kept up to 600 KB while a smoothed surprise fell for days.
3. Refractory post-processing: after a detection, for `refractory` rows only evidence stronger
   than that detection's is reported (one alert per episode; NAB rewards the earliest detection
   in a window and charges for every later one).

The evidence e ≥ 0 (log units) is mapped to a score 1 − exp(−3e) ∈ [0, 1).

>>> import random
>>> rnd = random.Random(1)
>>> det = UnivariateAnomalyScorer()
>>> normal = [det.update(i * 300_000, 10 + rnd.gauss(0, 1)) for i in range(3000)]
>>> spike = det.update(3000 * 300_000, 40.0)
>>> round(spike, 2), round(max(normal[1000:]), 2), sum(s > 0 for s in normal[1000:])
(0.37, 0.0, 0)
>>> import pickle; type(pickle.loads(pickle.dumps(det))).__name__
'UnivariateAnomalyScorer'
"""

from __future__ import annotations

import math
from collections import deque

DAY_MS = 86_400_000
# Rows per block of the sliding-window maxima (see the module): the window holds at most
# ⌈memory / BLOCK⌉ + 1 entries per record, whatever the series.
BLOCK = 32


def block_size(block: int, memory: int) -> int:
    """The block length used with `memory`: at most half of it, so the newest complete block
    is always inside the window (`UnivariateBank` folds it in a block's time)."""
    return max(1, min(block, memory // 2))


class _Record:
    """Smoothed surprise → how far it beats its own max over the previous `memory` rows, kept
    per block of `block` rows (see the module)."""

    __slots__ = ("a_short", "memory", "warmup", "min_sigma", "short", "mu", "var", "n", "top", "block", "bmax")

    def __init__(self, short_n: float, memory: int, warmup: int, min_sigma: float, block: int = BLOCK) -> None:
        self.a_short, self.memory, self.warmup, self.min_sigma = 1.0 / short_n, memory, warmup, min_sigma
        self.short = self.mu = self.var = 0.0
        self.n = 0
        # (last row of a block, its max), values decreasing: the blocks' sliding-window maximum
        self.top: deque = deque()
        self.block = block
        self.bmax = -math.inf  # the max of the current block so far

    def __setstate__(self, state) -> None:  # pickles from before blocks: every entry its own row's
        slots = state[1] if isinstance(state, tuple) else state
        self.bmax = -math.inf
        for k, v in slots.items():
            setattr(self, k, v)
        if "block" not in slots:
            self.block = block_size(BLOCK, self.memory)

    def window_max(self, n: int) -> float:
        """The max over the blocks with a row in the window (−inf: none), older ones dropped."""
        top = self.top
        while top and top[0][0] <= n - self.memory:
            top.popleft()
        return max(top[0][1], self.bmax) if top else self.bmax

    def step(self, r: float) -> float:
        self.short += self.a_short * (r - self.short)
        s, n = self.short, self.n
        m = self.window_max(n)
        out = s - m if m > -math.inf and n > self.warmup else 0.0
        d = s - self.mu
        if out > 0 and d * d < self.min_sigma * self.min_sigma * self.var:
            out = 0.0  # a record within the usual spread is not evidence
        a = max(1.0 / (n + 1), 1.0 / self.memory)
        self.mu += a * d
        self.var += a * (d * d - self.var)
        self.push(n, s)
        self.n = n + 1
        return max(out, 0.0)

    def push(self, n: int, s: float) -> None:
        """Row n's value into the current block; at the block's last row, the block's max into
        the deque (entries it beats leave from the back)."""
        bmax = s if s > self.bmax else self.bmax
        if (n + 1) % self.block:
            self.bmax = bmax
            return
        top = self.top
        while top and top[-1][1] <= bmax:
            top.pop()
        top.append((n, bmax))
        self.bmax = -math.inf


class UnivariateAnomalyScorer:
    def __init__(self, a_level: float = 0.001, a_step: float = 0.01, short_n: float = 5.0, memory: int = 5000,
                 refractory: int = 120, warmup: int = 100, tod_bins: int = 48, a_tod: float = 0.05,
                 min_sigma: float = 3.2, long_n: float = 15.0, block: int = BLOCK) -> None:
        self.a_level, self.a_step, self.a_tod, self.refractory = a_level, a_step, a_tod, refractory
        block = block_size(block, memory)
        self.cal = [_Record(sn, memory, warmup, min_sigma, block) for sn in (short_n, long_n) for _ in range(5)]
        self.nb = tod_bins
        self.tod_mu, self.tod_dev, self.tod_n = [0.0] * tod_bins, [0.0] * tod_bins, [0] * tod_bins
        self.n = 0
        self.prev = self.mean = self.dev = self.step_dev = self.vol = 0.0
        self.slow: float | None = None
        self.last_peak, self.peak = -(10 ** 9), 0.0
        self.evidence = 0.0  # last evidence before the refractory filter (for callers that want it)

    def update(self, ts_ms: int, x: float, learn: bool = True) -> float:
        """Score (in [0, 1)) then learn one value. `learn=False` keeps the baselines frozen (an
        incident is open) while the calibration still advances."""
        n = self.n
        if n == 0:
            self.mean = self.prev = x
        m, s, ds = self.mean, self.dev, self.step_dev
        floor = 1e-3 * abs(m) + 1e-9  # flat series: a relative floor, so a 0.1 % wiggle is not news
        dx, dev = abs(x - self.prev), abs(x - m)
        z_level = dev / max(1.25 * s, floor)
        z_step = dx / max(1.25 * ds, floor)
        b = int((ts_ms % DAY_MS) * self.nb // DAY_MS)
        cnt = self.tod_n[b]
        z_tod = abs(x - self.tod_mu[b]) / max(1.25 * self.tod_dev[b], 0.2 * s, floor) if cnt >= 3 else 0.0
        vol = self.vol + 0.1 * (dx - self.vol)
        z_vol = abs(math.log((vol + floor) / (ds + floor))) if n > 30 else 0.0
        slow = x if self.slow is None else self.slow + 0.05 * (x - self.slow)
        z_slow = abs(slow - m) / max(1.25 * s, floor)
        if learn:
            self.vol, self.slow = vol, slow
            a, a_s = max(1.0 / (n + 1), self.a_level), max(1.0 / (n + 1), self.a_step)
            cap, cap_s = (6 * s, 6 * ds) if n > 30 else (dev, dx)
            self.mean = m + a * (min(max(x, m - cap), m + cap) - m)
            self.dev = s + a * (min(dev, cap) - s)
            self.step_dev = ds + a_s * (min(dx, cap_s) - ds)
            at = max(1.0 / (cnt + 1), self.a_tod)
            d_tod = abs(x - self.tod_mu[b]) if cnt else 0.0
            self.tod_mu[b] += at * (x - self.tod_mu[b])
            self.tod_dev[b] += at * (d_tod - self.tod_dev[b])
            self.tod_n[b] = min(cnt + 1, 1 << 30)
        self.prev = x
        self.n = n + 1
        log1p = math.log1p
        r = (log1p(z_level), log1p(z_step), log1p(z_tod), log1p(z_vol), log1p(z_slow))
        # `_Record.step` for the 10 records, inlined (the hot loop of the cost-spike detector).
        # All records of one scorer share `memory`, `warmup`, `min_sigma` and step together, so
        # the per-row constants are computed once (again only if a record's count differs).
        cal = self.cal
        c0 = cal[0]
        mem, warmup, block = c0.memory, c0.warmup, c0.block
        ms2 = c0.min_sigma * c0.min_sigma
        e = 0.0
        cn = lim = -1
        a = 0.0
        warm = ends = False
        ninf = -math.inf
        for c, ri in zip(cal, r + r):
            short = c.short
            s = short + c.a_short * (ri - short)
            c.short = s
            if c.n != cn:
                cn = c.n
                lim = cn - mem
                a = 1.0 / (cn + 1) if cn + 1 < mem else 1.0 / mem
                warm = cn > warmup
                ends = (cn + 1) % block == 0
            top, bmax = c.top, c.bmax
            if top:  # `_Record.window_max`
                while top and top[0][0] <= lim:
                    top.popleft()
                if top and top[0][1] > bmax:
                    bmax = top[0][1]
            out = s - bmax if warm and bmax > ninf else 0.0
            mu = c.mu
            d = s - mu
            var = c.var
            if out > 0 and d * d < ms2 * var:
                out = 0.0  # a record within the usual spread is not evidence
            c.mu = mu + a * d
            c.var = var + a * (d * d - var)
            bmax = c.bmax  # `_Record.push`
            if s > bmax:
                bmax = s
            if ends:
                while top and top[-1][1] <= bmax:
                    top.pop()
                top.append((cn, bmax))
                bmax = ninf
            c.bmax = bmax
            c.n = cn + 1
            if out > e:
                e = out
        self.evidence = e
        recent = n - self.last_peak <= self.refractory
        out = 0.0 if recent and e <= self.peak else e
        if e > 0 and (e > self.peak or not recent):
            self.peak, self.last_peak = e, n
        return 1.0 - math.exp(-3.0 * out)

    @property
    def recent_peak(self) -> float:
        """Score of the last detection if it is within the refractory period, else 0."""
        return 1.0 - math.exp(-3.0 * self.peak) if self.n - 1 - self.last_peak <= self.refractory else 0.0
