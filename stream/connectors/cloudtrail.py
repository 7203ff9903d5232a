"""CloudTrail records for Amazon Bedrock → canonical usage (runtime calls) and audit events.

Input: a CloudTrail log file (`{"Records": [...]}`, gzip or not), a bare list of records, or
one record (EventBridge / CloudTrail Lake exports). Only `eventSource` bedrock records are
telemetry for keywatch; records of other services are ignored (a trail holds every service).

- Runtime calls (`InvokeModel`, `Converse`, their streaming variants, …) → `usage` with one
  request and no token counts (CloudTrail has none), model from `requestParameters.modelId`,
  and the network context the invocation log lacks: `sourceIPAddress`, `userAgent`.
- Control-plane calls (`ListFoundationModels`, `GetModelInvocationLoggingConfiguration`, …) →
  `audit` with `action` = `eventName`.

`userIdentity.accessKeyId` is the key; a call made with a Bedrock API key (bearer token) is
marked by `additionalEventData.callWithBearerToken` and carried as the extension field
`credential_type: "bedrock_api_key"`.

>>> doc = {"Records": [{"eventSource": "bedrock.amazonaws.com", "eventName": "ListFoundationModels",
...   "eventTime": "2025-06-01T12:00:00Z", "eventID": "e-1", "awsRegion": "us-east-1",
...   "sourceIPAddress": "203.0.113.9", "userAgent": "curl/8.0",
...   "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/x", "accessKeyId": "AKIAEXAMPLE0000001"}}]}
>>> [(e["kind"], e["action"], e["key_id"], e["source_ip"]) for e in normalise(doc)]
[('audit', 'ListFoundationModels', 'AKIAEXAMPLE0000001', '203.0.113.9')]
"""

from __future__ import annotations

from typing import Any, Iterator

from keywatch.stream.connectors.bedrock import model_name, request_event_id
from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, clip, drop_none, event_id,
    ip_or_none, opt_str, run_doc, safe_key_id, ts_from_text,
)

BEDROCK_SOURCES = frozenset({"bedrock.amazonaws.com", "bedrock-runtime.amazonaws.com"})
RUNTIME_CALLS = frozenset({
    "InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream",
    "InvokeModelWithBidirectionalStream", "StartAsyncInvoke", "CountTokens",
})


def _records(doc: Any) -> list:
    if isinstance(doc, list):
        return doc
    doc = as_dict(doc, "document")
    if "Records" in doc:
        return as_list(doc["Records"], "Records")
    if isinstance(doc.get("detail"), dict) and "eventSource" in doc["detail"]:
        return [doc["detail"]]  # an EventBridge envelope
    return [doc]


def normalise(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """A CloudTrail file/record → usage and audit events for Bedrock calls."""

    def one(rec: Any) -> list[dict]:
        rec = as_dict(rec, "record")
        src = rec.get("eventSource")
        if not isinstance(src, str):
            raise NormaliseError("missing_field", "missing eventSource")
        if src not in BEDROCK_SOURCES:
            return []  # another service's record: not keywatch telemetry
        name = opt_str(rec, "eventName")
        if name is None:
            raise NormaliseError("missing_field", "missing eventName")
        ident = rec.get("userIdentity") if isinstance(rec.get("userIdentity"), dict) else {}
        arn = opt_str(ident, "arn")
        access_key = opt_str(ident, "accessKeyId")
        extra = rec.get("additionalEventData") if isinstance(rec.get("additionalEventData"), dict) else {}
        params = rec.get("requestParameters") if isinstance(rec.get("requestParameters"), dict) else {}
        ts = ts_from_text(rec.get("eventTime"), "eventTime")
        request_id = opt_str(rec, "requestID", max_len=128)
        common = {
            "ts": ts, "provider": "bedrock", "principal": arn,
            "project": opt_str(rec, "recipientAccountId") or opt_str(ident, "accountId"),
            "source_ip": ip_or_none(rec.get("sourceIPAddress")), "user_agent": clip(rec.get("userAgent"), 1024),
            "region": opt_str(rec, "awsRegion"), "error_code": opt_str(rec, "errorCode"),
            "request_id": request_id, "source": "cloudtrail",
            "credential_type": "bedrock_api_key" if extra.get("callWithBearerToken") is True else None,
        }
        key = safe_key_id(access_key, fp_key) if access_key else None
        own_id = event_id("ct", opt_str(rec, "eventID") or f"{ts}|{name}|{request_id}|{arn}")
        if name in RUNTIME_CALLS:
            key = key or arn or opt_str(ident, "principalId")
            if key is None:
                raise NormaliseError("no_key", "runtime call without accessKeyId, arn or principalId")
            model = model_name(opt_str(params, "modelId", max_len=2048))
            return [drop_none({
                "kind": "usage", "event_id": request_event_id(request_id) if request_id else own_id,
                "key_id": key, "model": model[:256], "operation": name, "requests": 1, **common,
            })]
        return [drop_none({"kind": "audit", "event_id": own_id, "key_id": key, "action": name, **common})]

    yield from run_doc(doc, _records, one)
