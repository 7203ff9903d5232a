"""Text shared by the channels: titles, links, the channel interface, HTTP posting.

Alerts reach the channels as contract dicts (`Alert.to_contract()`), never with a raw key: the
`key_id` there is already a provider key id or a keyed hash.

>>> a = {"alert_id": "kw_1", "kind": "cost_spike", "severity": "high", "provider": "openai",
...      "key_id": "key_abc", "project": "search", "cost_impact_usd": 1234.5, "status": "open", "version": 1}
>>> title(a)
'HIGH cost_spike on openai key key_abc (+$1,234.50)'
>>> alert_link(a, "https://grafana.example/d/kw?var-alert={alert_id}")
'https://grafana.example/d/kw?var-alert=kw_1'
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import orjson

from keywatch.sinks.channels.retry import DeliveryError, check_response, describe

EVENTS = ("trigger", "update", "resolve")


class Channel(Protocol):
    name: str
    type: str
    sends_resolve: bool

    async def send(self, alert: dict[str, Any], event: str, route: str) -> int: ...

    async def send_digest(self, alerts: list[dict[str, Any]], route: str, period: str) -> int: ...


def money(usd: float) -> str:
    return f"${usd:,.2f}"


def subject_of(a: dict[str, Any]) -> str:
    if a.get("key_id"):
        return f"{a.get('provider')} key {a['key_id']}"
    if a.get("project"):
        return f"{a.get('provider')} project {a['project']}"
    return str(a.get("provider") or "")


def title(a: dict[str, Any], event: str = "trigger") -> str:
    cost = float(a.get("cost_impact_usd") or 0)
    head = "RESOLVED" if event == "resolve" else str(a.get("severity", "")).upper()
    return f"{head} {a.get('kind')} on {subject_of(a)}" + (f" (+{money(cost)})" if cost > 0 else "")


def alert_link(a: dict[str, Any], template: str | None) -> str | None:
    if not template:
        return None
    return template.replace("{alert_id}", str(a.get("alert_id", ""))).replace("{key_id}", str(a.get("key_id") or ""))


def facts(a: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs every channel shows."""
    return [
        ("Severity", str(a.get("severity"))), ("Kind", str(a.get("kind"))), ("Provider", str(a.get("provider"))),
        ("Key", str(a.get("key_id") or "—")), ("Project", str(a.get("project") or "—")),
        ("Cost impact", money(float(a.get("cost_impact_usd") or 0))), ("Score", f"{float(a.get('score') or 0):.2f}"),
        ("Started", str(a.get("started_at", ""))), ("Detected", str(a.get("detected_at", ""))),
        ("Status", f"{a.get('status', 'open')} (v{a.get('version', 1)})"), ("Alert id", str(a.get("alert_id"))),
    ]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str)


async def post_json(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str] | None = None,
                    timeout: float | None = None) -> int:
    """POST a JSON body; the status on 2xx, else `DeliveryError` (retryable for 429/5xx/timeouts)."""
    h = {"Content-Type": "application/json", "User-Agent": "keywatch-alerts/1"}
    h.update(headers or {})
    try:
        resp = await client.post(url, content=body, headers=h, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"timeout ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise DeliveryError(describe(exc)) from None
    check_response(resp.status_code, resp.headers.get("Retry-After"))
    return resp.status_code
