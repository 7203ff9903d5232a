"""Idle keys' cost-spike rows are packed (models/costspike_cold.py): the same alerts, scores,
rows and series state as with every row in the bank — through days of idling, a silence over
14 days, an incident another detector opens on a packed key, feedback, expiry and snapshots —
while a packed row is a few hundred bytes and its bank row is reused."""

from __future__ import annotations

import pickle
import random

import numpy as np

from keywatch.models.alerts import Finding
from keywatch.models.core import DetectionCore
from keywatch.models.costspike import CostSpikeDetector
from keywatch.models.costspike_cold import replay, split_entry
from keywatch.models.costspike_rows import as_tuple
from keywatch.models.events import UsageEvent
from keywatch.models.forecast import SeasonalBank, TailCalibrator
from keywatch.models.reqrate import RequestRates

from .sim import DAY0, MIN


class Accuser:
    """Opens an incident on key `k1` whenever it sees a call from `accuse` (another key): an
    incident on a key whose cost-spike row may be packed."""

    name = "accuser"

    def process(self, batch, ctx) -> None:
        for e in batch.usage:
            if e.key_id == "accuse":
                ctx.report(Finding(kind="key_theft", provider="openai", key_id="k1", project="p", ts_ms=e.ts_ms,
                                   started_at_ms=e.ts_ms, score=0.9, reasons=["test"]))


def _usage(i: int, minute: int, key: str, usd: float, requests: int = 2) -> UsageEvent:
    return UsageEvent(event_id=f"e{i}", ts=DAY0 + minute * MIN + 7_000, provider="openai", key_id=key, project="p",
                      model="gpt-4o", cost_usd=usd, requests=requests)


def _stream(seed: int = 3) -> list[UsageEvent]:
    """Six keys with different habits over ~24 days: busy all day, office hours, a few calls a
    day, gone for 3 days, a burst on a quiet key, then a 15-day silence and a comeback."""
    rnd, out, i = random.Random(seed), [], 0
    for m in range(int(8.5 * 1440)):
        hod = m // 60 % 24
        calls = [("k0", 0.05 * (1 + (hod > 8)))]
        if 9 <= hod < 17 and m // 1440 % 7 < 5:
            calls.append(("k1", 0.2))
        if m % 397 == 0:
            calls.append(("k2", 0.4))
        if not 2 * 1440 <= m < 5 * 1440 and m < 8 * 1440:
            calls.append(("k3", 0.03))
        if 6 * 1440 + 300 <= m < 6 * 1440 + 320:
            calls.append(("k2", 12.0))  # a spike on a packed key
        if m in (4 * 1440 + 600, 4 * 1440 + 601, 7 * 1440):
            calls.append(("accuse", 0.01))
        for key, usd in calls:
            i += 1
            out.append(_usage(i, m, key, round(usd * rnd.uniform(0.7, 1.3), 6), requests=rnd.randint(1, 5)))
    for m in range(int(23.9 * 1440), int(23.9 * 1440) + 180):  # after a 15-day silence, past a day's end
        for key in ("k0", "k1", "k3", "k4"):  # k3 packed across the silence
            i += 1
            out.append(_usage(i, m, key, 0.07))
    return out


def _run(events, cold_after_min: int, snapshot_at: int | None = None):
    det = CostSpikeDetector(warmup_min=120, cold_after_min=cold_after_min, idle_expire_min=7 * 1440)
    core = DetectionCore([Accuser(), det])
    alerts, scores, rows, packed, woke = [], [], {}, 0, 0
    for n, i in enumerate(range(0, len(events), 2000)):
        if n == snapshot_at:
            core = pickle.loads(pickle.dumps(core))
            det = core.detectors[1]
        before = {k: len(as_tuple(v)) for k, v in det.cold.items()}
        out = core.process(events[i:i + 2000])
        packed = max(packed, det.packed_count())
        left = {k: len(as_tuple(det.cold[k])) if k in det.cold else 0 for k in before}
        woke += sum(n - left[k] for k, n in before.items() if n > left[k])
        alerts += [a.to_contract() for a in out.alerts]
        scores += out.scores
        for table, r in out.rows.items():
            rows.setdefault(table, []).extend(r)
    return det, (alerts, scores, rows), packed, woke


def _series_state(det: CostSpikeDetector) -> dict:
    """Every series' numbers, packed ones brought back first (bringing back changes nothing)."""
    for (p, k), got in list(det.cold.items()):
        for entry in as_tuple(got):
            det._row(("key", p, split_entry(entry)[0], k))
    b = det.bank
    return {skey: (*(a.tobytes() for a in b.row_profile(r)), float(b.lvl_mu[r]), float(b.lvl_dev[r]),
                   int(b.age[r]), int(b.last_active[r]), float(det.cal.mu[r]), float(det.cal.var[r]),
                   float(det.cal.short[r]), float(det.cal.cnt[r]), float(det.rq.peak[r]))
            for skey, r in det.rows.items()}


def test_packing_idle_key_rows_changes_no_alert_score_row_or_series():
    events = _stream()
    det, out, packed, woke = _run(events, 60)
    ref, ref_out, ref_packed, _ = _run(events, 0)
    assert ref_packed == 0 and packed >= 3 and woke >= 5  # rows were packed and came back
    assert len(det.cold_skips) == 1 and det.cold_skips[0][1] - det.cold_skips[0][0] > 14 * 1440
    assert any(a["kind"] == "cost_spike" and a["key_id"] == "k2" for a in out[0])  # a packed key's spike
    assert out == ref_out
    gone = ("key", "openai", "p", "k2")  # idle over 7 days at the first day's end after the silence
    assert gone not in ref.rows and gone not in det.rows and ("openai", "k2") not in det.cold
    assert _series_state(det) == _series_state(ref)


def test_a_snapshot_holds_packed_rows_as_they_are():
    events = _stream(5)
    det, out, _, _ = _run(events, 60, snapshot_at=40)
    ref, ref_out, _, _ = _run(events, 0)
    assert out == ref_out and _series_state(det) == _series_state(ref)


def test_a_packed_row_is_small_its_bank_row_reused_and_it_is_described_and_takes_feedback():
    det = CostSpikeDetector(warmup_min=60, cold_after_min=60)
    ref = CostSpikeDetector(warmup_min=60, cold_after_min=0)
    cores = [DetectionCore([d]) for d in (det, ref)]
    calls = [_usage(m, m, "k1", 0.5) for m in range(600)] + [_usage(1000 + m, 700 + m, "k9", 0.1) for m in range(200)]
    for c in cores:
        c.process(calls)
    assert ("openai", "k1") in det.cold and ("key", "openai", "p", "k1") not in det.rows
    entry = det.cold[("openai", "k1")]
    assert split_entry(entry)[0] == "p"
    blob = split_entry(entry)[1]
    assert len(blob) < 700  # a bank row is 8·24·2 float32 + 192 counts + 10 numbers ≈ 1.8 KB, its arrays' slack aside
    assert det.rows[("key", "openai", "p", "k9")] == ref.rows[("key", "openai", "p", "k1")]  # k1's row reused
    assert det.describe_key("k1") == ref.describe_key("k1") and det.describe_key("k1")["series"][0]["history_min"] > 800
    assert ("openai", "k1") in det.cold  # describing did not bring it back
    assert det.describe()["packed_key_series"] == 1
    # Feedback on a packed key's spike brings the row back and applies, as on the unpacked one.
    alert = type("A", (), {"kind": "cost_spike", "details": {"series": "key|openai|p|k1"}})()
    for d in (det, ref):
        d.on_feedback(alert, "not_anomaly", None)
    r, r0 = det.rows[("key", "openai", "p", "k1")], ref.rows[("key", "openai", "p", "k1")]
    assert det.accept == {r: det.cur_minute + 180} and ref.accept == {r0: ref.cur_minute + 180}
    assert det.bank.row_profile(r)[0].tobytes() == ref.bank.row_profile(r0)[0].tobytes()


def test_replay_is_the_bank_step_bit_for_bit():
    """Rows in every state a packed row can be in — new, warming, counts saturated or not,
    unvisited bins — stepped by the bank and by `replay`, across hour, day and week ends."""
    rnd = np.random.default_rng(7)
    bank, cal, rq = SeasonalBank(k=4.0, warmup_units=30), TailCalibrator(long_n=1440.0, short_n=2.0), RequestRates()
    starts = [0, 500, 1000, 1500, 2500, 2990]  # the last one is still warming up at minute 3000
    rows = []
    for t in range(3000):
        if t in starts:
            rows.append(bank.add())
            cal.reset(rows[-1])
            rq.reset(rows[-1])
        n = len(rows)
        x = rnd.gamma(2.0, 0.3, n) * (rnd.random(n) < 0.7)
        bank.step(t, x)
        cal.step(np.zeros(n))
        for r in rows:
            rq.add(r, int(x[r] > 0))
        rq.step(t, n, np.zeros(n, bool), None)
    snap = [(*(a.tobytes() for a in bank.row_profile(r)), [int(bank.age[r]), float(bank.lvl_mu[r]),
             float(bank.lvl_dev[r]), float(cal.mu[r]), float(cal.var[r]), float(cal.short[r]), float(cal.cnt[r]),
             float(rq.peak[r])]) for r in rows]
    assert snap[-1][2][0] == 10 and snap[-1][2][6] == 10.0
    for t in range(3000, 3000 + 9 * 1440 + 17):  # zero minutes: every row learns
        bank.step(t, np.zeros(6))
        cal.step(np.zeros(6))
        rq.step(t, 6, np.zeros(6, bool), None)
    from array import array

    for r, (prof_b, cnt_b, st) in zip(rows, snap):
        prof, cnt = array("f"), array("B")
        prof.frombytes(prof_b)
        cnt.frombytes(cnt_b)
        replay(bank, cal, prof, cnt, st, [(3000, 3000 + 9 * 1440 + 17)])
        assert (prof.tobytes(), cnt.tobytes()) == tuple(a.tobytes() for a in bank.row_profile(r))
        assert st == [int(bank.age[r]), float(bank.lvl_mu[r]), float(bank.lvl_dev[r]), float(cal.mu[r]),
                      float(cal.var[r]), float(cal.short[r]), float(cal.cnt[r]), float(rq.peak[r])]


def test_an_idle_row_is_packed_within_ten_minutes_of_going_cold():
    det = CostSpikeDetector(warmup_min=60, cold_after_min=60)
    core = DetectionCore([det])
    core.process([_usage(m, m, "k1", 0.5) for m in range(5)])  # k1's last spend: minute 4
    ticks = [_usage(100 + m, m, "k9", 0.1) for m in range(5, 4 + 60 + 12)]  # another key moves the minutes on
    core.process(ticks[:60])  # through minute 64: idle 60 minutes only from minute 64 on
    assert ("openai", "k1") not in det.cold
    core.process(ticks[60:])  # through minute 75: the sweep at the end of minute 69 packed it
    assert ("openai", "k1") in det.cold and ("key", "openai", "p", "k1") not in det.rows
