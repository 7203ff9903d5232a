"""OpenAI Admin API pages → canonical events: Usage API buckets, Costs API, audit logs.

Usage pages (`/v1/organization/usage/{completions,embeddings,moderations,images,…}`) hold
`data[]` buckets (`start_time`, `end_time`, `results[]`); each result grouped by
`api_key_id`/`project_id`/`model` becomes one `usage` event with `source="provider_usage"`,
`ts` = bucket start, `requests` = `num_model_requests`. The operation comes from the result's
`object` (`organization.usage.completions.result` → `completions`).

>>> page = {"object": "page", "data": [{"object": "bucket", "start_time": 1730419200,
...   "end_time": 1730419260, "results": [{"object": "organization.usage.completions.result",
...   "input_tokens": 100, "output_tokens": 20, "input_cached_tokens": 40, "num_model_requests": 2,
...   "project_id": "proj_1", "api_key_id": "key_1", "model": "gpt-4o-mini"}]}]}
>>> [(e["key_id"], e["operation"], e["requests"], e["cached_input_tokens"]) for e in normalise_usage(page)]
[('key_1', 'completions', 2, 40)]
"""

from __future__ import annotations

from typing import Any, Iterator

from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, clip, country_or_none, drop_none,
    event_id, ip_or_none, money, opt_count, opt_str, run_doc, safe_key_id, ts_from_epoch_s,
)

PROVIDER = "openai"
# Result fields that identify a grouped row (part of the deterministic event id).
_GROUP_FIELDS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier", "source", "size")


def _buckets(page: Any) -> Iterator[tuple[dict, dict]]:
    """(bucket, result) pairs of a `page` of buckets; a bare bucket list is accepted too."""
    data = page if isinstance(page, list) else as_dict(page, "page").get("data")
    for bucket in as_list(data, "data"):
        bucket = as_dict(bucket, "bucket")
        for result in as_list(bucket.get("results"), "bucket.results", allow_none=True):
            yield bucket, result


def _operation(result: dict, default: str | None) -> str | None:
    obj = result.get("object")
    if isinstance(obj, str) and obj.startswith("organization.usage.") and obj.endswith(".result"):
        return obj[len("organization.usage."):-len(".result")] or default
    return default


def normalise_usage(page: Any, *, operation: str | None = None, fp_key: bytes = DEFAULT_FP_KEY) -> Iterator[Output]:
    """One Usage API page → usage events (one per bucket × grouped result).

    A result without `api_key_id` (the query was not grouped by key) is rejected: keywatch
    tracks keys, and an org-wide total would look like a brand-new key.
    """

    def one(pair: tuple[dict, dict]) -> list[dict]:
        bucket, result = pair
        result = as_dict(result, "result")
        ts = ts_from_epoch_s(bucket.get("start_time"), "start_time")
        key = opt_str(result, "api_key_id")
        if key is None:
            raise NormaliseError("no_key", "result has no api_key_id (group the query by api_key_id)")
        op = _operation(result, operation)
        requests = opt_count(result, "num_model_requests") or opt_count(result, "num_sessions")
        inp = opt_count(result, "input_tokens")
        out = opt_count(result, "output_tokens")
        cached = opt_count(result, "input_cached_tokens")
        if requests == 0 and inp == 0 and out == 0:
            return []  # an empty group row carries no usage
        ident = [f"{f}={result.get(f)}" for f in _GROUP_FIELDS]
        return [drop_none({
            "kind": "usage",
            "event_id": event_id("oai_usage", op, bucket.get("start_time"), bucket.get("end_time"), *ident),
            "ts": ts, "provider": PROVIDER, "key_id": safe_key_id(key, fp_key),
            "project": opt_str(result, "project_id"), "principal": opt_str(result, "user_id"),
            # A null model means the query was not grouped by model; tokens still count.
            "model": opt_str(result, "model") or "unknown", "operation": op,
            "requests": max(1, requests), "input_tokens": inp, "output_tokens": out,
            "cached_input_tokens": min(cached, inp) if inp else cached,
            "source": "provider_usage",
        })]

    yield from run_doc(page, _buckets, one)


def normalise_costs(page: Any, **_: Any) -> Iterator[Output]:
    """One Costs API page → billing events (`amount.value` in `amount.currency`, USD only)."""

    def one(pair: tuple[dict, dict]) -> list[dict]:
        bucket, result = pair
        result = as_dict(result, "result")
        amount = as_dict(result.get("amount"), "amount")
        currency = (opt_str(amount, "currency") or "usd").lower()
        if currency != "usd":
            raise NormaliseError("unsupported", f"currency {currency!r} is not USD")
        project = opt_str(result, "project_id")
        line_item = opt_str(result, "line_item")
        start, end = bucket.get("start_time"), bucket.get("end_time")
        return [drop_none({
            "kind": "billing",
            "event_id": event_id("oai_cost", start, end, project, line_item),
            "ts": ts_from_epoch_s(start, "start_time"),
            "period_end": ts_from_epoch_s(end, "end_time") if end is not None else None,
            "provider": PROVIDER, "project": project, "scope": "project" if project else "organization",
            "line_item": line_item, "amount_usd": money(amount.get("value"), "amount.value"),
            "source": "provider_billing",
        })]

    yield from run_doc(page, _buckets, one)


def normalise_audit(page: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """One audit-logs page (`data[]` of `{id, type, effective_at, actor, project, <type>: {…}}`)
    → audit events. For `api_key.*` the key concerned is the subject's `id`; otherwise the
    acting key, when an API key acted. Session actors carry `ip_address` and `user_agent`."""

    def one(entry: Any) -> list[dict]:
        entry = as_dict(entry, "audit log entry")
        action = opt_str(entry, "type")
        if action is None:
            raise NormaliseError("missing_field", "missing type")
        actor = entry.get("actor") if isinstance(entry.get("actor"), dict) else {}
        session = actor.get("session") if isinstance(actor.get("session"), dict) else {}
        api_key = actor.get("api_key") if isinstance(actor.get("api_key"), dict) else {}
        subject = entry.get(action) if isinstance(entry.get(action), dict) else {}
        key = opt_str(subject, "id") if action.startswith("api_key.") else opt_str(api_key, "id")
        user = session.get("user") or api_key.get("user") or {}
        svc = api_key.get("service_account") or {}
        principal = None
        if isinstance(user, dict):
            principal = opt_str(user, "email") or opt_str(user, "id")
        if principal is None and isinstance(svc, dict):
            principal = opt_str(svc, "id")
        details = session.get("ip_address_details") if isinstance(session.get("ip_address_details"), dict) else {}
        project = entry.get("project") if isinstance(entry.get("project"), dict) else {}
        ident = opt_str(entry, "id") or f"{action}|{entry.get('effective_at')}|{key}|{principal}"
        return [drop_none({
            "kind": "audit", "event_id": event_id("oai_audit", ident),
            "ts": ts_from_epoch_s(entry.get("effective_at"), "effective_at"),
            "provider": PROVIDER, "action": action,
            "key_id": safe_key_id(key, fp_key) if key else None, "principal": principal,
            "project": opt_str(project, "id"),
            "source_ip": ip_or_none(session.get("ip_address")),
            "user_agent": clip(session.get("user_agent"), 1024),
            "country": country_or_none(details.get("country")),
            "source": "audit_log",
        })]

    yield from run_doc(page, _entries, one)


def _entries(page: Any) -> list:
    return as_list(page if isinstance(page, list) else as_dict(page, "page").get("data"), "data")

