"""Email over SMTP (stdlib `smtplib`, run in a thread): plain text + HTML, chart inline by CID.

Structure: multipart/alternative[text/plain, multipart/related[text/html, image/png]]; the
HTML shows the chart with `<img src="cid:…">` (see `chart.py` for the series it draws).
STARTTLS is used when the server offers it (`KEYWATCH_SMTP_STARTTLS`); credentials are never
sent over a plaintext connection to a non-loopback server.

>>> a = {"alert_id": "kw_1", "kind": "cost_spike", "severity": "high", "provider": "openai",
...      "key_id": "key_abc", "project": "p", "cost_impact_usd": 40.0, "reasons": ["<b>5x</b> forecast"],
...      "status": "open", "version": 1, "details": {}}
>>> msg = build_message(a, "trigger", sender="kw@x", to=["fin@x"], cc=[], prefix="[kw]", link=None, png=None)
>>> msg["Subject"], msg.get_content_type(), [p.get_content_type() for p in msg.walk()][1:]
('[kw] HIGH cost_spike on openai key key_abc (+$40.00)', 'multipart/alternative', ['text/plain', 'text/html'])
>>> "&lt;b&gt;5x&lt;/b&gt;" in msg.get_body(("html",)).get_content()
True
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from keywatch.sinks.channels.chart import render_chart
from keywatch.sinks.channels.config import ChannelSpec
from keywatch.sinks.channels.message import alert_link, facts, money, title
from keywatch.sinks.channels.retry import DeliveryError, describe

_STYLE = "font-family:Arial,sans-serif;font-size:14px;color:#222"
_COLOR = {"critical": "#b10026", "high": "#e31a1c", "medium": "#fd8d3c", "low": "#969696"}


def _text(a: dict[str, Any], event: str, link: str | None) -> str:
    lines = [title(a, event), ""] + [f"{k:12} {v}" for k, v in facts(a)] + ["", "Reasons:"]
    lines += [f"  - {r}" for r in a.get("reasons") or []] or ["  (none)"]
    if link:
        lines += ["", f"Open: {link}"]
    return "\n".join(lines) + "\n"


def _html(a: dict[str, Any], event: str, link: str | None, cid: str | None) -> str:
    e = html.escape
    color = "#31a354" if event == "resolve" else _COLOR.get(str(a.get("severity")), "#444")
    rows = "".join(f"<tr><td style='padding:2px 12px 2px 0;color:#666'>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in facts(a))
    reasons = "".join(f"<li>{e(str(r))}</li>" for r in a.get("reasons") or []) or "<li>(none)</li>"
    chart = f"<p><img src='cid:{cid[1:-1]}' alt='spend against forecast' style='max-width:100%'></p>" if cid else ""
    button = f"<p><a href='{e(link, quote=True)}'>Open in keywatch</a></p>" if link else ""
    return (f"<html><body style='{_STYLE}'><h2 style='color:{color};margin:0 0 8px'>{e(title(a, event))}</h2>"
            f"<table>{rows}</table><h3>Reasons</h3><ul>{reasons}</ul>{chart}{button}</body></html>")


def build_message(a: dict[str, Any], event: str, *, sender: str, to: list[str], cc: list[str], prefix: str,
                  link: str | None, png: bytes | None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"{prefix} {title(a, event)}".strip()
    _address(msg, sender, to, cc)
    msg["X-Keywatch-Alert-Id"] = str(a.get("alert_id", ""))
    msg.set_content(_text(a, event, link))
    cid = make_msgid(domain="keywatch") if png else None
    msg.add_alternative(_html(a, event, link, cid), subtype="html")
    if png and cid:
        msg.get_payload()[1].add_related(png, "image", "png", cid=cid, filename="chart.png")
    return msg


def build_digest(alerts: list[dict[str, Any]], route: str, period: str, *, sender: str, to: list[str],
                 cc: list[str], prefix: str) -> EmailMessage:
    total = sum(float(a.get("cost_impact_usd") or 0) for a in alerts)
    head = f"Daily digest {period}: {len(alerts)} alerts, {money(total)} cost impact"
    msg = EmailMessage()
    msg["Subject"] = f"{prefix} {head}".strip()
    _address(msg, sender, to, cc)
    cols = ("severity", "kind", "provider", "key_id", "project", "cost_impact_usd", "detected_at", "alert_id")
    text = [head, f"route: {route}", ""] + ["  ".join(str(a.get(c) if a.get(c) is not None else "—") for c in cols) for a in alerts]
    msg.set_content("\n".join(text) + "\n")
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{e(str(a.get(c) if a.get(c) is not None else '—'))}</td>" for c in cols) + "</tr>"
                   for a in alerts)
    hdr = "".join(f"<th style='text-align:left;padding:2px 8px'>{c}</th>" for c in cols)
    msg.add_alternative(f"<html><body style='{_STYLE}'><h2>{e(head)}</h2><p>route {e(route)}</p>"
                        f"<table><tr>{hdr}</tr>{rows}</table></body></html>", subtype="html")
    return msg


def _address(msg: EmailMessage, sender: str, to: list[str], cc: list[str]) -> None:
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="keywatch")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class EmailChannel:
    type = "email"

    def __init__(self, spec: ChannelSpec, settings, client=None) -> None:
        self.name = spec.name
        self.spec = spec
        self.host, self.port = settings.smtp_host, settings.smtp_port
        self.user, self._password = settings.smtp_user, settings.secret("smtp_password")
        self.starttls, self.ssl = settings.smtp_starttls, settings.smtp_ssl
        self.sender = spec.sender or settings.smtp_from
        self.timeout = settings.channels_timeout_s
        self.link_template = settings.channels_link_template
        self.sends_resolve = bool(spec.send_resolved)

    def secrets(self) -> list[str]:
        return [self._password] if self._password else []

    async def send(self, alert: dict[str, Any], event: str, route: str) -> int:
        return await asyncio.to_thread(self._send_alert_sync, alert, event)

    async def send_digest(self, alerts: list[dict[str, Any]], route: str, period: str) -> int:
        msg = build_digest(alerts, route, period, sender=self.sender, to=self.spec.to, cc=self.spec.cc, prefix=self.spec.subject_prefix)
        return await asyncio.to_thread(self._smtp_send, msg)

    def _send_alert_sync(self, alert: dict[str, Any], event: str) -> int:
        png = None
        if self.spec.chart and event != "resolve":
            try:
                png = render_chart(alert)
            except Exception:  # noqa: BLE001 — a bad series costs the chart, not the email
                png = None
        msg = build_message(alert, event, sender=self.sender, to=self.spec.to, cc=self.spec.cc,
                            prefix=self.spec.subject_prefix, link=alert_link(alert, self.link_template), png=png)
        return self._smtp_send(msg)

    def _smtp_send(self, msg: EmailMessage) -> int:
        if not self.host:
            raise DeliveryError("KEYWATCH_SMTP_HOST is not set", retry=False)
        try:
            cls = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
            kwargs = {"context": ssl.create_default_context()} if self.ssl else {}
            with cls(self.host, self.port, timeout=self.timeout, **kwargs) as smtp:
                smtp.ehlo()
                tls = self.ssl
                if self.starttls and not self.ssl and smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                    tls = True
                if self.user:
                    if not tls and not _loopback(self.host):
                        raise DeliveryError("refusing SMTP AUTH over a plaintext connection", retry=False)
                    smtp.login(self.user, self._password or "")
                refused = smtp.send_message(msg)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            raise DeliveryError(f"SMTP recipients refused {codes}", codes[0] if codes else 0,
                                retry=any(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}", exc.smtp_code, retry=400 <= exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, refused connections, timeouts
            raise DeliveryError(describe(exc)) from None
        if refused:
            raise DeliveryError(f"SMTP refused {len(refused)} recipient(s)", retry=False)
        return 250
