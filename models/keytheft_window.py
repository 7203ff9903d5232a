"""Key-theft assessment and the key-minute window close (the detector's two per-key judgements).

`assess` fuses a key's open evidence (who is calling), its behaviour against the seasonal
baseline and the kill chain into one risk, and reports a `key_theft` finding above the alert
threshold. Traffic carried mostly by networks still on probation (accepted from evidence, see
`keytheft_probation`) does not get the "same callers as usual" benefit: a surge or a shift to
expensive models carried by them is new-caller evidence. `close_window` runs once per busy
key-minute: the HalfSpaceTrees score, concurrency learning, evidence opened by a surge, and
evidence accepted (benign drift) or expired. Both are bound as methods of `KeyTheftDetector`.

>>> probation_signal(0.95, {"volume": 0.6}), probation_signal(0.95, {}), probation_signal(0.3, {"cost": 1.0})
(1.0, 0.0, 0.0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from keywatch.models.alerts import Finding
from keywatch.models.calibration import squash_log2
from keywatch.models.core import Context, ScoreRow
from keywatch.models.keytheft_signals import _fuse, identity_signals, reasons, severity
from keywatch.models.keytheft_state import KeyState, _ramp, offhours_signal, volume_signal, why_text
from keywatch.models.killchain import ChainState

if TYPE_CHECKING:
    from keywatch.models.keytheft import KeyTheftDetector

KIND = "key_theft"
EVIDENCE_TTL_MS = 3_600_000
HST_MIN_REQUESTS = 3
ACCEPT_MS = 3_600_000  # a novelty that raised no alert within this time becomes part of the baseline (on probation)


def probation_signal(share: float, behaviour: dict[str, float]) -> float:
    """New-caller evidence from networks on probation: most recent traffic is theirs, and it surges
    (volume, spend) or shifts to expensive models. Their quiet, usual traffic is nothing."""
    b = behaviour
    if share < 0.5 or not (b.get("volume", 0) >= 0.3 or b.get("cost", 0) >= 0.3 or b.get("expensive", 0) >= 0.3):
        return 0.0
    return _ramp(share, 0.5, 0.9)


def assess(self: KeyTheftDetector, st: KeyState, provider: str, key_id: str, project: str | None, ts: int, ctx: Context,
            chain: ChainState | None) -> None:
    ev = st.ev
    base = st.base
    ev.last_calc = ts
    exp_rpm, exp_cpm = base.expected_rpm(ts), base.expected_cpm(ts)
    pop = self._pop(project, provider)
    ks = base.settled(ts)
    if ks < 0.5:  # a new key borrows its project's rate; with neither, volume means nothing
        exp_rpm = max(exp_rpm, pop.key_rpm)
    behaviour, detail = st.behaviour(ts, exp_rpm, exp_cpm, base, text=False)
    trust = max(ks, pop.settled(ts) if pop.key_rpm > 0 else 0.0)
    for name in ("volume", "cost"):
        if name in behaviour:
            behaviour[name] *= trust
    if base.quiet_hour(ts):
        behaviour["off_hours"] = offhours_signal(st.c60)
        detail["off_hours"] = "activity outside the key's usual working hours"
    c_score, c_reason = chain.score(ts) if chain is not None else (0.0, "")
    ev.chain_reason = c_reason
    ident = identity_signals(ev)
    if st.prob is not None and (p := probation_signal(share := st.prob.share(ts, st.c10), behaviour)) > 0:
        ident["probation"] = p
        detail["probation"] = (f"{share:.0%} of recent requests from a network on probation (accepted into the baseline "
                               f"{st.prob.age_days(ts):.0f} days ago without alerts, not yet trusted)")
    dur_min = max(1.0, (ts - ev.start_ts) / 60_000)
    risk, signals, ev.ident = _fuse(ident, behaviour, c_score, ev, not st.flags & 1, exp_rpm, dur_min)
    ev.risk = risk
    ev.sig = signals
    if risk < self.alert_min or ts < st.suppress_until:
        return
    if risk < ev.reported + 0.03 and ts - ev.last_report < 600_000:
        return
    ev.reported = max(ev.reported, risk)
    ev.last_report = ts
    impact = max(ev.novel_cost, ev.cost - exp_cpm * dur_min)
    ctx.report(Finding(
        kind=KIND, provider=provider, key_id=key_id, project=project, ts_ms=ts, started_at_ms=ev.start_ts,
        score=risk, reasons=reasons(ev, why_text(detail), signals), cost_impact_usd=max(0.0, impact), severity=severity(risk),
        details={"signals": signals, "coverage": st.coverage(), "settled": round(base.settled(ts), 2)}))


def close_window(self: KeyTheftDetector, st: KeyState, provider: str, key_id: str, project: str | None, ctx: Context, ts: int) -> None:
    # Hot (once per busy key-minute): helpers are inlined here with the same arithmetic.
    win_req = st.win_req
    if st.win_min >= 0 and win_req > 0:
        base = st.base
        end = (st.win_min + 1) * 60_000
        exp = base.expected_rpm(end - 1)
        ev = st.ev
        protected = ev is not None and (ev.ident >= self.protect_min or ev.reported > 0)
        sig = 0.0
        nets = -1
        if win_req >= HST_MIN_REQUESTS:  # one multivariate score per busy key-minute
            n = win_req
            nets = st.nets_active(end)
            x = {"req": squash_log2(n / exp), "cost": squash_log2(st.win_cost / base.expected_cpm(end - 1)),
                 "expensive": st.win_exp / n, "errors": min(1.0, st.win_err / n), "novel": st.win_novel / n,
                 "nets": min(1.0, nets / 8.0), "offhours": 1.0 if base.quiet_hour(end - 1) else 0.0,
                 "ratio": squash_log2(math.exp(base.log_ratio))}
            sig = self.model.score_learn(x, learn=not protected and base.settled(end) > 0.2)[1]
        st.hst = sig
        if not protected:
            if nets < 0:
                nets = st.nets_active(end)
            conc = base.conc * 0.995
            base.conc = conc if conc >= nets else float(nets)  # `learn_conc`, inlined
            if project is not None and base.settled(end) >= 0.5:
                pop = self._pop(project, provider)
                pop.key_rpm += 0.02 * (2.0 * base.mean_rpm - pop.key_rpm)
        if ev is None:
            c5, c60 = st.c5, st.c60
            if c5 < 2.0 * (exp * 5.0) and c60 < 2.0 * (exp * 60.0):  # `volume_signal`'s quiet case
                vol = 0.0
            else:
                vol = volume_signal(c5, c60, exp)[0]
            if sig > 0.5 or vol > 0.5 or (vol > 0.2 and st.prob is not None and st.prob.share(end - 1, st.c10) >= 0.5):
                ev = st.open_evidence(end - 1)
        ctx.scores.append(ScoreRow(end - 1, provider, key_id, project, self.name,
                                   round(ev.risk, 4) if ev is not None else 0.0,
                                   {"hst": round(sig, 3) if sig else 0.0, "requests": win_req}))
        if ev is not None and not (ctx.book.open and ctx.book.is_open(KIND, provider, key_id, project, at_ms=ts)):
            if ev.reported == 0 and ts - ev.start_ts > ACCEPT_MS:
                st.accept_evidence(ts)  # unusual but never alarming for an hour: benign drift
            elif ts - ev.last_ts > EVIDENCE_TTL_MS:
                st.ev = None
    st.win_min = ts // 60_000  # `reset_window`, inlined
    st.win_req = st.win_exp = st.win_err = st.win_novel = 0
    st.win_cost = 0.0

