"""OpenTelemetry GenAI spans and metrics (OTLP JSON) → canonical usage events (`source="otel"`).

Spans: `resourceSpans[].scopeSpans[].spans[]`; a span is a GenAI call when it has a `gen_ai.*`
attribute. Current semantic-convention names are read first, legacy ones as a fallback:
`gen_ai.provider.name` (legacy `gen_ai.system`), `gen_ai.usage.input_tokens`/`output_tokens`
(legacy `prompt_tokens`/`completion_tokens`), `gen_ai.response.model` then
`gen_ai.request.model`, `gen_ai.usage.cache_read.input_tokens`. Network context comes from
`client.address` and `user_agent.original`, errors from `error.type` or span status.

Metrics: `gen_ai.client.token.usage` histograms with DELTA temporality; the input and output
data points of one attribute set and interval become one event (`requests` = the input point's
count). Cumulative series are rejected: their points are running totals, not usage.

GenAI telemetry names no credential, so the key is the `keywatch.key_id` attribute when the
app sets one, else the workload: `otel:<service.name>`.

>>> span = {"traceId": "t1", "spanId": "s1", "startTimeUnixNano": "1748779200000000000",
...   "endTimeUnixNano": "1748779200500000000", "attributes": [
...   {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
...   {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
...   {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "12"}}]}
>>> doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
...   "value": {"stringValue": "chatbot"}}]}, "scopeSpans": [{"spans": [span]}]}]}
>>> [(e["key_id"], e["provider"], e["input_tokens"], e["latency_ms"]) for e in normalise(doc)]
[('otel:chatbot', 'openai', 12, 500.0)]
"""

from __future__ import annotations

from typing import Any, Iterator

from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, clip, drop_none, event_id, ip_or_none,
    opt_count, opt_str, run_doc, safe_key_id, ts_from_nanos,
)

# OTel provider names → keywatch provider names (contract §1 list).
_PROVIDERS = {"aws.bedrock": "bedrock", "azure.ai.openai": "azure_openai", "az.ai.openai": "azure_openai",
              "gcp.vertex_ai": "vertex", "gcp.gen_ai": "vertex", "gcp.gemini": "vertex"}
TOKEN_METRIC = "gen_ai.client.token.usage"


def _value(v: Any) -> Any:
    """An OTLP AnyValue → a Python value (int64 arrives as a string in OTLP JSON)."""
    if not isinstance(v, dict):
        return None
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    return None


def attrs(lst: Any) -> dict[str, Any]:
    """OTLP `attributes` (a list of `{key, value}`) → a dict; malformed entries are skipped."""
    out: dict[str, Any] = {}
    for kv in lst if isinstance(lst, list) else []:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _value(kv.get("value"))
    return out


def _first(a: dict, *names: str) -> Any:
    return next((a[n] for n in names if a.get(n) is not None), None)


def _identity(a: dict, fp_key: bytes) -> tuple[str, dict]:
    provider = str(_first(a, "gen_ai.provider.name", "gen_ai.system") or "unknown")
    key = _first(a, "keywatch.key_id")
    service = a.get("service.name")
    key = safe_key_id(str(key), fp_key) if key else f"otel:{service or 'unknown_service'}"
    return key, {
        "provider": _PROVIDERS.get(provider, provider)[:256], "key_id": key[:256],
        "principal": opt_str(a, "enduser.id") or opt_str(a, "user.id") or (str(service)[:256] if service else None),
        "project": opt_str(a, "keywatch.project") or opt_str(a, "service.namespace"),
        "model": str(_first(a, "gen_ai.response.model", "gen_ai.request.model") or "unknown")[:256],
        "operation": opt_str(a, "gen_ai.operation.name"), "region": opt_str(a, "cloud.region"),
    }


def _scoped(doc: Any, res_key: str, scope_key: str, item_key: str) -> list[tuple[dict, Any]]:
    out = []
    for res in as_list(as_dict(doc, "document").get(res_key), res_key):
        res = as_dict(res, res_key)
        ra = attrs((res.get("resource") or {}).get("attributes") if isinstance(res.get("resource"), dict) else None)
        for scope in as_list(res.get(scope_key), scope_key, allow_none=True):
            for item in as_list(as_dict(scope, scope_key).get(item_key), item_key, allow_none=True):
                out.append((ra, item))
    return out


def normalise(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """An OTLP JSON export request (traces or metrics) → usage events."""
    if isinstance(doc, dict) and "resourceMetrics" in doc:
        yield from normalise_metrics(doc, fp_key=fp_key)
    else:
        yield from normalise_spans(doc, fp_key=fp_key)


def normalise_spans(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY) -> Iterator[Output]:
    def one(pair: tuple[dict, Any]) -> list[dict]:
        ra, span = pair
        span = as_dict(span, "span")
        a = {**ra, **attrs(span.get("attributes"))}
        if not any(k.startswith("gen_ai.") for k in a):
            return []  # not a GenAI call: traces carry every kind of span
        key, ident = _identity(a, fp_key)
        start = ts_from_nanos(span.get("startTimeUnixNano"), "startTimeUnixNano")
        latency = None
        try:
            latency = max(0.0, (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6)
        except (KeyError, TypeError, ValueError):
            pass
        status = span.get("status") if isinstance(span.get("status"), dict) else {}
        http = a.get("http.response.status_code")
        err = opt_str(a, "error.type") or ("error" if status.get("code") in (2, "STATUS_CODE_ERROR") else None)
        return [drop_none({
            "kind": "usage", "event_id": event_id("otel_span", span.get("traceId"), span.get("spanId"), start, key),
            "ts": start, **ident, "requests": 1,
            "input_tokens": opt_count(a, "gen_ai.usage.input_tokens") or opt_count(a, "gen_ai.usage.prompt_tokens"),
            "output_tokens": opt_count(a, "gen_ai.usage.output_tokens") or opt_count(a, "gen_ai.usage.completion_tokens"),
            "cached_input_tokens": opt_count(a, "gen_ai.usage.cache_read.input_tokens"),
            "source_ip": ip_or_none(a.get("client.address")), "user_agent": clip(a.get("user_agent.original"), 1024),
            "status": http if isinstance(http, int) and 0 <= http <= 999 else None,
            "error_code": err, "latency_ms": latency,
            "request_id": opt_str(a, "gen_ai.response.id", max_len=256), "source": "otel",
        })]

    yield from run_doc(doc, lambda d: _scoped(d, "resourceSpans", "scopeSpans", "spans"), one)


def _points(doc: Any) -> list:
    """(resource attrs, data point) of every DELTA token-usage histogram; cumulative → error."""
    out = []
    for ra, metric in _scoped(doc, "resourceMetrics", "scopeMetrics", "metrics"):
        metric = as_dict(metric, "metric")
        if metric.get("name") != TOKEN_METRIC:
            continue
        hist = as_dict(metric.get("histogram"), "histogram")
        temporality = hist.get("aggregationTemporality")
        if temporality not in (1, "AGGREGATION_TEMPORALITY_DELTA"):
            raise NormaliseError("unsupported", f"{TOKEN_METRIC}: only DELTA temporality is supported (got {str(temporality)[:40]})")
        out.extend((ra, p) for p in as_list(hist.get("dataPoints"), "dataPoints", allow_none=True))
    return out


def normalise_metrics(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY) -> Iterator[Output]:
    groups: dict[tuple, dict] = {}  # one event per attribute set and interval

    def collect(pair: tuple[dict, Any]) -> list[dict]:
        ra, p = pair
        p = as_dict(p, "data point")
        a = {**ra, **attrs(p.get("attributes"))}
        kind = a.pop("gen_ai.token.type", None)
        if kind not in ("input", "output"):
            raise NormaliseError("bad_value", f"gen_ai.token.type {str(kind)[:20]!r} is not input/output")
        ts = ts_from_nanos(p.get("startTimeUnixNano") or p.get("timeUnixNano"), "startTimeUnixNano")
        total = p.get("sum")
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not 0 <= total < 1e12:
            raise NormaliseError("bad_value", "sum is not a token count")
        gk = (ts, p.get("timeUnixNano"), tuple(sorted((k, str(v)) for k, v in a.items())))
        g = groups.setdefault(gk, {"a": a, "ts": ts, "input": 0, "output": 0, "count": 0})
        g[kind] += int(total)
        if kind == "input":
            g["count"] += opt_count(p, "count")
        return []

    yield from run_doc(doc, _points, collect)
    for (ts, end, akey), g in groups.items():
        key, ident = _identity(g["a"], fp_key)
        yield drop_none({
            "kind": "usage", "event_id": event_id("otel_metric", ts, end, *akey), "ts": ts, **ident,
            "requests": max(1, g["count"]), "input_tokens": g["input"], "output_tokens": g["output"],
            "source": "otel",
        })
