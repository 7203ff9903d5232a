"""The key-theft detector's per-usage-event step (`KeyTheftDetector._usage`), its hot path.

Per event, score before learn: close the key's previous minute (`close_window`), count the
call in the decayed counters, check the caller's identity (`identity_novelty`), advance the
kill chain, (re)assess open evidence, then learn the call into the key's baseline and its
project's, unless the key is suspicious or has an open incident.

Helpers are inlined here with the same arithmetic (`KeyState.count`, `KeyBaseline.learn_event`,
the shortcuts of `learn_items` and `pop_learn`). A caller whose items were all learned this
hour, with no eviction from the key's identity sets since (`KeyState.fresh`), is not new
and learning it again changes nothing: both checks are skipped; its network's activity is
still noted. Nothing here depends on where a batch is cut.

>>> from keywatch.models.core import DetectionCore
>>> from keywatch.models.events import UsageEvent
>>> from keywatch.models.keytheft import KeyTheftDetector
>>> det = KeyTheftDetector()
>>> ev = [UsageEvent(event_id=f"e{i}", ts=1_793_577_600_000 + i * 20_000, provider="openai", key_id="k",
...                  project="p", model="gpt-4o-mini", source_ip="34.1.2.3") for i in range(6)]
>>> _ = DetectionCore([det]).process(ev)
>>> st = det.keys[("openai", "k")]
>>> st.base.learned, st.win_req, len(st.fresh[1])      # one caller, learned once this hour
(6, 3, 1)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from keywatch.models.core import Context
from keywatch.models.keyids import MASK  # items: tagged values, the address's first (tag 0)
from keywatch.models.keytheft_identity import _IDENT, _ident_items, identity_novelty, pop_learn
from keywatch.models.keytheft_nets import touch16
from keywatch.models.keytheft_state import PROBE_CODES
from keywatch.models.keytheft_window import KIND, assess, close_window

if TYPE_CHECKING:
    from keywatch.models.keytheft import KeyTheftDetector

_log = math.log


def usage(self: KeyTheftDetector, e, ctx: Context) -> None:
    """One usage event (`usage_events` for a batch of them)."""
    usage_events(self, (e,), ctx)


def usage_events(self: KeyTheftDetector, events, ctx: Context) -> None:
    """Usage events in event-time order (the batch's, or one merged with audit events)."""
    keys, pops, chains, links, protect_min, book = self.keys, self.pops, self.chains, self.links, self.protect_min, ctx.book
    next_sweep = self.last_sweep + 600_000
    key_of = links.key_of
    for e in events:
        ts = e.ts_ms
        # Idle keys are swept every 10 minutes of event time, at the first event past the mark
        # (not at batch end), so the state each event meets does not depend on batch cuts.
        if ts >= next_sweep:  # `ts - last_sweep >= 600_000`
            self._sweep(ctx, ts)
            next_sweep = self.last_sweep + 600_000
        provider, key_id, project = e.provider, e.key_id, e.project
        st = keys.get((provider, key_id))
        if st is None:
            st = self._state(provider, key_id, project)
        base = st.base
        pop = pops.get(project or "provider:" + provider)
        if pop is None:
            pop = self._pop(project, provider)
        minute = ts // 60_000
        if st.win_min != minute:
            close_window(self, st, provider, key_id, project, ctx, ts, pop)
        ident = (e.source_ip, e.country, e.user_agent, e.region, e.model)
        hit = _IDENT.get(ident) or _ident_items(*ident)  # (network, checks, items, telemetry flag, expensive model)
        expensive = hit[4]
        cost = e.cost_usd or 0.0
        status = e.status
        err = e.error_code is not None or (status is not None and status >= 400)  # `e.is_error`, inlined
        probe = err and (e.error_code in PROBE_CODES or (status in (400, 401, 403, 404)))
        requests = e.requests
        # Float sums take it as a float (the same value): float-only arithmetic skips Python's
        # int → float coercion.
        req_f = 1.0 if requests == 1 else float(requests)
        st.count(ts, req_f, cost, expensive, probe)
        inp, out = e.input_tokens, e.output_tokens
        if inp or out:
            st.flags |= 2
        ev = st.ev
        n_items = ev.n_items if ev is not None else 0
        hour = minute // 60  # `ts // 3_600_000` (a small int: cheaper arithmetic)
        fresh = st.fresh
        if fresh is not None and fresh[0] == hour and hit[2] in fresh[1]:
            # A caller learned this hour, nothing evicted since: `identity_novelty` would find
            # nothing new; what it does besides is noted here (network telemetry, active network).
            best, items, net = 0.0, hit[2], hit[0]
            if hit[3]:
                st.flags |= 1
            if net is not None:
                r, n16 = st.recent16, net[2]  # `touch_net`, inlined, and `touch16`'s usual case
                st.recent16 = (n16, ts) if len(r) == 2 and r[0] == n16 else touch16(r, n16, ts)
        else:
            fresh = None
            best, items = identity_novelty(st, pop, ev, ts, e.source_ip, e.country, e.user_agent, e.region, e.model, hit)
            ev = st.ev
        if st.prob is not None:  # networks on probation: count their share of the key's traffic
            st.prob.observe(ts, items[2] & MASK if items and items[0] >> 32 == 0 else -1, requests, base.ids)
            if not len(st.prob):
                st.prob = None
        principal = e.principal
        chain = (chains.get(key_id) or (chains.get(principal) if principal else None)) if chains else None
        if principal is not None:  # `links.usage(e, ts, chain, best)`, inlined: learn principal → key, …
            if key_of.get((provider, principal)) != key_id:
                links.learn(provider, principal, key_id)
            if chain is None and best > 0.25 and e.source_ip:  # … and a chain from this address
                chain = links.chain_for_ip(e.source_ip, ts)
        elif chain is None and best > 0.25 and links.by_ip:
            chain = links.usage(e, ts, chain, best)
        if chain is not None:
            chain.invoke(ts)
            if chain.active(ts) and ev is None:
                ev = st.open_evidence(ts)
        if probe and ev is None and st.err10 >= 3.0:
            ev = st.open_evidence(ts)
        protected = ev is not None and (ev.ident >= protect_min or ev.reported > 0.0)
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
                assess(self, st, provider, key_id, project, ts, ctx, chain, pop)
        st.win_req += requests
        st.win_cost += cost
        if expensive:
            st.win_exp += requests
        if err:
            st.win_err += 1
        if best > 0.25:
            st.win_novel += requests
        ev = st.ev
        if protected or (ev is not None and (ev.ident >= protect_min or (
                book.open and book.is_open(KIND, provider, key_id, project, at_ms=ts)))):
            base.skip_to(ts)
            continue
        # `base.learn_event(ts, requests, cost, expensive, err, log_ratio(inp, out))`, inlined
        if not base.first_ts:
            base.first_ts = ts
        if ts > base.last_ts:
            base.last_ts = ts
        if hour != base.cur_hour:
            base._roll(hour)
        base.cur_req += req_f
        base.cur_cost += cost
        if minute != base.last_min:
            base.active_min += 1
            base.last_min = minute
        learned = base.learned
        # Ints divide as exactly as floats (one correctly rounded quotient), without the coercion.
        a = 1 / (learned + 1) if learned < 500 else 0.002  # ≥ 0.002 below 500: `max(0.002, …)`
        base.learned = learned + requests
        if expensive or base.exp_share:  # else 0 stays 0
            base.exp_share += a * ((1.0 if expensive else 0.0) - base.exp_share)
        if err or base.err_rate:
            base.err_rate += a * ((1.0 if err else 0.0) - base.err_rate)
        if inp or out:
            base.log_ratio += a * (_log((out + 1) / (inp + 1)) - base.log_ratio)
        if ev is None or ev.ident == 0.0:  # new callers are quarantined until accepted
            if fresh is not None and st.fresh is fresh:  # still fresh: `learn_items` would only note the caller
                last = st.last_items
                if last[1] is not items or last[0] != hour:
                    st.last_items = (hour, items)
            else:
                last = st.last_items
                if not (last and last[0] == hour and last[1] is items):  # `learn_items`' own shortcut
                    st.learn_items(items, ts)
        if pop.recent_hour != hour or items not in pop.recent or not pop.first_ts:  # `pop_learn`'s shortcut
            pop_learn(pop, items, ts, requests)
        else:
            pop.learned += requests
