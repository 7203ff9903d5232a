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
from keywatch.models.features import PopBaseline
from keywatch.models.keytheft_signals import BEHAVIOUR_W, _fuse, identity_signals, reasons, severity
from keywatch.models.keytheft_state import KeyState, _ramp, offhours_signal, surge, why_text
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


W_VOLUME, W_COST = BEHAVIOUR_W["volume"], BEHAVIOUR_W["cost"]


def _behaviour(vol: float | None, cost: float | None, rest: tuple) -> dict[str, float]:
    """`KeyState.behaviour`'s signal dict from `assess`' locals, in its order."""
    b = {}
    if vol is not None:
        b["volume"] = vol
    if cost is not None:
        b["cost"] = cost
    b.update(rest)
    return b


def assess(self: KeyTheftDetector, st: KeyState, provider: str, key_id: str, project: str | None, ts: int, ctx: Context,
           chain: ChainState | None, pop: PopBaseline | None = None) -> None:
    # Hot (most events of a key with open evidence): `KeyState.behaviour`, the key's and the
    # project's settledness, and `_fuse` for evidence without a new caller are inlined
    # with the same arithmetic and the same dict orders (the noisy-OR products and the signals
    # follow them). The readable reasons are built only when a finding is reported.
    ev = st.ev
    base = st.base
    ev.last_calc = ts
    exp_rpm, exp_cpm = base.expected(ts)
    if pop is None:
        pop = self._pop(project, provider)
    ks = 0.0
    if base.first_ts:  # `base.settled(ts)`; `max(a, b)` is `b if b > a else a`, `min(a, b)` is `b if b < a else a`
        x = (ts - base.first_ts) / 86_400_000
        x = x if x < 1.0 else 1.0
        y = base.active_min / 120
        ks = (x if x > 0.0 else 0.0) * (y if y < 1.0 else 1.0)
    if ks < 0.5:  # a new key borrows its project's rate; with neither, volume means nothing
        x = pop.key_rpm
        if x > exp_rpm:
            exp_rpm = x
    # `st.behaviour(ts, exp_rpm, exp_cpm, base)[0]` without the dict, which is built only where it is
    # read (`_fuse`, probation: rare): volume and cost (None: absent), then the `rest` in its order.
    c5, c60 = st.c5, st.c60
    vol = cost = None
    rest = ()
    if not (c5 < 2.0 * (exp_rpm * 5.0) and c60 < 2.0 * (exp_rpm * 60.0)):  # else `surge` is 0
        x = surge(c5, c60, exp_rpm)
        if x > 0.0:
            vol = x
    k60, e_cost = st.k60, exp_cpm * 60.0
    if k60 > 2.0 * e_cost and k60 - e_cost > 0.5:
        cost = _ramp(math.log2(k60 / e_cost), 1.0, 4.0) * _ramp(k60 - e_cost, 0.5, 5.0)
    e60 = st.e60
    if c60 > 0.0 and e60 > 1.0:  # `_ramp(e60, 1.0, 8.0)` is 0 below: no signal
        x = _ramp(min(1.0, e60 / c60) - base.exp_share, 0.3, 0.8) * _ramp(e60, 1.0, 8.0)
        if x > 0.0:
            rest += (("expensive", x),)
    x = st.err10
    if x >= 2.0:
        rest += (("errors", _ramp(x, 2.0, 12.0) * (1.0 if x > 0.3 * st.c10 else 0.4)),)
    if len(st.recent16) >= 6:  # `st.nets_active(ts)` ≥ 3 needs three networks (two numbers each)
        n = st.nets_active(ts)
        if n >= 3:
            x = _ramp(n - base.conc, 1.0, 5.0)
            if x > 0.0:
                rest += (("concurrency", x),)
    if ev.models:
        rest += (("model", ev.w.get("model", 0.0)),)
    if st.hst > 0.0:
        rest += (("hst", st.hst),)
    if vol is not None or cost is not None:
        trust = ks  # `max(ks, pop.settled(ts) if pop.key_rpm > 0 else 0.0)`
        if pop.key_rpm > 0.0 and pop.first_ts:
            x = (ts - pop.first_ts) / 43_200_000
            y = pop.learned / 300
            x = (x if x < 1.0 else 1.0) * (y if y < 1.0 else 1.0) if x > 0.0 else 0.0
            if x > trust:
                trust = x
        if vol is not None:
            vol *= trust
        if cost is not None:
            cost *= trust
    qh = base.qh  # `base.quiet_hour(ts)`, its per-hour cache read here
    quiet = qh[1] if qh[0] == ts // 3_600_000 else base.quiet_hour(ts)
    if quiet:
        rest += (("off_hours", offhours_signal(c60)),)
    c_score, ev.chain_reason = chain.score(ts) if chain is not None else (0.0, "")
    ident = identity_signals(ev) if ev.w else {}
    p = 0.0
    prob = st.prob
    behaviour = None
    if prob is not None:
        behaviour = _behaviour(vol, cost, rest)
        if (p := probation_signal(share := prob.share(ts, st.c10), behaviour)) > 0:
            ident["probation"] = p
    x = (ts - ev.start_ts) / 60_000
    dur_min = x if x > 1.0 else 1.0
    if ident or ev.new16 or (ev.models and not st.flags & 1):
        if behaviour is None:
            behaviour = _behaviour(vol, cost, rest)
        risk, signals, ev.ident = _fuse(ident, behaviour, c_score, ev, not st.flags & 1, exp_rpm, dur_min)
    else:  # `_fuse` without identity signals, new networks or a blind model shift
        # `noisy_or` of all and of the non-volume signals in one pass, in the dict's order; a
        # signal at 0 multiplies by 1.0 and is not recorded, so only positive ones are visited.
        p_all = 1.0
        signals = {}
        if vol is not None and vol > 0.0:
            p_all *= 1.0 - (vol if vol < 1.0 else 1.0) * W_VOLUME
            signals["volume"] = round(vol * W_VOLUME, 3)
        if cost is not None and cost > 0.0:
            p_all *= 1.0 - (cost if cost < 1.0 else 1.0) * W_COST
            signals["cost"] = round(cost * W_COST, 3)
        p_rich = 1.0
        for k, v in rest:
            if v > 0.0:
                w = BEHAVIOUR_W[k]
                f = 1.0 - (v if v < 1.0 else 1.0) * w
                p_all *= f
                p_rich *= f
                signals[k] = round(v * w, 3)
        ident_risk = 1.0 - (1.0 - c_score)  # `identity_risk({}, c_score)`
        risk = 1.0 - (1.0 - ident_risk) * (1.0 - (1.0 - p_all))
        if c_score < 0.5:
            cap = 0.5 if 1.0 - p_rich >= 0.5 else 0.35
            if cap < risk:
                risk = cap
        if c_score > 0.0:
            signals["kill_chain"] = round(c_score, 3)
        ev.ident = ident_risk
    ev.risk = risk
    ev.sig = signals
    if risk < self.alert_min or ts < st.suppress_until:
        return
    if risk < ev.reported + 0.03 and ts - ev.last_report < 600_000:
        return
    ev.reported = max(ev.reported, risk)
    ev.last_report = ts
    impact = max(ev.novel_cost, ev.cost - exp_cpm * dur_min)
    detail = st.behaviour(ts, exp_rpm, exp_cpm, base, text=False)[1]  # the same inputs: the same reasons
    if quiet:
        detail["off_hours"] = "activity outside the key's usual working hours"
    if p > 0:
        detail["probation"] = (f"{share:.0%} of recent requests from a network on probation (accepted into the baseline "
                               f"{prob.age_days(ts):.0f} days ago without alerts, not yet trusted)")
    ctx.report(Finding(
        kind=KIND, provider=provider, key_id=key_id, project=project, ts_ms=ts, started_at_ms=ev.start_ts,
        score=risk, reasons=reasons(ev, why_text(detail), signals), cost_impact_usd=max(0.0, impact), severity=severity(risk),
        details={"signals": signals, "coverage": st.coverage(), "settled": round(base.settled(ts), 2)}))


def close_window(self: KeyTheftDetector, st: KeyState, provider: str, key_id: str, project: str | None, ctx: Context, ts: int,
                 pop: PopBaseline | None = None) -> None:
    # Hot (once per busy key-minute, most of them with one or two requests): helpers are inlined
    # here with the same arithmetic, and the expected rate is only computed where it is used.
    # Event times are big ints (slow arithmetic): the window's last millisecond is computed once.
    win_req, win_min = st.win_req, st.win_min
    if win_min >= 0 and win_req > 0:
        base = st.base
        end = (win_min + 1) * 60_000
        last = end - 1
        ev = st.ev
        protected = ev is not None and (ev.ident >= self.protect_min or ev.reported > 0.0)
        sig = 0.0
        nets = -1
        ks = exp = -1.0
        if win_req >= HST_MIN_REQUESTS:  # one multivariate score per busy key-minute
            exp, exp_cpm = base.expected(last)
            n = win_req
            nets = st.nets_active(end)
            qh = base.qh  # `base.quiet_hour(last)`, its per-hour cache read here
            quiet = qh[1] if qh[0] == win_min // 60 else base.quiet_hour(last)
            x = (squash_log2(n / exp), squash_log2(st.win_cost / exp_cpm), st.win_exp / n,
                 min(1.0, st.win_err / n), st.win_novel / n, min(1.0, nets / 8.0), 1.0 if quiet else 0.0,
                 squash_log2(math.exp(base.log_ratio)))  # in `FEATURES` order
            ks = base.settled(end)
            sig = self.model.score_learn_vec(x, not protected and ks > 0.2)[1]
        st.hst = sig
        if not protected:
            if nets < 0:
                r = st.recent16  # `st.nets_active(end)`: usually one network, active
                nets = len(r) // 2
                if nets and min(r[1::2]) < end - 300_000:
                    nets = st.nets_active(end)
            conc = base.conc * 0.995
            if conc < nets:  # `max(conc × 0.995, nets)`: the usual networks at once, slowly forgotten
                conc = float(nets)
            base.conc = conc
            if project is not None:
                if ks < 0.0:
                    ks = 0.0
                    if base.first_ts:  # `base.settled(end)`
                        x = (end - base.first_ts) / 86_400_000
                        if x > 0.0:
                            y = base.active_min / 120
                            ks = (x if x < 1.0 else 1.0) * (y if y < 1.0 else 1.0)
                if ks >= 0.5:
                    if pop is None:
                        pop = self._pop(project, provider)
                    pop.key_rpm += 0.02 * (2.0 * base.mean_rpm - pop.key_rpm)
        if ev is None:
            if exp < 0.0:  # `base.expected(last)[0]`, inlined
                hour = win_min // 60  # `last // 3_600_000`
                s = hour % 24 + (24 if (hour // 24 + 3) % 7 >= 5 else 0)  # `slot_of`
                mean = base.mean_rpm
                if base.slot_n[s]:
                    x = 0.0 if 0.0 > mean else mean
                    exp = base.slot_req[s]
                else:
                    x = base.cur_req / 60.0
                    exp = x = x if x > mean else mean
                x *= 0.2
                if x > exp:
                    exp = x
                if 0.003 > exp:
                    exp = 0.003
            c5, c60 = st.c5, st.c60  # `surge(c5, c60, exp)` is 0 below twice the expected counts
            vol = 0.0 if c5 < 2.0 * (exp * 5.0) and c60 < 2.0 * (exp * 60.0) else surge(c5, c60, exp)
            if sig > 0.5 or vol > 0.5 or (vol > 0.2 and st.prob is not None and st.prob.share(last, st.c10) >= 0.5):
                ev = st.open_evidence(last)
        if ctx.want_rows:  # `ctx.score(…)`, not built when nobody reads it (`keywatch replay`)
            ctx.scores.append(ScoreRow(last, provider, key_id, project, self.name,
                                       round(ev.risk, 4) if ev is not None else 0.0,
                                       {"hst": round(sig, 3) if sig else 0.0, "requests": win_req}))
        if ev is not None and not (ctx.book.open and ctx.book.is_open(KIND, provider, key_id, project, at_ms=ts)):
            if ev.reported == 0.0 and ts - ev.start_ts > ACCEPT_MS:
                st.accept_evidence(ts)  # unusual but never alarming for an hour: benign drift
            elif ts - ev.last_ts > EVIDENCE_TTL_MS:
                st.ev = None
    st.win_min = ts // 60_000  # `reset_window`, inlined
    st.win_req = st.win_exp = st.win_err = st.win_novel = 0
    st.win_cost = 0.0
