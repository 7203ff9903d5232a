"""Amazon Bedrock model-invocation logs → canonical usage events.

Invocation logging (S3 objects or CloudWatch Logs, one JSON record per line) writes
`schemaType: ModelInvocationLog` records: `timestamp`, `accountId`, `identity.arn`, `region`,
`requestId`, `operation`, `modelId` (a model id or an ARN: foundation model, inference profile,
provisioned model), `input.inputTokenCount`, `input.cacheReadInputTokenCount`,
`input.cacheWriteInputTokenCount`, `output.outputTokenCount`, optional `errorCode`.

The log has no access key id, only the caller's ARN, so the ARN is both `principal` and (until
a CloudTrail record for the same `requestId` supplies the access key, see `join.py`) `key_id`.
The event id is derived from `requestId` alone and shared with the CloudTrail record of the same
call, so the one call is never counted twice whichever record arrives.

>>> rec = {"schemaType": "ModelInvocationLog", "timestamp": "2025-06-01T12:00:00Z",
...   "accountId": "111122223333", "identity": {"arn": "arn:aws:iam::111122223333:user/app"},
...   "region": "us-east-1", "requestId": "r-1", "operation": "Converse",
...   "modelId": "arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
...   "input": {"inputTokenCount": 10, "cacheReadInputTokenCount": 90}, "output": {"outputTokenCount": 5}}
>>> [(e["model"], e["input_tokens"], e["cached_input_tokens"]) for e in normalise(rec)]
[('us.anthropic.claude-3-haiku-20240307-v1:0', 100, 90)]
"""

from __future__ import annotations

from typing import Any, Iterator

from keywatch.stream.connectors.common import (
    DEFAULT_FP_KEY, NormaliseError, Output, as_dict, as_list, drop_none, event_id, opt_count,
    opt_str, run_doc, ts_from_text,
)

PROVIDER = "bedrock"


def model_name(model_id: str | None) -> str:
    """`arn:aws:bedrock:…:inference-profile/us.x.y:0` → `us.x.y:0`; plain ids unchanged.

    Application inference profiles have opaque ids, so their type is kept for readability.

    >>> model_name("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0")
    'amazon.titan-embed-text-v2:0'
    >>> model_name("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc123")
    'application-inference-profile/abc123'
    """
    if not model_id:
        return "unknown"
    if model_id.startswith("arn:") and "/" in model_id:
        kind, _, rest = model_id.split(":", 5)[-1].partition("/")
        return f"{kind}/{rest}" if kind.startswith("application-") else rest or "unknown"
    return model_id


def request_event_id(request_id: str) -> str:
    """The id shared by the invocation log and the CloudTrail record of one Bedrock call."""
    return event_id("bedrock_req", request_id)


def _records(doc: Any) -> list:
    # A single record per line is the norm; CloudWatch exports may wrap records in a list.
    return as_list(doc, "records") if isinstance(doc, list) else [doc]


def normalise(doc: Any, *, fp_key: bytes = DEFAULT_FP_KEY, **_: Any) -> Iterator[Output]:
    """One invocation-log record (or a list of them) → usage events (`source="invocation_log"`)."""

    def one(rec: Any) -> list[dict]:
        rec = as_dict(rec, "record")
        schema = rec.get("schemaType")
        if schema is not None and schema != "ModelInvocationLog":
            raise NormaliseError("unsupported", f"schemaType {str(schema)[:40]!r} is not ModelInvocationLog")
        identity = rec.get("identity") if isinstance(rec.get("identity"), dict) else {}
        arn = opt_str(identity, "arn", max_len=256)
        if arn is None:
            raise NormaliseError("no_key", "record has no identity.arn")
        inp = rec.get("input") if isinstance(rec.get("input"), dict) else {}
        out = rec.get("output") if isinstance(rec.get("output"), dict) else {}
        read = opt_count(inp, "cacheReadInputTokenCount")
        write = opt_count(inp, "cacheWriteInputTokenCount")
        request_id = opt_str(rec, "requestId", max_len=128)
        ts = ts_from_text(rec.get("timestamp"), "timestamp")
        model = model_name(opt_str(rec, "modelId", max_len=2048))
        eid = request_event_id(request_id) if request_id else event_id("bedrock_log", ts, arn, model, rec.get("operation"))
        return [drop_none({
            "kind": "usage", "event_id": eid, "ts": ts, "provider": PROVIDER,
            "key_id": arn, "principal": arn, "project": opt_str(rec, "accountId"),
            "model": model[:256], "operation": opt_str(rec, "operation"), "requests": 1,
            "input_tokens": opt_count(inp, "inputTokenCount") + read + write,
            "output_tokens": opt_count(out, "outputTokenCount"), "cached_input_tokens": read,
            "region": opt_str(rec, "region"), "error_code": opt_str(rec, "errorCode"),
            "request_id": request_id, "source": "invocation_log",
        })]

    yield from run_doc(doc, _records, one)
