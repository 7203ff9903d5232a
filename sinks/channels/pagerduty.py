"""PagerDuty Events API v2: `POST {base}/v2/enqueue`, trigger and resolve, dedup_key = alert_id.

PagerDuty groups events by `dedup_key`, so an updated alert re-triggers the same incident and a
resolved one closes it. Severity: critical→critical, high→error, medium→warning, low→info.

>>> a = {"alert_id": "kw_1", "kind": "key_theft", "severity": "high", "provider": "openai",
...      "key_id": "key_abc", "project": "p", "cost_impact_usd": 3.0, "score": 0.8, "reasons": ["r"],
...      "detected_at": "2026-11-25T16:00:00.000Z", "status": "open", "version": 2}
>>> ev = pagerduty_event(a, "trigger", "RK", None)
>>> ev["event_action"], ev["dedup_key"], ev["payload"]["severity"], ev["payload"]["source"]
('trigger', 'kw_1', 'error', 'keywatch/openai/key_abc')
>>> pagerduty_event(a, "resolve", "RK", None)
{'routing_key': 'RK', 'event_action': 'resolve', 'dedup_key': 'kw_1'}
"""

from __future__ import annotations

from typing import Any

import httpx

from keywatch.sinks.channels.config import ChannelSpec
from keywatch.sinks.channels.message import alert_link, dumps, post_json, title

SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


def pagerduty_event(a: dict[str, Any], event: str, routing_key: str, link: str | None) -> dict[str, Any]:
    if event == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": a["alert_id"]}
    details = {k: a.get(k) for k in ("alert_id", "kind", "provider", "key_id", "project", "score",
                                     "cost_impact_usd", "reasons", "started_at", "detected_at", "status", "version")}
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a["alert_id"],
        "client": "keywatch",
        "payload": {
            "summary": title(a)[:1024],
            "source": f"keywatch/{a.get('provider')}/{a.get('key_id') or a.get('project') or '-'}",
            "severity": SEVERITY.get(str(a.get("severity")), "warning"),
            "timestamp": a.get("detected_at") or None,
            "component": a.get("key_id") or None,
            "group": a.get("project") or None,
            "class": a.get("kind"),
            "custom_details": details,
        },
    }
    body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
    if link:
        body["client_url"] = link
        body["links"] = [{"href": link, "text": "Open in keywatch"}]
    return body


class PagerDutyChannel:
    type = "pagerduty"

    def __init__(self, spec: ChannelSpec, settings, client: httpx.AsyncClient) -> None:
        self.name = spec.name
        self.spec = spec
        self.client = client
        self.url = str(spec.url or settings.pagerduty_url).rstrip("/") + "/v2/enqueue"
        self.timeout = settings.channels_timeout_s
        self.link_template = settings.channels_link_template
        self.sends_resolve = spec.send_resolved is not False

    async def send(self, alert: dict[str, Any], event: str, route: str) -> int:
        body = pagerduty_event(alert, event, self.spec.routing_key.value, alert_link(alert, self.link_template))
        return await post_json(self.client, self.url, dumps(body), self.spec.headers, self.timeout)

    async def send_digest(self, alerts: list[dict[str, Any]], route: str, period: str) -> int:
        raise NotImplementedError("pagerduty takes no digests")  # rejected when the config loads
