"""Email to a real local SMTP server (aiosmtpd), the inline chart, and the daily digest."""

from __future__ import annotations

import asyncio
import email
import email.policy

import yaml
from channels_helpers import make_alert

from keywatch.sinks.channels.config import load_config
from keywatch.sinks.channels.dispatch import Dispatcher

SMTP_PASSWORD = "smtp-pass-0123456789"


def series(n=12, spike_from=9):
    t0 = 1795620000000
    return [{"ts": t0 + i * 300_000, "actual": 2.0 if i < spike_from else 25.0 + i, "expected": 2.0, "upper": 3.5, "lower": 0.5}
            for i in range(n)]


def setup(tmp_path, make_settings, smtp, now=None):
    host, port, _ = smtp
    doc = {
        "channels": {"fin-mail": {"type": "email", "to": ["finance@example.com"], "cc": ["cfo@example.com"],
                                  "subject_prefix": "[kw]"}},
        "routes": [
            {"name": "finance", "kinds": ["cost_spike", "budget"], "min_severity": "medium", "channels": ["fin-mail"]},
            {"name": "daily", "kinds": ["cost_spike"], "max_severity": "low", "mode": "digest", "digest_at": "08:00",
             "channels": ["fin-mail"]},
        ],
    }
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.safe_dump(doc))
    settings = make_settings(CHANNELS_FILE=str(path), SMTP_HOST=host, SMTP_PORT=str(port), SMTP_FROM="kw@example.com",
                             SMTP_USER="", SMTP_PASSWORD=SMTP_PASSWORD, CHANNELS_BACKOFF_S="0.01", CHANNELS_MAX_ATTEMPTS="2")
    rows: list = []
    kw = {"clock": (lambda: now)} if now is not None else {}
    return Dispatcher(load_config(path, settings), settings, record=rows.extend, **kw), rows


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_cost_alert_email_has_text_html_and_inline_chart(tmp_path, make_settings, smtp_server):
    d, rows = setup(tmp_path, make_settings, smtp_server)
    alert = make_alert("kw_cost", kind="cost_spike", severity="high", cost_impact_usd=310.25, key_id="key_fin1",
                       details={"series": series(), "series_unit": "USD / 5 min"},
                       reasons=["spend 12x forecast <upper band>"])
    asyncio.run(d([alert]))
    (raw,) = smtp_server[2]
    msg = parse(raw)
    assert msg["Subject"] == "[kw] HIGH cost_spike on openai key key_fin1 (+$310.25)"
    assert msg["To"] == "finance@example.com" and msg["Cc"] == "cfo@example.com" and msg["From"] == "kw@example.com"
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "key_fin1" in text and "$310.25" in text and "spend 12x forecast <upper band>" in text
    assert "spend 12x forecast &lt;upper band&gt;" in html  # escaped, not markup
    png = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert png.get_content()[:8] == b"\x89PNG\r\n\x1a\n" and len(png.get_content()) > 2000
    assert f"cid:{png['Content-ID'].strip('<>')}" in html
    assert [(r[5], r[9]) for r in rows] == [("fin-mail", "delivered")]
    assert SMTP_PASSWORD not in raw.decode("utf-8", "replace")


def test_alert_without_series_has_no_image(tmp_path, make_settings, smtp_server):
    d, _ = setup(tmp_path, make_settings, smtp_server)
    asyncio.run(d([make_alert("kw_b", kind="budget", severity="medium", details={"series": [{"ts": "bad"}]})]))
    (raw,) = smtp_server[2]
    assert [p.get_content_type() for p in parse(raw).walk()] == ["multipart/alternative", "text/plain", "text/html"]


def test_smtp_down_is_retried_then_recorded(tmp_path, make_settings, smtp_server):
    d, rows = setup(tmp_path, make_settings, smtp_server)
    d.settings = d.settings.model_copy(update={"smtp_port": 9})  # nothing listens there
    asyncio.run(d([make_alert("kw_c", kind="cost_spike", severity="high")]))
    assert [(r[8], r[9]) for r in rows] == [(1, "retry"), (2, "failed")]
    assert "Connection refused" in rows[-1][11] or "Errno" in rows[-1][11]


def test_daily_digest_collects_and_sends_once(tmp_path, make_settings, smtp_server):
    now = [1795622400.0]  # 2026-11-25 16:00 UTC: the 08:00 digest of today is due
    d, rows = setup(tmp_path, make_settings, smtp_server)
    d.clock = lambda: now[0]
    d.box.mark_sent("daily", "2026-11-25")  # today's already went out

    async def run():
        await d([make_alert(f"kw_low{i}", kind="cost_spike", severity="low", cost_impact_usd=float(i)) for i in range(3)])
        await d([make_alert("kw_low1", kind="cost_spike", severity="low", version=2)])  # no rise: not again
        assert smtp_server[2] == []  # collected, nothing sent yet
        now[0] += 86400  # next day, 16:00: due
        await d([])
        await d([])  # sent once per day

    asyncio.run(run())
    (raw,) = smtp_server[2]
    msg = parse(raw)
    assert msg["Subject"].startswith("[kw] Daily digest 2026-11-26: 3 alerts")
    text = msg.get_body(("plain",)).get_content()
    assert all(f"kw_low{i}" in text for i in range(3))
    assert [(r[0], r[7], r[9]) for r in rows] == [("digest:daily:2026-11-26", "digest", "delivered")]
    assert d.box.pending("daily", "fin-mail") == []


def test_digest_flush_on_demand_keeps_alerts_when_sending_fails(tmp_path, make_settings, smtp_server):
    d, rows = setup(tmp_path, make_settings, smtp_server)
    d.box.add("daily", "fin-mail", make_alert("kw_x", kind="cost_spike", severity="low").to_contract())
    d.settings = d.settings.model_copy(update={"smtp_port": 9})
    assert asyncio.run(d.flush_digests(force=True)) == {"daily": 0}
    assert [a["alert_id"] for a in d.box.pending("daily", "fin-mail")] == ["kw_x"]  # kept for next time
    d.settings = d.settings.model_copy(update={"smtp_port": smtp_server[1]})
    assert asyncio.run(d.flush_digests(force=True)) == {"daily": 1}
    assert len(smtp_server[2]) == 1 and d.box.pending("daily", "fin-mail") == []
