"""Slack incoming webhooks: one Block Kit message per alert (or per digest).

The webhook URL is itself the credential, so it is a `Secret` and never appears in errors.

>>> a = {"alert_id": "kw_1", "kind": "key_theft", "severity": "critical", "provider": "openai",
...      "key_id": "key_abc", "project": None, "cost_impact_usd": 12.0, "score": 0.97,
...      "reasons": ["12 requests from 5 new IPs"], "status": "open", "version": 1}
>>> msg = slack_message(a, "trigger", "https://kw.example/a/kw_1")
>>> msg["blocks"][0]["type"], msg["blocks"][0]["text"]["text"]
('header', ':rotating_light: CRITICAL key_theft on openai key key_abc (+$12.00)')
>>> [b["type"] for b in msg["blocks"]]
['header', 'section', 'section', 'actions', 'context']
"""

from __future__ import annotations

from typing import Any

import httpx

from keywatch.sinks.channels.config import ChannelSpec
from keywatch.sinks.channels.message import alert_link, dumps, facts, money, post_json, title

_ICON = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":large_orange_circle:", "low": ":white_circle:"}


def _esc(text: str) -> str:
    # Slack mrkdwn control characters; alert text (reasons) is not trusted markup.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(a: dict[str, Any], event: str, link: str | None) -> dict[str, Any]:
    icon = ":white_check_mark:" if event == "resolve" else _ICON.get(str(a.get("severity")), "")
    head = f"{icon} {title(a, event)}".strip()
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_esc(v)}"} for k, v in facts(a)[:8]]
    reasons = "\n".join(f"• {_esc(r)}" for r in (a.get("reasons") or [])[:10]) or "_no reasons given_"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150], "emoji": True}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reasons*\n{reasons}"[:3000]}},
    ]
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in keywatch"}, "url": link}]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"alert `{_esc(a.get('alert_id', ''))}` · v{a.get('version', 1)} · {event}"}]})
    return {"text": head, "blocks": blocks}


def slack_digest(alerts: list[dict[str, Any]], route: str, period: str) -> dict[str, Any]:
    total = sum(float(a.get("cost_impact_usd") or 0) for a in alerts)
    head = f"keywatch digest {period}: {len(alerts)} alerts, {money(total)} cost impact"
    lines = [f"• *{_esc(a.get('severity'))}* {_esc(a.get('kind'))} {_esc(a.get('key_id') or a.get('project') or '')}"
             f" — {money(float(a.get('cost_impact_usd') or 0))}" for a in alerts[:40]]
    if len(alerts) > 40:
        lines.append(f"… and {len(alerts) - 40} more")
    return {"text": head, "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": ("\n".join(lines) or "_no alerts_")[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"route `{_esc(route)}`"}]},
    ]}


class SlackChannel:
    type = "slack"

    def __init__(self, spec: ChannelSpec, settings, client: httpx.AsyncClient) -> None:
        self.name = spec.name
        self.spec = spec
        self.client = client
        self.timeout = settings.channels_timeout_s
        self.link_template = settings.channels_link_template
        self.sends_resolve = bool(spec.send_resolved)  # default off: a resolve is noise in chat

    async def send(self, alert: dict[str, Any], event: str, route: str) -> int:
        body = dumps(slack_message(alert, event, alert_link(alert, self.link_template)))
        return await post_json(self.client, self.spec.url.value, body, self.spec.headers, self.timeout)

    async def send_digest(self, alerts: list[dict[str, Any]], route: str, period: str) -> int:
        return await post_json(self.client, self.spec.url.value, dumps(slack_digest(alerts, route, period)),
                               self.spec.headers, self.timeout)
