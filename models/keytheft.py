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
Keys idle for an hour keep their state packed until their next event (`keytheft_cold`: the
same state back, a sixth of the size), the bytes in a spill file on disk (models/spill.py).

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

import bisect
from operator import attrgetter
from typing import Any

from keywatch.models import caches
from keywatch.models.calibration import WindowModel
from keywatch.models.core import Batch, Context
from keywatch.models.features import KeyBaseline, PopBaseline
from keywatch.models.keytheft_cold import expired, idle_enough, pack, packed_last_ts, unpack
from keywatch.models.keytheft_identity import identity_novelty
from keywatch.models.keytheft_signals import Evidence, reasons  # noqa: F401  (Evidence: re-exported)
from keywatch.models.keytheft_state import PROBE_CODES, T5, T10, T60, KeyState, dump_state, load_state  # noqa: F401
from keywatch.models.keytheft_usage import usage, usage_events
from keywatch.models.keytheft_window import ACCEPT_MS, EVIDENCE_TTL_MS, HST_MIN_REQUESTS, KIND, assess, close_window  # noqa: F401
from keywatch.models.killchain import CHAIN_ACTIONS, ChainLinks, ChainState
from keywatch.models.spill import SpillDict

_TS = attrgetter("ts_ms")


class KeyTheftDetector:
    name = "key_theft"

    def __init__(self, *, alert_min: float = 0.4, idle_expire_ms: int = 7 * 86_400_000, hst_seed: int = 42,
                 protect_min: float = 0.3, cold_after_ms: int = 3_600_000) -> None:
        self.alert_min = alert_min
        self.protect_min = protect_min
        self.idle_expire_ms = idle_expire_ms
        self.cold_after_ms = cold_after_ms  # 0: never pack
        self.keys: dict[tuple[str, str], KeyState] = {}
        # idle keys' state, packed (models/keytheft_cold.py), on disk (models/spill.py)
        self.cold: SpillDict = SpillDict(packed_last_ts)
        self.cold_min = 1 << 62  # ≤ every packed key's baseline `last_ts` (but 0s): when to look for expiry
        self.pops: dict[str, PopBaseline] = {}
        self.chains: dict[str, ChainState] = {}
        self.links = ChainLinks()  # principal → key, kill-chain source addresses
        self.model = WindowModel(seed=hst_seed)
        self.restored: dict[tuple[str, str], str] = {}  # (provider, key) → blob, loaded on first sight
        self.last_sweep = 0

    # Cross-key state: project populations (borrowed by new keys), the one window model and its
    # calibrator, kill chains and principal links. A worker's partition cores share one set
    # (stream/partitions.py `PartitionCores.adopt`): split per partition, a new key borrowed
    # only its partition's share of its project, and the worker missed attacks on new keys
    # that `keywatch replay` catches (`keywatch eval scenarios --partitions 4`). Workers of one
    # group share their populations too, over Kafka (models/keytheft_share.py, stream/popshare.py).
    SHARED = ("pops", "model", "chains", "links")

    def share_from(self, other: "KeyTheftDetector") -> None:
        """Use `other`'s cross-key state from now on (this detector's own is dropped)."""
        for name in self.SHARED:
            setattr(self, name, getattr(other, name))

    @classmethod
    def from_settings(cls, settings) -> "KeyTheftDetector":
        return cls(alert_min=getattr(settings, "keytheft_alert_min_score", 0.4),
                   idle_expire_ms=int(settings.key_idle_expire_s * 1000),
                   cold_after_ms=int(getattr(settings, "key_cold_after_s", 3600.0) * 1000))

    # --- state -------------------------------------------------------------------------------
    def _state(self, provider: str, key_id: str, project: str | None) -> KeyState:
        k = (provider, key_id)
        st = self.keys.get(k)
        if st is None:
            packed = self.cold.pop(k, None)
            if packed is not None:
                st = unpack(packed)
            else:
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
        # Audit events go between the usage events, in time order (usage first on equal times).
        events, i = batch.usage, 0
        for e in batch.audit:
            j = bisect.bisect_right(events, e.ts_ms, lo=i, key=_TS)
            if j > i:
                usage_events(self, events[i:j] if i or j < len(events) else events, ctx)  # sweeps the same way
                i = j
            if e.ts_ms - self.last_sweep >= 600_000:
                self._sweep(ctx, e.ts_ms)
            self._audit(e, ctx)
        if i < len(events):
            usage_events(self, events[i:] if i else events, ctx)

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

    _usage = usage  # one event; batches go through `usage_events`
    _assess = assess
    _close_window = close_window

    def _sweep(self, ctx: Context, now: int) -> None:
        """Expire idle keys (their baseline is emitted for `key_baselines`) and stale chains; drop
        the callers cached by keys not seen this hour (`KeyState.fresh`, `last_items`: only this
        hour's are ever consulted), ≈ 1 KB per key with a few callers; pack the state of keys
        idle for `cold_after_ms` (models/keytheft_cold.py)."""
        self.last_sweep = now
        hour, idle, cold, expire, after = now // 3_600_000, [], [], self.idle_expire_ms, self.cold_after_ms
        caches.hourly(hour)  # module-level caches let go of idle keys' callers (models/caches.py)
        keys, packed = self.keys, self.cold
        for k, s in keys.items():
            last, fresh = s.last_items, s.fresh
            if last and last[0] < hour:
                s.last_items = ()
            if fresh is not None and fresh[0] < hour:
                s.fresh = None
            if now - s.base.last_ts > expire and s.base.last_ts:
                idle.append(k)
            elif after and idle_enough(s, now, after):
                cold.append(k)
        if packed and now - self.cold_min > expire:  # some packed key may be due: look at each
            self.cold_min, due = expired(packed.heads(), now, expire)
            idle += due
        for k in cold:
            st = keys.pop(k)
            packed[k] = pack(st)
            if 0 < st.base.last_ts < self.cold_min:
                self.cold_min = st.base.last_ts
        for k in idle:
            st = keys.pop(k) if k in keys else unpack(packed.pop(k))
            ctx.emit("key_baselines", {"provider": k[0], "key_id": k[1], "project": st.base.project or "",
                                       "last_ts": st.base.last_ts, "saved_at": now, "settled": st.base.settled(now),
                                       "state": dump_state(st)})
        for who in [w for w, c in self.chains.items() if not c.active(now) and now - c.invoke_ts > 7_200_000]:
            del self.chains[who]
        self.links.prune(now)

    def __setstate__(self, state: dict) -> None:  # snapshots from before principal links have none
        self.__dict__.update({"links": ChainLinks(), "cold": {}, "cold_min": 1 << 62, "cold_after_ms": 3_600_000, **state})
        self.cold = SpillDict(packed_last_ts, self.cold)  # pickled as a plain dict

    # --- API hooks ---------------------------------------------------------------------------
    def restore(self, rows: list[dict[str, Any]]) -> int:
        """Load `key_baselines` rows (latest per key); each is restored when its key is next seen."""
        for r in rows:
            self.restored[(r["provider"], r["key_id"])] = r["state"]
        return len(rows)

    def tracked_keys(self) -> int:
        """Keys with state, unpacked or packed (the `keywatch_tracked_keys` gauge)."""
        return len(self.keys) + len(self.cold)

    def describe_key(self, key_id: str) -> dict[str, Any]:
        st = next((s for (p, k), s in self.keys.items() if k == key_id), None)
        if st is None:  # a packed key: read a copy, it stays packed
            st = next((unpack(self.cold[pk]) for pk in self.cold if pk[1] == key_id), None)
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
        k = (alert.provider, alert.key_id)
        if k not in self.keys and k not in self.cold:
            return
        st = self._state(*k, None)
        st.accept_evidence(alert.detected_at_ms, probation=False)  # vetted by an analyst: trusted
        st.suppress_until = max(st.suppress_until, until_ms or alert.detected_at_ms + 86_400_000)
