"""Idle keys' cost-spike rows, packed: ≈ 0.2 KB of bytes instead of a `SeasonalBank` row (≈ 0.5–2.5 KB).

A tracked key is kept for `KEYWATCH_KEY_IDLE_EXPIRE_S` (7 days) after its last spend, and most
keys are idle at any time; yet every key row stepped every minute (each minute of a key's life is
a minute of spend, zero or not) and held a full row of every per-row array. So at an hour's last
minute, a key row without spend for `KEYWATCH_KEY_COLD_AFTER_S` (an hour) leaves the bank
(`ColdKeyRows._pack_idle`): its state — profiles, level, calibrator, busiest-hour request rate —
becomes bytes and its row is freed for reuse.

Detection does not change. A minute of zero spend, learning on, changes an idle row by a fixed
rule: no run (spend is never negative, so 0 is never above the band), no finding, a calibrator
value of 0, and a learning step toward 0. `replay` does those minutes' arithmetic with the same
float operations in the same order (float64, profiles stored as float32), so the row comes back
bit for bit the row that never left, whenever it is next needed (`_wake`): its key's next
event, an incident another detector opens on the key, analyst feedback. Rows that are not
plain idle — an open or suppressed spike, a run, feedback pending, an incident on the key — stay.
Minutes the detector skipped (a silence over 14 days) are skipped again (`cold_skips`).

>>> import numpy as np
>>> from keywatch.models.forecast import HOW_OFFSET, SeasonalBank, TailCalibrator
>>> bank, cal = SeasonalBank(), TailCalibrator(long_n=1440.0, short_n=2.0)
>>> r = bank.add()
>>> for t in range(600):                       # ten hours of $1/min, then idle
...     _ = bank.step(t, np.array([1.0 if t < 300 else 0.0])); _ = cal.step(np.zeros(1))
>>> blob = pack_row(bank, cal, np.zeros(1), r, 600)
>>> twin = SeasonalBank(); r2 = twin.add(); cal2 = TailCalibrator(long_n=1440.0, short_n=2.0); cal2.reset(r2)
>>> _ = unpack_row(twin, cal2, np.zeros(1), r2, blob, 999, [])
>>> for t in range(600, 1000):
...     _ = bank.step(t, np.zeros(1)); _ = cal.step(np.zeros(1))
>>> all((a == b).all() for a, b in zip(bank.row_profile(r), twin.row_profile(r2))), float(bank.lvl_mu[r]) == float(twin.lvl_mu[r2])
(True, True)
"""

from __future__ import annotations

import struct
import zlib
from array import array

import numpy as np

from keywatch.models.costspike_rows import as_tuple, single_or_tuple
from keywatch.models.forecast import HOW_OFFSET, SeasonalBank, TailCalibrator
from keywatch.models.reqrate import PEAK_DECAY
from keywatch.models.spill import SpillDict

# last_active, next minute to replay, age, run_start | lvl_mu, lvl_dev, calibrator (mu, var,
# short, cnt), busiest-hour request rate; then the compressed profiles and visit counts.
_HEAD = struct.Struct("<qqqq7d")


def pack_row(bank, cal, peak: np.ndarray, r: int, next_t: int) -> bytes:
    """Row `r` of `bank` (with its calibrator row and request peak) as bytes; `next_t`: the
    first minute it has not stepped."""
    head = _HEAD.pack(int(bank.last_active[r]), next_t, int(bank.age[r]), int(bank.run_start[r]),
                      float(bank.lvl_mu[r]), float(bank.lvl_dev[r]), float(cal.mu[r]), float(cal.var[r]),
                      float(cal.short[r]), float(cal.cnt[r]), float(peak[r]))
    prof, cnt = bank.row_profile(r)
    return head + zlib.compress(prof.tobytes() + cnt.tobytes(), 1)


def packed_last_active(blob: bytes) -> int:
    return int.from_bytes(blob[:8], "little", signed=True)


# `ColdKeyRows.cold` holds per key one packed row as bytes — its project, then the row — or a
# tuple of them (a key with spend in several projects): ≈ 0.1 KB a key less than a tuple of
# (project, blob) tuples. The project is a 2-byte length (0xFFFF: None) and its UTF-8.
_NONE = 0xFFFF


def cold_entry(project: str | None, blob: bytes) -> bytes:
    p = b"" if project is None else project.encode()
    return (_NONE if project is None else len(p)).to_bytes(2, "little") + p + blob


def split_entry(entry: bytes) -> tuple[str | None, memoryview]:
    """(project, blob) of an entry; the blob a view, not a copy."""
    n = int.from_bytes(entry[:2], "little")
    if n == _NONE:
        return None, memoryview(entry)[2:]
    return entry[2:2 + n].decode(), memoryview(entry)[2 + n:]


def entries_last_active(got: bytes | tuple) -> int:
    """The least `last_active` of a key's packed rows (`SpillDict`'s head: expiry reads it)."""
    return min(packed_last_active(split_entry(e)[1]) for e in as_tuple(got))


def cold_rows(items=()) -> SpillDict:
    """`ColdKeyRows.cold`: on disk (models/spill.py), each key's least `last_active` in memory."""
    return SpillDict(entries_last_active, items)


def unpack_row(bank, cal, peak: np.ndarray, r: int, blob: bytes, last: int, skips: list) -> None:
    """Load `blob` into row `r` (a fresh row of `bank`, `cal`, `peak`), stepped through minute
    `last` as a minute of zero spend each, but the minutes in `skips` ([start, end) ranges)."""
    (la, t0, age, run_start, lmu, ldev, cmu, cvar, cshort, ccnt, pk) = _HEAD.unpack_from(blob)
    raw = zlib.decompress(memoryview(blob)[_HEAD.size:])
    npf = 8 * 24 * 2 * 4  # the profiles (float32); the visit counts follow
    prof, cnt = array("f"), array(bank.hod_c.dtype.char)
    prof.frombytes(raw[:npf])
    cnt.frombytes(raw[npf:])
    st = [age, lmu, ldev, cmu, cvar, cshort, ccnt, pk]
    minutes = _ranges(t0, last + 1, skips)
    if minutes:
        replay(bank, cal, prof, cnt, st, minutes)
    age, lmu, ldev, cmu, cvar, cshort, ccnt, pk = st
    bank.set_row_profile(r, np.frombuffer(prof, np.float32).reshape(8, 24, 2),
                         np.frombuffer(cnt, bank.hod_c.dtype).reshape(8, 24))
    bank.lvl_mu[r], bank.lvl_dev[r], bank.age[r], bank.run_start[r], bank.last_active[r] = lmu, ldev, age, run_start, la
    cal.mu[r], cal.var[r], cal.short[r], cal.cnt[r] = cmu, cvar, cshort, ccnt
    peak[r] = pk


def _ranges(start: int, end: int, skips: list) -> list[tuple[int, int]]:
    """[start, end) without the skipped ranges."""
    out = []
    for s0, s1 in sorted(skips):
        if s1 <= start or s0 >= end:
            continue
        if s0 > start:
            out.append((start, s0))
        start = max(start, s1)
    if start < end:
        out.append((start, end))
    return out


def replay(bank, cal, prof: array, cnt: array, st: list, minutes: list[tuple[int, int]]) -> None:
    """Minutes of zero spend, learning on, for one row: `SeasonalBank.step` and `_learn`,
    `TailCalibrator.step` (z = 0) and `RequestRates.step` (no requests) as scalars, each
    operation as those do it. `prof` and `cnt` are changed in place (an `array('f')` rounds a
    float64 to float32 as numpy's cast does); `st` holds the row's other numbers."""
    assert bank.per_hour == 60.0, "cold rows step in minutes"
    tab = bank.__dict__.get("_tab") or bank._tables()
    a_hod, a_how, nxt = tab[4].tolist(), tab[5].tolist(), tab[6].tolist()
    a_lvl, a_short, a_long = bank.a_lvl, cal.a_short, cal.a_long
    age, lmu, ldev, cmu, cvar, cshort, ccnt, pk = st
    for t_start, t_end in minutes:
        t = t_start
        while t < t_end:
            hour = t // 60
            stop = min(t_end, (hour + 1) * 60)
            hod = hour % 24
            i0, i1 = hod, ((hour + HOW_OFFSET) % 168 // 24 + 1) * 24 + hod
            for t in range(t, stop):
                for i, atab in ((i0, a_hod), (i1, a_how)):
                    c = cnt[i]
                    a = atab[c]
                    j = 2 * i
                    mu, dev = prof[j], prof[j + 1]
                    dx = 0.0 - mu
                    prof[j] = mu + a * dx
                    prof[j + 1] = dev + a * ((abs(dx) if c > 0 else 0.0) - dev)
                    cnt[i] = nxt[c]
                age += 1
                dx = 0.0 - lmu
                a = 1.0 / age
                if a < a_lvl:
                    a = a_lvl
                ldev = ldev + a * ((abs(dx) if age > 1 else 0.0) - ldev)
                lmu = lmu + a * dx
                cshort = cshort + a_short * (0.0 - cshort)
                a = 1.0 / (ccnt + 1.0)
                if a < a_long:
                    a = a_long
                d = cshort - cmu
                cmu = cmu + a * d
                cvar = cvar + a * (d * d - cvar)
                ccnt += 1
                if (t + 1) % 60 == 0:
                    pk = pk * PEAK_DECAY
            t = stop
    st[:] = [age, lmu, ldev, cmu, cvar, cshort, ccnt, pk]


class ColdKeyRows:
    """Packing and waking key rows, for `CostSpikeDetector` (a mixin: it owns `bank`, `cal`,
    `rq`, `rows`, `series`, `level` and the row dicts). `cold`: (provider, key_id) → its packed
    rows (`cold_entry`: one, or a tuple of them); `cold_skips`: minutes skipped since (a silence
    over 14 days)."""

    cold_after_min = 60
    cold: dict
    cold_skips: list

    def _pack_idle(self, t: int, ctx) -> None:
        """At the end of minute `t`: pack the key rows without spend for `cold_after_min`."""
        b, n = self.bank, self.bank.n
        idle = (self.level[:n] == 0) & b.used[:n] & (b.last_active[:n] <= t - self.cold_after_min) & (b.run_len[:n] == 0)
        rows = np.nonzero(idle)[0].tolist()
        if not rows:
            return
        busy = self.incidents.keys() | self.suppress.keys() | self.accept.keys() | self.nolearn.keys()
        incident = {(k[1], k[2]) for k in ctx.book.open_keys_at(t * 60000 + 59999)}
        self.rq._grow(n)
        cold, peak = self.cold, self.rq.peak
        for r in rows:
            skey = self.series[r]
            k = (skey[1], skey[3])
            if r in busy or k in incident:
                continue
            item = cold_entry(skey[2], pack_row(b, self.cal, peak, r, t + 1))
            got = cold.get(k)
            cold[k] = item if got is None else as_tuple(got) + (item,)
            self._free_row(skey, r)
        self._routes = self._tags = self._lvmask = None  # row numbers are reused: the row caches are stale

    def _thaw(self, skey: tuple, r: int, last: int) -> None:
        """If `skey` (a key series) is packed, load it into its new row `r`, stepped through `last`."""
        k = (skey[1], skey[3])
        got = self.cold.get(k)
        if got is None:
            return
        got = as_tuple(got)
        for i, entry in enumerate(got):
            proj, blob = split_entry(entry)
            if proj == skey[2]:
                rest = got[:i] + got[i + 1:]
                if rest:
                    self.cold[k] = single_or_tuple(rest)
                else:
                    del self.cold[k]
                self.cal.reset(r)
                unpack_row(self.bank, self.cal, self.rq.peak, r, blob, last, self.cold_skips)
                return

    def _wake_incidents(self, t: int, open_keys: list) -> None:
        """Before minute `t` steps: keys another detector has an incident open on stop learning
        (`_learn_masks`), so their packed rows come back first."""
        for k in open_keys:
            got = self.cold.get((k[1], k[2]))
            for entry in as_tuple(got) if got is not None else ():
                self._row(("key", k[1], split_entry(entry)[0], k[2]), last=t - 1)

    def _expire_cold(self, t: int) -> None:
        """`_expire_idle` for packed rows: the same test on the same `last_active`."""
        limit = t - self.idle_expire_min
        for k, least in list(self.cold.heads()):
            if least >= limit:  # every row of the key stays: its rows are not read
                continue
            got = as_tuple(self.cold[k])
            keep = tuple(e for e in got if packed_last_active(split_entry(e)[1]) >= limit)
            if len(keep) != len(got):
                if keep:
                    self.cold[k] = single_or_tuple(keep)
                else:
                    del self.cold[k]
        # A packed row's next minute is after its `last_active`: earlier skips concern none.
        self.cold_skips = [s for s in self.cold_skips if s[1] > limit]

    def _packed_rows(self, key_id: str):
        """(skey, blob) of `key_id`'s packed rows."""
        for p, k in self.cold:
            if k == key_id:
                for entry in as_tuple(self.cold[(p, k)]):
                    proj, blob = split_entry(entry)
                    yield ("key", p, proj, k), blob

    def packed_count(self) -> int:
        return self.cold.items_held()

    def _cold_state(self) -> dict:
        """`cold` in the format of the code before `cold_entry` (a snapshot either code loads):
        (provider, key_id) → ((project, blob), …)."""
        return {k: tuple((p, bytes(b)) for p, b in map(split_entry, as_tuple(got))) for k, got in self.cold.items()}

    def _cold_load(self, cold: dict) -> None:
        self.cold = cold_rows((k, single_or_tuple(tuple(cold_entry(p, b) for p, b in got))) for k, got in cold.items())

    def _packed_view(self, blob: bytes, last: int):
        """A one-row bank holding `blob` stepped through `last`, for reading (describe)."""
        b = self.bank
        tmp = SeasonalBank(k=b.k, warmup_units=b.warmup, capacity=1)
        tmp.n_cap, tmp.a_hod, tmp.a_how, tmp.a_lvl = b.n_cap, b.a_hod, b.a_how, b.a_lvl
        tmp._alloc(1, b.hod_c.dtype)
        cal = TailCalibrator()
        cal.a_long, cal.a_short = self.cal.a_long, self.cal.a_short
        unpack_row(tmp, cal, np.zeros(1), tmp.add(), blob, last, self.cold_skips)
        return tmp
