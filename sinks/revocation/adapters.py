"""Provider adapters: the one place that calls a provider to disable, enable or delete a key.

Every adapter returns a `CallResult` and never raises for a provider failure: the engine records
the outcome either way. HTTP calls share `http_call`, which retries what is worth retrying
(429 honouring Retry-After, 5xx, timeouts) and treats 404 as "already gone" (done). Error text
is passed through `scrub` so that a provider echoing a credential never puts it in a row or log.

>>> scrub("Incorrect API key provided: sk-proj-abcdefghijklmnop1234. x", ["hunter2"])
'Incorrect API key provided: <redacted>. x'
>>> scrub("token hunter2 rejected", ["hunter2"])
'token <redacted> rejected'
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol

import httpx

# Things that look like credentials: OpenAI/Anthropic/LiteLLM keys, AWS access key ids and
# secrets, bearer tokens. Redacted from any provider text we keep.
_SECRETISH = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?:AKIA|ASIA)[A-Z0-9]{12,}|Bearer\s+\S+|[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+]))"
)
MAX_ERROR_CHARS = 300


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove known secret values and anything credential-shaped; cap the length."""
    for s in secrets:
        if s:
            text = text.replace(s, "<redacted>")
    return _SECRETISH.sub("<redacted>", text)[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class Target:
    """The key to act on, as the alert names it (never the secret)."""

    provider: str
    key_id: str
    project: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallResult:
    ok: bool
    status_code: int = 0
    request_id: str = ""
    error: str = ""
    already_done: bool = False  # 404: the key is already gone, which is what we wanted
    attempts: int = 1


class Adapter(Protocol):
    """`disable`/`enable` are reversible; `delete` is not. Unsupported ones are None."""

    name: str
    supports_disable: bool
    supports_delete: bool

    async def disable(self, t: Target, decision_id: str) -> CallResult: ...
    async def enable(self, t: Target, decision_id: str) -> CallResult: ...
    async def delete(self, t: Target, decision_id: str) -> CallResult: ...


class Unsupported(Exception):
    pass


@dataclass
class RetryPolicy:
    timeout_s: float = 10.0
    max_attempts: int = 3
    max_wait_s: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests pass a recording sleep

    @classmethod
    def from_settings(cls, s) -> "RetryPolicy":
        return cls(s.revocation_timeout_s, s.revocation_max_attempts, s.revocation_max_retry_wait_s)


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date.

    >>> retry_after_s("7"), retry_after_s(None), retry_after_s("soon")
    (7.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def http_call(
    client: httpx.AsyncClient, method: str, url: str, *, retry: RetryPolicy, headers: dict[str, str],
    json: Any = None, content: bytes | None = None, secrets: Iterable[str | None] = (),
    request_id_headers: tuple[str, ...] = ("x-request-id", "request-id"),
) -> CallResult:
    """One logical call with bounded retries. Never raises for HTTP or network failures."""
    secrets = list(secrets)
    last = CallResult(ok=False, error="not attempted")
    for attempt in range(1, retry.max_attempts + 1):
        try:
            resp = await client.request(method, url, headers=headers, json=json, content=content, timeout=retry.timeout_s)
        except httpx.TimeoutException:
            last = CallResult(ok=False, error=f"timeout after {retry.timeout_s:g} s", attempts=attempt)
            wait = _backoff(attempt)
        except httpx.HTTPError as exc:
            last = CallResult(ok=False, error=scrub(f"{type(exc).__name__}: {exc}", secrets), attempts=attempt)
            wait = _backoff(attempt)
        else:
            rid = next((resp.headers[h] for h in request_id_headers if h in resp.headers), "")
            code = resp.status_code
            if 200 <= code < 300:
                return CallResult(ok=True, status_code=code, request_id=rid, attempts=attempt)
            if code == 404:
                return CallResult(ok=True, already_done=True, status_code=code, request_id=rid, attempts=attempt)
            last = CallResult(ok=False, status_code=code, request_id=rid, attempts=attempt,
                              error=scrub(f"HTTP {code}: {_error_text(resp)}", secrets))
            if code == 429:
                ra = retry_after_s(resp.headers.get("retry-after"))
                wait = _backoff(attempt) if ra is None else ra
                if wait > retry.max_wait_s:  # do not hold a revocation hostage for minutes
                    last.error += f" (Retry-After {wait:g} s exceeds {retry.max_wait_s:g} s)"
                    return last
            elif code >= 500:
                wait = _backoff(attempt)
            else:  # 400/401/403/409…: retrying will not change the answer
                return last
        if attempt < retry.max_attempts:
            await retry.sleep(wait)
    return last


def _backoff(attempt: int) -> float:
    return min(8.0, 0.25 * 2 ** (attempt - 1))


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):  # OpenAI {"error":{"message","type"}}, Anthropic {"error":{"type","message"}}
        return f"{err.get('type') or err.get('code') or ''} {err.get('message') or err.get('detail') or ''}".strip()
    return str(err)[:200]


# Which adapter serves which provider name, unless the policy's `adapters:` says otherwise.
DEFAULT_ADAPTERS = {"openai": "openai", "anthropic": "anthropic", "bedrock": "aws_iam", "aws": "aws_iam", "litellm": "litellm"}


def build_adapters(settings, *, retry: RetryPolicy | None = None) -> dict[str, Adapter]:
    """Every adapter the settings configure (credentials present), by adapter name."""
    from keywatch.sinks.revocation.adapter_aws import AwsIamAdapter
    from keywatch.sinks.revocation.adapter_http import AnthropicAdapter, LiteLLMAdapter, OpenAIAdapter, WebhookAdapter

    retry = retry or RetryPolicy.from_settings(settings)
    out: dict[str, Adapter] = {}
    if settings.revocation_openai_admin_key:
        out["openai"] = OpenAIAdapter(settings.revocation_openai_base_url, settings.secret("revocation_openai_admin_key"), retry)
    if settings.revocation_anthropic_admin_key:
        out["anthropic"] = AnthropicAdapter(settings.revocation_anthropic_base_url, settings.secret("revocation_anthropic_admin_key"),
                                            settings.revocation_anthropic_version, retry)
    if settings.revocation_litellm_base_url and settings.revocation_litellm_master_key:
        out["litellm"] = LiteLLMAdapter(settings.revocation_litellm_base_url, settings.secret("revocation_litellm_master_key"), retry)
    if settings.revocation_webhook_url and settings.revocation_webhook_secret:
        out["webhook"] = WebhookAdapter(settings.revocation_webhook_url, settings.secret("revocation_webhook_secret"), retry)
    # IAM may use boto3's default credential chain, so it is always available.
    out["aws_iam"] = AwsIamAdapter(
        endpoint_url=settings.revocation_aws_endpoint_url, region=settings.revocation_aws_region,
        access_key_id=settings.secret("revocation_aws_access_key_id"),
        secret_access_key=settings.secret("revocation_aws_secret_access_key"), retry=retry,
    )
    return out
