"""Gateway bypass: a gateway-fronted key used directly at the provider (`key_theft`).

When a key is normally reached through a gateway (LiteLLM, …), every provider-reported request
for it should also appear in the gateway's logs. Usage the provider bills for that the gateway
never saw means someone holds the provider key itself: it was used outside the gateway.

Per key and per time bucket (`bucket_ms`) the detector adds up gateway-seen requests/tokens
(`source="gateway"`) and provider-reported ones (`source="provider_usage"`). Gateway key ids
are hashed virtual keys, provider ones are key ids: a mapping (YAML, `gateway key hash →
provider key_id`) joins them, and keys that already share an id match directly. A bucket is
judged only once the event-time watermark is `lag_ms` past its end (gateway logs arrive late
too; provider usage buckets arrive later still and are judged on arrival when the bucket is
settled), and only if the key was gateway-fronted by then. Provider buckets must be no wider
than `bucket_ms` (the pollers use 1-minute buckets).

>>> from keywatch.models.core import DetectionCore
>>> from keywatch.models.events import UsageEvent
>>> det = GatewayBypassDetector(key_map={"gwhash": "key_A"}, lag_ms=0)
>>> gw = [UsageEvent(event_id=f"g{i}", ts=1795622400000 + i, provider="litellm", key_id="gwhash",
...                  model="m", source="gateway") for i in range(10)]
>>> prov = UsageEvent(event_id="p", ts=1795622400000, provider="openai", key_id="key_A", model="m",
...                   requests=60, source="provider_usage")
>>> later = UsageEvent(event_id="z", ts=1795626000000 + 1, provider="litellm", key_id="gwhash", model="m", source="gateway")
>>> out = DetectionCore([det]).process(gw + [prov, later])
>>> [(a.kind, a.key_id, a.severity) for a in out.alerts]
[('key_theft', 'key_A', 'high')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keywatch.models.alerts import Finding
from keywatch.models.core import Batch, Context
from keywatch.models.events import format_ts
from keywatch.models.gateway_buckets import B_GATEWAY, B_COST, B_PROVIDER, REQ as _REQ, TOK as _TOK
from keywatch.models.gateway_buckets import (drop_before, first_start, from_wide, last_start, merge, merge_sources,
                                              slot, take)

GATEWAY, PROVIDER = "gateway", "provider_usage"
_NEVER = 1 << 62


def load_key_map(path: Path | None) -> dict[str, str]:
    """YAML `{gateway_key_hash: provider_key_id}` (optionally under a top-level `keys:`)."""
    if path is None:
        return {}
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    data = data.get("keys", data) if isinstance(data, dict) else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of gateway key hash → provider key id")
    return {str(k): str(v) for k, v in data.items()}


class GatewayBypassDetector:
    """Detector protocol (models/core.py). Plain dicts only, so it pickles with the core."""

    name = "gateway_bypass"

    def __init__(self, key_map: dict[str, str] | None = None, *, bucket_ms: int = 3_600_000,
                 lag_ms: int = 1_800_000, min_requests: int = 5, min_tokens: int = 20_000,
                 tolerance: float = 0.1, retention_ms: int = 3 * 86_400_000) -> None:
        self.key_map = dict(key_map or {})
        self.bucket_ms = bucket_ms
        self.lag_ms = lag_ms
        self.min_requests = min_requests
        self.min_tokens = min_tokens
        self.tolerance = tolerance  # gateway retries and rounding: small gaps are not bypass
        self.retention_ms = retention_ms
        self.fronted: dict[str, int] = {}  # provider key → first gateway event time
        # key → live buckets [start, value, …] by start; a value is gateway counts (an int), or
        # [gateway counts, provider counts, cost, first provider event time, provider, project]
        # once the provider has reported (models/gateway_buckets.py)
        self.buckets: dict[str, list] = {}
        self.settled: dict[str, bytes] = {}  # key → its settled buckets, packed records by start
        self.settled_format = 2  # a format byte, then records (session 20's snapshots: wide records only)
        self.labels: list = [None]  # the records' (provider, project) pairs; 0: none
        self.label_ix: dict[tuple, int] = {}
        self.pending: set[tuple[str, int]] = set()
        self.now = 0  # event-time clock: the highest event time seen
        self.next_due = _NEVER  # earliest settle time among pending buckets
        self.last_prune = 0

    @classmethod
    def from_settings(cls, settings) -> "GatewayBypassDetector":
        return cls(load_key_map(settings.gateway_key_map_file), bucket_ms=settings.gateway_bypass_bucket_s * 1000,
                   lag_ms=int(settings.gateway_bypass_lag_s * 1000), min_requests=settings.gateway_bypass_min_requests,
                   retention_ms=settings.gateway_bypass_retention_s * 1000)

    def process(self, batch: Batch, ctx: Context) -> None:
        # Event time, event by event: the clock is the highest event time this detector has seen,
        # and a bucket is judged at the first event that moves it past the bucket's settle time
        # (not at batch end), so findings do not depend on how the stream is cut into batches.
        bucket_ms, buckets, pending = self.bucket_ms, self.buckets, self.pending
        key_map, fronted, lag_ms = self.key_map, self.fronted, self.lag_ms
        now, next_due, last_prune = self.now, self.next_due, self.last_prune  # mirrors of self.*
        pruned_at = last_prune
        # One comparison per event: `act_at` is the earliest event time that needs a judgement or a prune.
        act_at = min(next_due, last_prune + bucket_ms)
        late: set[tuple[str, int]] = set()
        for e in batch.usage:
            ts = e.ts_ms
            if ts > now:
                now = ts  # `self.now` is set after the loop: nothing in it reads the attribute
            src = e.source
            if src == GATEWAY:
                key = e.key_id
                key = key_map.get(key, key)
                if key not in fronted:
                    fronted[key] = ts
                start = ts - ts % bucket_ms
                n = e.requests + ((e.input_tokens + e.output_tokens) << _TOK)
                kb = buckets.get(key)
                if kb is not None and kb[-2] == start:  # the usual bucket: the last one
                    i = len(kb) - 1
                else:
                    kb, i = self._open(key, start)
                v = kb[i]
                if v.__class__ is int:
                    kb[i] = v + n
                else:
                    v[B_GATEWAY] += n
            elif src == PROVIDER:
                key = e.key_id
                start = ts - ts % bucket_ms
                kb = buckets.get(key)
                if kb is not None and kb[-2] == start:
                    i = len(kb) - 1
                else:
                    kb, i = self._open(key, start)
                v = kb[i]
                if v.__class__ is int:
                    v = kb[i] = [v, 0, 0.0, ts, e.provider, e.project]
                v[B_PROVIDER] += e.requests + ((e.input_tokens + e.output_tokens) << _TOK)
                v[B_COST] += e.cost_usd or 0.0
                k = (key, start)
                due = start + bucket_ms + lag_ms
                if due <= now:  # a late bucket: judged on arrival, once this batch has all of it
                    late.add(k)
                    continue
                pending.add(k)
                if due < next_due:
                    next_due = self.next_due = due
                    if due < act_at:
                        act_at = due
            else:
                continue
            if now >= act_at:
                if now >= next_due:
                    self._judge_due(now, ctx)
                    next_due = self.next_due
                if now - last_prune >= bucket_ms:
                    self._prune(now)
                    last_prune = self.last_prune
                act_at = min(next_due, last_prune + bucket_ms)
        self.now = now
        if late:
            for k in sorted(late):
                if self._value(k).__class__ is list:  # not pruned meanwhile
                    self._judge(k, now, ctx)
        if last_prune != pruned_at:  # hourly, after every judgement of the batch
            self._settle(now)

    def _judge_due(self, now: int, ctx: Context) -> None:
        settle = self.bucket_ms + self.lag_ms
        for k in sorted(k for k in self.pending if now >= k[1] + settle):
            self.pending.discard(k)
            self._judge(k, now, ctx)
        self.next_due = min((k[1] + settle for k in self.pending), default=_NEVER)

    def __setstate__(self, state: dict) -> None:  # snapshots from before the event-time clock
        self.__dict__.update(state)
        self.__dict__.setdefault("now", 0)
        self.__dict__.setdefault("last_prune", 0)
        self.__dict__.setdefault("next_due", min((k[1] + self.bucket_ms + self.lag_ms for k in self.pending), default=_NEVER))
        for name, empty in (("settled", {}), ("labels", [None]), ("label_ix", {})):
            self.__dict__.setdefault(name, empty)
        if state.get("settled_format") != 2:
            self.settled, self.settled_format = {key: from_wide(blob) for key, blob in self.settled.items()}, 2
        if "buckets" not in state:  # older snapshots: a (key, bucket) dict per source
            self.buckets = merge_sources(state.get("gateway", {}), state.get("provider", {}))
            for name in ("gateway", "provider"):
                self.__dict__.pop(name, None)
        elif self.buckets and next(iter(self.buckets.values())).__class__ is dict:  # a dict per key (02ffe9a)
            self.buckets = {key: [x for s in sorted(kb) for x in (s, kb[s])] for key, kb in self.buckets.items()}

    def _bucket(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def _judge(self, k: tuple[str, int], now: int, ctx: Context) -> None:
        key, start = k
        end = start + self.bucket_ms
        first_gw = self.fronted.get(key)
        if first_gw is None or first_gw >= end:
            return  # not (yet) a gateway-fronted key: direct use is its normal path
        gw, p, p_cost, p_first, p_provider, p_project = self._value(k)
        gw_req, gw_tok = gw & _REQ, gw >> _TOK
        p_req, p_tok = p & _REQ, p >> _TOK
        slack = 1.0 + self.tolerance
        miss_req = max(0.0, p_req - gw_req * slack)
        miss_tok = max(0.0, p_tok - gw_tok * slack)
        req_hit = miss_req >= self.min_requests and miss_req >= 0.2 * p_req
        tok_hit = miss_tok >= self.min_tokens and miss_tok >= 0.2 * p_tok
        if not (req_hit or tok_hit):
            return
        frac = max(miss_req / p_req if p_req else 0.0, miss_tok / p_tok if p_tok else 0.0)
        significant = frac >= 0.5 or miss_req >= 10 * self.min_requests
        window = f"{format_ts(start)[:16]}–{format_ts(end)[11:16]} UTC"
        reasons = [
            # Raw gaps in the text (the tolerance only decides whether to alert).
            f"used outside the gateway: {max(0, p_req - gw_req)} of {p_req} provider-reported "
            f"requests ({max(0, p_tok - gw_tok)} of {p_tok} tokens) in {window} never passed through the gateway",
            f"gateway saw {gw_req} requests / {gw_tok} tokens for this key in that window",
        ]
        ctx.report(Finding(
            kind="key_theft", provider=p_provider, key_id=key, project=p_project,
            ts_ms=max(now, p_first), started_at_ms=start,
            score=min(0.99, 0.6 + 0.35 * frac) if significant else 0.5,
            severity="high" if significant else "medium", reasons=reasons,
            cost_impact_usd=round(p_cost * frac, 4), incident_key="gateway_bypass",
            details={"root_cause": "gateway_bypass", "bucket_start": format_ts(start),
                     "provider_requests": p_req, "gateway_requests": gw_req,
                     "provider_tokens": p_tok, "gateway_tokens": gw_tok,
                     "unmatched_fraction": round(frac, 4)},
        ))

    def _prune(self, now: int) -> None:
        # Bounded state: buckets far behind the watermark can no longer be judged usefully.
        self.last_prune = now
        cutoff = now - self.retention_ms
        for key, kb in list(self.buckets.items()):
            if kb[0] < cutoff:  # by start: the old ones are a prefix
                j = 2
                while j < len(kb) and kb[j] < cutoff:
                    j += 2
                if j == len(kb):
                    del self.buckets[key]
                else:
                    del kb[:j]
        for key, blob in list(self.settled.items()):
            if last_start(blob) < cutoff:
                del self.settled[key]
            elif first_start(blob) < cutoff:
                self.settled[key] = drop_before(blob, cutoff)
        self.pending.difference_update([k for k in self.pending if k[1] < cutoff])

    def _value(self, k: tuple[str, int]):
        """Bucket `k`'s value, None if it has none."""
        kb = self.buckets.get(k[0])
        i = slot(kb, k[1]) if kb else -1
        return kb[i + 1] if i >= 0 else None

    def _open(self, key: str, start: int) -> tuple[list, int]:
        """(key's live list, the index of bucket `start`'s value in it): the bucket unpacked if
        it is settled, new (value 0) if it has none."""
        kb = self.buckets.get(key)
        if kb is None:
            kb = self.buckets[key] = []
        i = slot(kb, start)
        if i >= 0:
            return kb, i + 1
        v = 0
        blob = self.settled.get(key)
        if blob is not None and start <= last_start(blob):  # a late event for a settled bucket
            rest, got = take(blob, start, self.labels)
            if got is not None:
                v = got
                if rest:
                    self.settled[key] = rest
                else:
                    del self.settled[key]
        i = -1 - i
        kb[i:i] = [start, v]
        return kb, i + 1

    def _settle(self, now: int) -> None:
        """Pack the live buckets past their settle time (judged: a late event unpacks them)."""
        upto = now - self.bucket_ms - self.lag_ms  # a bucket starting ≤ this has settled
        pending, settled, labels, index = self.pending, self.settled, self.labels, self.label_ix
        for key, kb in list(self.buckets.items()):
            j = 0
            while j < len(kb) and kb[j] <= upto and (key, kb[j]) not in pending:
                j += 2
            if j:
                items = list(zip(kb[:j:2], kb[1:j:2]))
                settled[key] = merge(settled.get(key, b""), items, labels, index)
                if j == len(kb):
                    del self.buckets[key]
                else:
                    del kb[:j]

    def describe_key(self, key_id: str) -> dict[str, Any] | None:
        if key_id not in self.fronted:
            return None
        return {"gateway_fronted_since": format_ts(self.fronted[key_id])}
