"""Key-theft (LLMjacking) detector: per-key baselines, signals, fusion, one alert per incident.

Per event (score before learn): the caller's identity is checked against the key's history and
its project's (a new key borrows the project's), decayed request/spend/error counters are
compared with the key's seasonal baseline, audit calls advance the kill chain. Only keys with
something unusual carry `Evidence`; their risk is fused and reported as a `key_theft` finding.
Once per key-minute the window's features go through a HalfSpaceTrees model (calibrated by
tail probability) and a score row is emitted (`keytheft_window`). Nothing is learned from a key
while it is suspicious or has an open incident, so the attacker's traffic never becomes "normal";
what is accepted for lack of alerts stays on probation (`keytheft_probation`): low trust, and a
surge it carries is new-caller evidence, so a trickle cannot train the baseline to hide an attack.

>>> from keywatch.models.core import DetectionCore
>>> from keywatch.models.events import UsageEvent
>>> core = DetectionCore([KeyTheftDetector()])
>>> t0 = 1_793_577_600_000
>>> ev = [UsageEvent(event_id=f"e{i}", ts=t0 + i * 60_000, provider="openai", key_id="k", project="p",
...                  model="gpt-4o-mini", source_ip="34.1.2.3", country="US", user_agent="openai-python/1.50.0")
...       for i in range(3000)]
>>> _ = core.process(ev)
>>> bad = [UsageEvent(event_id=f"x{i}", ts=t0 + 3000 * 60_000 + i * 2000, provider="openai", key_id="k",
...                   project="p", model="gpt-4", source_ip=f"45.{i}.9.9", country=["RU", "CN", "BR"][i % 3],
...                   user_agent="python-requests/2.31.0") for i in range(12)]
>>> a = core.process(bad).alerts[0]
>>> a.kind, a.severity, a.reasons[0]
('key_theft', 'high', '1 request from 1 new IP in 1 new network and 1 new country (RU)')
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from keywatch.models.calibration import WindowModel
from keywatch.models.core import Batch, Context
from keywatch.models.features import KeyBaseline, PopBaseline, log_ratio
from keywatch.models.keytheft_identity import identity_novelty, pop_learn
from keywatch.models.keytheft_signals import Evidence, reasons  # noqa: F401  (Evidence: re-exported)
from keywatch.models.keytheft_state import PROBE_CODES, T5, T10, T60, KeyState, dump_state, load_state  # noqa: F401
from keywatch.models.keytheft_window import ACCEPT_MS, EVIDENCE_TTL_MS, HST_MIN_REQUESTS, KIND, assess, close_window  # noqa: F401
from keywatch.models.killchain import CHAIN_ACTIONS, ChainLinks, ChainState
from keywatch.models.netnovelty import _MODEL_CACHE, model_info

_exp = math.exp


class KeyTheftDetector:
    name = "key_theft"

    def __init__(self, *, alert_min: float = 0.4, idle_expire_ms: int = 7 * 86_400_000, hst_seed: int = 42,
                 protect_min: float = 0.3) -> None:
        self.alert_min = alert_min
        self.protect_min = protect_min
        self.idle_expire_ms = idle_expire_ms
        self.keys: dict[tuple[str, str], KeyState] = {}
        self.pops: dict[str, PopBaseline] = {}
        self.chains: dict[str, ChainState] = {}
        self.links = ChainLinks()  # principal → key, kill-chain source addresses
        self.model = WindowModel(seed=hst_seed)
        self.restored: dict[tuple[str, str], str] = {}  # (provider, key) → blob, loaded on first sight
        self.last_sweep = 0

    @classmethod
    def from_settings(cls, settings) -> "KeyTheftDetector":
        return cls(alert_min=getattr(settings, "keytheft_alert_min_score", 0.4),
                   idle_expire_ms=int(settings.key_idle_expire_s * 1000))

    # --- state -------------------------------------------------------------------------------
    def _state(self, provider: str, key_id: str, project: str | None) -> KeyState:
        k = (provider, key_id)
        st = self.keys.get(k)
        if st is None:
            blob = self.restored.pop(k, None)
            st = load_state(blob) if blob else KeyState(KeyBaseline(provider, project))
            self.keys[k] = st
        return st

    def _pop(self, project: str | None, provider: str) -> PopBaseline:
        name = project or f"provider:{provider}"
        p = self.pops.get(name)
        if p is None:
            p = self.pops[name] = PopBaseline()
        return p

    # --- processing --------------------------------------------------------------------------
    def process(self, batch: Batch, ctx: Context) -> None:
        # Idle keys are swept every 10 minutes of event time, at the first event past the mark
        # (not at batch end), so the state each event meets does not depend on batch cuts.
        if batch.audit:
            stream = heapq.merge(batch.usage, batch.audit, key=lambda e: e.ts_ms)
            for e in stream:
                if e.ts_ms - self.last_sweep >= 600_000:
                    self._sweep(ctx, e.ts_ms)
                if e.__class__.__name__ == "AuditEvent":
                    self._audit(e, ctx)
                else:
                    self._usage(e, ctx)
        else:
            usage = self._usage
            for e in batch.usage:
                if e.ts_ms - self.last_sweep >= 600_000:
                    self._sweep(ctx, e.ts_ms)
                usage(e, ctx)

    def _usage(self, e, ctx: Context) -> None:
        ts = e.ts_ms
        provider, key_id, project = e.provider, e.key_id, e.project
        st = self.keys.get((provider, key_id))
        if st is None:
            st = self._state(provider, key_id, project)
        base = st.base
        pop = self.pops.get(project or "provider:" + provider)
        if pop is None:
            pop = self._pop(project, provider)
        if st.win_min != ts // 60_000:
            self._close_window(st, provider, key_id, project, ctx, ts)
        fam = _MODEL_CACHE.get(e.model) or model_info(e.model)
        cost = e.cost_usd or 0.0
        status = e.status
        err = e.error_code is not None or (status is not None and status >= 400)  # `e.is_error`, inlined
        probe = err and (e.error_code in PROBE_CODES or (status in (400, 401, 403, 404)))
        requests = e.requests
        t_last = st.t_last  # `st.count(ts, requests, cost, fam[2], probe)`, inlined
        dt = ts - t_last
        if dt > 0 and t_last:
            f10, f60 = _exp(-dt / T10), _exp(-dt / T60)
            st.c5 = st.c5 * _exp(-dt / T5) + requests
            st.c10 = st.c10 * f10 + requests
            st.err10 *= f10
            st.c60 = st.c60 * f60 + requests
            st.k60 = st.k60 * f60 + cost
            st.e60 *= f60
            st.t_last = ts
        else:
            if ts > t_last:
                st.t_last = ts
            st.c5 += requests
            st.c10 += requests
            st.c60 += requests
            st.k60 += cost
        if fam[2]:
            st.e60 += requests
        if probe:
            st.err10 += 1
        if e.input_tokens or e.output_tokens:
            st.flags |= 2
        ev = st.ev
        n_items = ev.n_items if ev is not None else 0
        best, items = identity_novelty(st, pop, ev, ts, e.source_ip, e.country, e.user_agent, e.region, e.model)
        ev = st.ev
        if st.prob is not None:  # networks on probation: count their share of the key's traffic
            st.prob.observe(ts, items[2][1] if items and items[0][0] == "ips" else -1, requests, base.ids.n16.vals)
            if not len(st.prob):
                st.prob = None
        chains = self.chains
        chain = (chains.get(key_id) or (chains.get(e.principal) if e.principal else None)) if chains else None
        if e.principal is not None or (chain is None and best > 0.25 and self.links.by_ip):
            chain = self.links.usage(e, ts, chain, best)  # learn principal → key; a chain from this address
        if chain is not None:
            chain.invoke(ts)
            if chain.active(ts) and ev is None:
                ev = st.open_evidence(ts)
        if probe and ev is None and st.err10 >= 3:
            ev = st.open_evidence(ts)
        protected = ev is not None and (ev.ident >= self.protect_min or ev.reported > 0)
        if ev is not None:
            ev.req += requests
            ev.cost += cost
            if best > 0.25:
                ev.novel_req += requests
                ev.novel_cost += cost
                ev.last_ts = ts
            code = ""
            if probe:
                code = e.error_code or str(e.status)
                ev.errors[code] = ev.errors.get(code, 0) + 1
                ev.last_ts = ts
            # Assess on new evidence, on the first errors, else at most every 5 s of event time.
            if ev.n_items != n_items or (probe and ev.errors[code] <= 5) or ts - ev.last_calc >= 5_000 or not ev.last_calc:
                self._assess(st, provider, key_id, project, ts, ctx, chain)
        st.win_req += requests
        st.win_cost += cost
        if fam[2]:
            st.win_exp += requests
        if err:
            st.win_err += 1
        if best > 0.25:
            st.win_novel += requests
        ev = st.ev
        if protected or (ev is not None and (ev.ident >= self.protect_min or (
                ctx.book.open and ctx.book.is_open(KIND, provider, key_id, project, at_ms=ts)))):
            base.skip_to(ts)
            return
        base.learn_event(ts, requests, cost, fam[2], err, log_ratio(e.input_tokens, e.output_tokens))
        if ev is None or ev.ident == 0.0:  # new callers are quarantined until accepted
            st.learn_items(items, ts)
        pop_learn(pop, items, ts, requests)

    def _audit(self, e, ctx: Context) -> None:
        who = e.key_id or self.links.key_for(e.provider, e.principal) or e.principal
        if not who:
            return
        ts = e.ts_ms
        st = self._state(e.provider, who, e.project)
        pop = self._pop(e.project, e.provider)
        best, items = identity_novelty(st, pop, st.ev, ts, e.source_ip, e.country, e.user_agent, e.region, None)
        if e.action in CHAIN_ACTIONS:
            chain = self.chains.get(who)
            if chain is None:
                chain = self.chains[who] = ChainState()
            chain.audit(e.action, ts, best > 0.25)
            if e.principal and who != e.principal:
                self.chains[e.principal] = chain
            if e.source_ip:
                self.links.note_ip(e.source_ip, chain, ts)
            ev = st.ev or st.open_evidence(ts)
            ev.last_ts = ts
            self._assess(st, e.provider, who, e.project, ts, ctx, chain)
        elif st.ev is not None:
            self._assess(st, e.provider, who, e.project, ts, ctx, None)
        if st.ev is None or st.ev.ident == 0.0:
            st.learn_items(items, ts)

    _assess = assess
    _close_window = close_window

    def _sweep(self, ctx: Context, now: int) -> None:
        """Expire idle keys (their baseline is emitted for `key_baselines`) and stale chains."""
        self.last_sweep = now
        for k in [k for k, s in self.keys.items() if now - s.base.last_ts > self.idle_expire_ms and s.base.last_ts]:
            st = self.keys.pop(k)
            ctx.emit("key_baselines", {"provider": k[0], "key_id": k[1], "project": st.base.project or "",
                                       "last_ts": st.base.last_ts, "saved_at": now, "settled": st.base.settled(now),
                                       "state": dump_state(st)})
        for who in [w for w, c in self.chains.items() if not c.active(now) and now - c.invoke_ts > 7_200_000]:
            del self.chains[who]
        self.links.prune(now)

    def __setstate__(self, state: dict) -> None:  # snapshots from before principal links have none
        self.__dict__.update({"links": ChainLinks(), **state})

    # --- API hooks ---------------------------------------------------------------------------
    def restore(self, rows: list[dict[str, Any]]) -> int:
        """Load `key_baselines` rows (latest per key); each is restored when its key is next seen."""
        for r in rows:
            self.restored[(r["provider"], r["key_id"])] = r["state"]
        return len(rows)

    def describe_key(self, key_id: str) -> dict[str, Any]:
        st = next((s for (p, k), s in self.keys.items() if k == key_id), None)
        if st is None:
            return {}
        ev = st.ev
        return {"risk": round(ev.risk, 4) if ev else 0.0, "baseline": st.base.summary(),
                "settled": round(st.base.settled(st.base.last_ts), 3), "coverage": st.coverage(),
                "evidence": None if ev is None else {
                    "since": ev.start_ts, "signals": ev.sig, "reasons": reasons(ev, {}, ev.sig),
                    "novel_requests": ev.novel_req, "cost_usd": round(ev.cost, 4)}}

    def on_feedback(self, alert, label: str, until_ms: int | None) -> None:
        """`not_anomaly`/`planned_activity`: accept what was new into the baseline, stay quiet until `until_ms`."""
        if alert.kind != KIND or label not in ("not_anomaly", "planned_activity"):
            return
        st = self.keys.get((alert.provider, alert.key_id))
        if st is None:
            return
        st.accept_evidence(alert.detected_at_ms, probation=False)  # vetted by an analyst: trusted
        st.suppress_until = max(st.suppress_until, until_ms or alert.detected_at_ms + 86_400_000)
