"""HTTP adapters: OpenAI Admin API, Anthropic Admin API, LiteLLM proxy, signed webhook.

Key ids come from telemetry, which an attacker may shape, so every id is percent-encoded into
the path (a key id of ``../../x`` cannot reach another endpoint). Each call carries the
decision id as ``Idempotency-Key`` so a provider or key manager can de-duplicate retries.

>>> sign_webhook(b"secret", "1700000000", b'{"a":1}')[:7]
'sha256='
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

import httpx
import orjson

from keywatch.sinks.revocation.adapters import CallResult, RetryPolicy, Target, http_call


def _seg(value: str) -> str:
    return quote(value, safe="")


def _unsupported(what: str) -> CallResult:
    return CallResult(ok=False, attempts=0, error=what)


class _HttpAdapter:
    name = "http"
    supports_disable = False
    supports_delete = False

    def __init__(self, base_url: str, secret: str, retry: RetryPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret  # never logged; `secrets=` makes http_call redact it from errors
        self.retry = retry

    def _client(self) -> httpx.AsyncClient:
        # One client per call: revocations are rare, and a fresh client never carries state
        # (cookies, a broken pool) from an earlier provider failure.
        return httpx.AsyncClient(follow_redirects=False)

    async def _call(self, method: str, path: str, headers: dict[str, str], decision_id: str, json=None) -> CallResult:
        async with self._client() as client:
            return await http_call(
                client, method, self.base_url + path, retry=self.retry, json=json, secrets=[self._secret],
                headers={**headers, "Idempotency-Key": decision_id, "User-Agent": "keywatch-revocation"},
            )

    async def disable(self, t: Target, decision_id: str) -> CallResult:
        return _unsupported(f"{self.name} keys cannot be disabled, only deleted")

    async def enable(self, t: Target, decision_id: str) -> CallResult:
        return _unsupported(f"{self.name} keys cannot be re-enabled")

    async def delete(self, t: Target, decision_id: str) -> CallResult:
        return _unsupported(f"{self.name} keys cannot be deleted by keywatch")


class OpenAIAdapter(_HttpAdapter):
    """OpenAI Admin API: `DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}`.

    OpenAI has no disable for project keys, so this is irreversible (approval by default).
    """

    name = "openai"
    supports_delete = True

    async def delete(self, t: Target, decision_id: str) -> CallResult:
        if not t.project:
            return _unsupported("the OpenAI project id is needed to delete a project key (alert has no project)")
        path = f"/v1/organization/projects/{_seg(t.project)}/api_keys/{_seg(t.key_id)}"
        return await self._call("DELETE", path, {"Authorization": f"Bearer {self._secret}"}, decision_id)


class AnthropicAdapter(_HttpAdapter):
    """Anthropic Admin API: `POST /v1/organizations/api_keys/{id}` with a `status`. Reversible."""

    name = "anthropic"
    supports_disable = True

    def __init__(self, base_url: str, secret: str, version: str, retry: RetryPolicy) -> None:
        super().__init__(base_url, secret, retry)
        self.version = version

    async def _status(self, t: Target, status: str, decision_id: str) -> CallResult:
        headers = {"x-api-key": self._secret, "anthropic-version": self.version}
        return await self._call("POST", f"/v1/organizations/api_keys/{_seg(t.key_id)}", headers, decision_id, {"status": status})

    async def disable(self, t: Target, decision_id: str) -> CallResult:
        return await self._status(t, "inactive", decision_id)

    async def enable(self, t: Target, decision_id: str) -> CallResult:
        return await self._status(t, "active", decision_id)


class LiteLLMAdapter(_HttpAdapter):
    """LiteLLM proxy: `POST /key/block` / `POST /key/unblock` with `{"key": <hashed token>}`."""

    name = "litellm"
    supports_disable = True

    async def disable(self, t: Target, decision_id: str) -> CallResult:
        return await self._call("POST", "/key/block", {"Authorization": f"Bearer {self._secret}"}, decision_id, {"key": t.key_id})

    async def enable(self, t: Target, decision_id: str) -> CallResult:
        return await self._call("POST", "/key/unblock", {"Authorization": f"Bearer {self._secret}"}, decision_id, {"key": t.key_id})


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`; the receiver rejects old timestamps."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookAdapter(_HttpAdapter):
    """In-house key manager: `POST <url>` with a JSON action, signed (see `sign_webhook`).

    Headers: `X-Keywatch-Timestamp` (epoch seconds), `X-Keywatch-Signature`. Body:
    `{"action": "disable"|"enable"|"delete", "provider", "key_id", "project", "decision_id"}`.
    """

    name = "webhook"
    supports_disable = True
    supports_delete = True

    async def _send(self, action: str, t: Target, decision_id: str) -> CallResult:
        body = orjson.dumps({"action": action, "provider": t.provider, "key_id": t.key_id,
                             "project": t.project, "decision_id": decision_id})
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Keywatch-Timestamp": ts,
                   "X-Keywatch-Signature": sign_webhook(self._secret.encode(), ts, body),
                   "Idempotency-Key": decision_id, "User-Agent": "keywatch-revocation"}
        # Signed bytes must be sent exactly as signed, so this bypasses `_call`'s json= encoding.
        async with self._client() as client:
            return await http_call(client, "POST", self.base_url, retry=self.retry, headers=headers,
                              content=body, secrets=[self._secret])

    async def disable(self, t: Target, decision_id: str) -> CallResult:
        return await self._send("disable", t, decision_id)

    async def enable(self, t: Target, decision_id: str) -> CallResult:
        return await self._send("enable", t, decision_id)

    async def delete(self, t: Target, decision_id: str) -> CallResult:
        return await self._send("delete", t, decision_id)
