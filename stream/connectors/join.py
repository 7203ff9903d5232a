"""Joins Bedrock invocation logs with CloudTrail records of the same call (`request_id`).

The invocation log has tokens and the model but no network context; CloudTrail has the access
key, `source_ip` and `user_agent` but no tokens. When both usage records of one request arrive,
one merged event goes on. The buffer is bounded (entries and wait time): a record whose partner
has not come in time, or that is pushed out by newer ones, is emitted on its own rather than
lost. Both records carry the same event id, so an un-joined pair still counts as one call.

>>> j = RequestJoin(max_wait_s=60, clock=lambda: 0.0)
>>> j.add({"kind": "usage", "request_id": "r", "source": "invocation_log", "key_id": "arn:x",
...        "principal": "arn:x", "input_tokens": 5})
[]
>>> [(e["key_id"], e["source_ip"], e["input_tokens"]) for e in j.add({"kind": "usage",
...   "request_id": "r", "source": "cloudtrail", "key_id": "AKIA1", "source_ip": "198.51.100.7"})]
[('AKIA1', '198.51.100.7', 5)]
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

JOINABLE = ("invocation_log", "cloudtrail")
# Fields CloudTrail knows better than the invocation log.
_NETWORK = ("source_ip", "user_agent", "country", "credential_type")


class RequestJoin:
    """A bounded, time-limited join buffer keyed by `request_id`. Not thread-safe."""

    def __init__(self, max_wait_s: float = 900.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait_s = max_wait_s
        self.max_entries = max_entries
        self.clock = clock
        self._pending: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self.joined = 0
        self.unjoined = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: dict) -> list[dict]:
        """Events ready to go on: the input itself, a merged pair, or evicted old entries."""
        rid = event.get("request_id")
        if event.get("kind") != "usage" or event.get("source") not in JOINABLE or not rid:
            return [event]
        held = self._pending.get(rid)
        if held is None:
            self._pending[rid] = (self.clock(), event)
            out = []
            while len(self._pending) > self.max_entries:  # bounded memory: oldest goes out alone
                out.append(self._pending.popitem(last=False)[1][1])
                self.unjoined += 1
            return out
        if held[1].get("source") == event.get("source"):
            return [event]  # a re-delivered copy; same event id, deduplicated downstream
        del self._pending[rid]
        self.joined += 1
        return [merge(held[1], event)]

    def expire(self) -> list[dict]:
        """Entries that waited longer than `max_wait_s` go on un-joined."""
        limit = self.clock() - self.max_wait_s
        out = []
        while self._pending:
            rid, (t, ev) = next(iter(self._pending.items()))
            if t > limit:
                break
            del self._pending[rid]
            out.append(ev)
        self.unjoined += len(out)
        return out

    def flush(self) -> list[dict]:
        """Everything still held (end of a file ingest, shutdown)."""
        out = [ev for _, ev in self._pending.values()]
        self._pending.clear()
        self.unjoined += len(out)
        return out


def merge(a: dict, b: dict) -> dict:
    """Invocation-log event enriched with the CloudTrail record's key and network context."""
    log, trail = (a, b) if a.get("source") == "invocation_log" else (b, a)
    out = dict(log)
    for f in _NETWORK:
        if trail.get(f) is not None:
            out[f] = trail[f]
    # CloudTrail's key is the credential (access key id); the log only had the caller's ARN.
    if trail.get("key_id") and trail.get("key_id") != trail.get("principal"):
        out["key_id"] = trail["key_id"]
    out["error_code"] = log.get("error_code") or trail.get("error_code")
    if out["error_code"] is None:
        del out["error_code"]
    return out
