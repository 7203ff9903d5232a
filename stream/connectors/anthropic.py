"""Anthropic Admin API reports → canonical events: messages usage report and cost report.

Usage report (`/v1/organizations/usage_report/messages`, `bucket_width=1m`, grouped by
`api_key_id` and `model`): each result row becomes one `usage` event at the bucket's
`starting_at`. Anthropic splits input into uncached, cache-creation (5m/1h) and cache-read
tokens; keywatch's `input_tokens` is their sum and `cached_input_tokens` the cache reads. The
report has no request count, so a row counts as one request (a floor, not an estimate).
Rows with a null `api_key_id` are Console (Workbench) usage: key id `console:<workspace>`.

Cost report (`/v1/organizations/cost_report`): `amount` is a decimal string in cents
(lowest currency unit) → `amount_usd` = amount / 100.

>>> page = {"data": [{"starting_at": "2025-08-01T10:00:00Z", "ending_at": "2025-08-01T10:01:00Z",
...   "results": [{"uncached_input_tokens": 10, "cache_creation": {"ephemeral_5m_input_tokens": 5},
...   "cache_read_input_tokens": 100, "output_tokens": 7, "api_key_id": "apikey_01A",
...   "workspace_id": None, "model": "claude-sonnet-4-20250514"}]}], "has_more": False}
>>> [(e["key_id"], e["input_tokens"], e["cached_input_tokens"]) for e in normalise_usage(page)]
[('apikey_01A', 115, 100)]
>>> [e["amount_usd"] for e in normalise_cost({"data": [{"starting_at": "2025-08-01T00:00:00Z",
...   "ending_at": "2025-08-02T00:00:00Z", "results": [{"currency": "USD", "amount": "1234.5"}]}]})]
[12.345]
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator

from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, drop_none, event_id, money,
    opt_count, opt_str, run_doc, safe_key_id, ts_from_text,
)

PROVIDER = "anthropic"
_USAGE_GROUP = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "account_id", "inference_geo")
_COST_GROUP = ("workspace_id", "description", "cost_type", "model", "token_type", "service_tier", "context_window")


def _rows(page: Any) -> Iterator[tuple[dict, Any]]:
    data = page if isinstance(page, list) else as_dict(page, "page").get("data")
    for bucket in as_list(data, "data"):
        bucket = as_dict(bucket, "bucket")
        for result in as_list(bucket.get("results"), "bucket.results", allow_none=True):
            yield bucket, result


def normalise_usage(page: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """One usage-report page → usage events (`source="provider_usage"`)."""

    def one(pair: tuple[dict, Any]) -> list[dict]:
        bucket, row = pair
        row = as_dict(row, "result")
        ts = ts_from_text(bucket.get("starting_at"), "starting_at")
        cache = row.get("cache_creation")
        cache = cache if isinstance(cache, dict) else {}
        # Current schema nests cache creation; an older one had flat fields. Accept both.
        created = (opt_count(cache, "ephemeral_5m_input_tokens") + opt_count(cache, "ephemeral_1h_input_tokens")
                   + opt_count(row, "cache_creation_5m_input_tokens") + opt_count(row, "cache_creation_1h_input_tokens"))
        uncached = opt_count(row, "uncached_input_tokens")
        read = opt_count(row, "cache_read_input_tokens")
        out = opt_count(row, "output_tokens")
        if uncached + created + read + out == 0:
            return []  # an all-zero row is no usage
        workspace = opt_str(row, "workspace_id")
        key = opt_str(row, "api_key_id")
        ident = [f"{f}={row.get(f)}" for f in _USAGE_GROUP]
        return [drop_none({
            "kind": "usage",
            "event_id": event_id("ant_usage", bucket.get("starting_at"), bucket.get("ending_at"), *ident),
            "ts": ts, "provider": PROVIDER,
            "key_id": safe_key_id(key, fp_key) if key else f"console:{workspace or 'default'}",
            "principal": None if key else "console",
            "project": workspace, "model": opt_str(row, "model") or "unknown", "operation": "messages",
            "requests": 1, "input_tokens": uncached + created + read, "output_tokens": out,
            "cached_input_tokens": read, "source": "provider_usage",
        })]

    yield from run_doc(page, _rows, one)


def normalise_cost(page: Any, **_: Any) -> Iterator[Output]:
    """One cost-report page → billing events (cents as decimal strings → USD)."""

    def one(pair: tuple[dict, Any]) -> list[dict]:
        bucket, row = pair
        row = as_dict(row, "result")
        currency = (opt_str(row, "currency") or "USD").upper()
        if currency != "USD":
            raise NormaliseError("unsupported", f"currency {currency!r} is not USD")
        if row.get("amount") is None:
            raise NormaliseError("missing_field", "missing amount")
        workspace = opt_str(row, "workspace_id")
        line_item = opt_str(row, "description") or " ".join(
            x for x in (opt_str(row, "model"), opt_str(row, "cost_type"), opt_str(row, "token_type")) if x) or None
        ident = [f"{f}={row.get(f)}" for f in _COST_GROUP]
        return [drop_none({
            "kind": "billing",
            "event_id": event_id("ant_cost", bucket.get("starting_at"), bucket.get("ending_at"), *ident),
            "ts": ts_from_text(bucket.get("starting_at"), "starting_at"),
            "period_end": ts_from_text(bucket["ending_at"], "ending_at") if bucket.get("ending_at") else None,
            "provider": PROVIDER, "project": workspace, "scope": "workspace" if workspace else "organization",
            "line_item": line_item, "amount_usd": money(row.get("amount"), "amount", scale=Decimal(100)),
            "source": "provider_billing",
        })]

    yield from run_doc(page, _rows, one)
