"""Generic JSON webhook, signed with HMAC-SHA256 over `"{timestamp}.{body}"` (Stripe/Slack style).

Headers sent:

    X-Keywatch-Timestamp: <unix seconds>
    X-Keywatch-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>
    X-Keywatch-Event:     alert.trigger | alert.update | alert.resolve | digest
    X-Keywatch-Delivery:  <unique id of this delivery, the same across its retries>

Receivers verify with `verify_signature` on the *raw* body (before parsing JSON). It rejects
bad signatures and timestamps outside the tolerance window (a captured request cannot be
replayed later); receivers wanting exactly-once can also remember `X-Keywatch-Delivery`.
Several `v1=` values (comma separated) are accepted, for secret rotation.

>>> body = b'{"type":"alert"}'
>>> h = sign(body, "s3cret", timestamp=1_800_000_000)
>>> verify_signature("s3cret", body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], now=1_800_000_010)
True
>>> verify_signature("s3cret", body, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], now=1_800_001_000)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
SignatureError: timestamp outside the tolerance window
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx

from keywatch.sinks.channels.config import ChannelSpec
from keywatch.sinks.channels.message import dumps, post_json

TIMESTAMP_HEADER = "X-Keywatch-Timestamp"
SIGNATURE_HEADER = "X-Keywatch-Signature"
EVENT_HEADER = "X-Keywatch-Event"
DELIVERY_HEADER = "X-Keywatch-Delivery"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The request is not from keywatch, or is too old (a replay)."""


def _mac(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers for `body`."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: f"v1={_mac(secret, ts, body)}"}


def verify_signature(secret: str | list[str], body: bytes, timestamp: str | None, signature: str | None,
                     *, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> bool:
    """True, or `SignatureError`. `secret` may be a list (old and new during rotation)."""
    if not timestamp or not signature:
        raise SignatureError("missing signature headers")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError("malformed timestamp") from None
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance window")
    given = [part.strip()[3:] for part in signature.split(",") if part.strip().startswith("v1=")]
    secrets = [secret] if isinstance(secret, str) else list(secret)
    for s in secrets:
        expected = _mac(s, str(timestamp), body)
        # compare_digest on every candidate: no early exit that leaks timing
        if any(hmac.compare_digest(expected, g) for g in given):
            return True
    raise SignatureError("signature mismatch")


def webhook_body(alert: dict[str, Any], event: str, route: str) -> dict[str, Any]:
    return {"type": "alert", "event": event, "route": route, "alert": alert}


class WebhookChannel:
    type = "webhook"

    def __init__(self, spec: ChannelSpec, settings, client: httpx.AsyncClient) -> None:
        self.name = spec.name
        self.spec = spec
        self.client = client
        self.timeout = settings.channels_timeout_s
        self.sends_resolve = spec.send_resolved is not False

    def _headers(self, body: bytes, event: str, delivery_id: str) -> dict[str, str]:
        h = dict(self.spec.headers)
        h.update({EVENT_HEADER: event, DELIVERY_HEADER: delivery_id})
        if self.spec.secret is not None:
            h.update(sign(body, self.spec.secret.value))  # fresh timestamp on every attempt
        return h

    async def _post(self, payload: dict[str, Any], event: str, delivery_id: str) -> int:
        body = dumps(payload)
        return await post_json(self.client, str(self.spec.url), body, self._headers(body, event, delivery_id), self.timeout)

    async def send(self, alert: dict[str, Any], event: str, route: str) -> int:
        did = delivery_id(self.name, route, str(alert.get("alert_id")), str(alert.get("version")), event)
        return await self._post(webhook_body(alert, event, route), f"alert.{event}", did)

    async def send_digest(self, alerts: list[dict[str, Any]], route: str, period: str) -> int:
        payload = {"type": "digest", "route": route, "period": period, "count": len(alerts), "alerts": alerts}
        return await self._post(payload, "digest", delivery_id(self.name, route, "digest", period, str(len(alerts))))


def delivery_id(*parts: str) -> str:
    """Deterministic, so retries (and re-sends after a restart) carry the same id."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
