"""LiteLLM proxy spend logs → canonical usage events (`source="gateway"`).

LiteLLM stores one `SpendLogs` row per request (`/spend/logs`, the spend-log callback, DB
exports): `request_id`, `api_key` (the SHA-256 of the virtual key, never the key itself),
`spend` (USD), `prompt_tokens`, `completion_tokens`, `startTime`, `endTime`, `model`,
`model_group`, `call_type`, `team_id`, `user`, `end_user`, `requester_ip_address`, `status`,
`metadata` (team, cached tokens, error information, …).

The hashed key is the gateway key id (gateway-bypass detection maps it to the provider key).
If a raw virtual key (`sk-…`) ever appears instead, it is replaced by a keyed hash.

>>> rec = {"request_id": "chatcmpl-1", "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
...   "spend": 0.00042, "prompt_tokens": 120, "completion_tokens": 30, "startTime": "2025-06-01T12:00:00.000Z",
...   "endTime": "2025-06-01T12:00:01.250Z", "model": "gpt-4o-mini", "requester_ip_address": "10.0.0.7"}
>>> [(e["key_id"][:8], e["cost_usd"], e["latency_ms"], e["source"]) for e in normalise(rec)]
[('88dc28d0', 0.00042, 1250.0, 'gateway')]
"""

from __future__ import annotations

from typing import Any, Iterator

from keywatch.models.events import parse_ts
from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, clip, drop_none, event_id, ip_or_none,
    money, opt_count, opt_str, run_doc, safe_key_id, ts_from_text,
)

PROVIDER = "litellm"


def _records(doc: Any) -> list:
    if isinstance(doc, list):
        return doc
    doc = as_dict(doc, "document")
    if "data" in doc and "api_key" not in doc:  # a paged API response
        return as_list(doc["data"], "data")
    return [doc]


def _cached_tokens(meta: dict) -> int:
    usage = meta.get("additional_usage_values")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return opt_count(details, "cached_tokens") if isinstance(details, dict) else 0


def normalise(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """Spend-log rows (one, a list, or `{"data": [...]}`) → gateway usage events."""

    def one(rec: Any) -> list[dict]:
        rec = as_dict(rec, "spend log")
        key = opt_str(rec, "api_key")
        if key is None:
            raise NormaliseError("no_key", "spend log has no api_key")
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        ts = ts_from_text(rec.get("startTime"), "startTime")
        latency = None
        if isinstance(rec.get("endTime"), str):
            end = ts_from_text(rec["endTime"], "endTime")
            latency = max(0.0, float(parse_ts(end) - parse_ts(ts)))
        spend = rec.get("spend")
        cost = money(spend, "spend") if spend is not None else None
        if cost is not None and cost < 0:
            raise NormaliseError("bad_value", "spend is negative")
        failed = str(rec.get("status") or "").lower() == "failure"
        err = meta.get("error_information") if isinstance(meta.get("error_information"), dict) else {}
        status = opt_str(err, "error_code")
        request_id = opt_str(rec, "request_id", max_len=128)
        model = opt_str(rec, "model") or opt_str(rec, "model_group") or "unknown"
        return [drop_none({
            "kind": "usage",
            "event_id": event_id("litellm", request_id) if request_id else event_id("litellm", ts, key, model),
            "ts": ts, "provider": PROVIDER, "key_id": safe_key_id(key, fp_key),
            "principal": opt_str(rec, "user") or opt_str(rec, "end_user"),
            "project": opt_str(rec, "team_id") or opt_str(meta, "user_api_key_team_id"),
            "model": model, "operation": opt_str(rec, "call_type"), "requests": 1,
            "input_tokens": opt_count(rec, "prompt_tokens"), "output_tokens": opt_count(rec, "completion_tokens"),
            "cached_input_tokens": _cached_tokens(meta), "cost_usd": cost,
            "source_ip": ip_or_none(rec.get("requester_ip_address")),
            "user_agent": clip(meta.get("user_agent"), 1024), "latency_ms": latency,
            "status": int(status) if status and status.isdigit() and len(status) == 3 else None,
            "error_code": (opt_str(err, "error_class") or "failure") if failed else None,
            "request_id": request_id, "source": "gateway",
        })]

    yield from run_doc(doc, _records, one)
