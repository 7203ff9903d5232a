"""Render an incident report (`keywatch.report.collect`'s dict) as one self-contained HTML page.

No external assets: the chart is inline SVG, styles and the small script are inline, and a
Content-Security-Policy forbids loading anything else (the page is safe to mail or attach to a
ticket). The script records the chart's drawn size in `data-rendered-width` so a headless
browser test can tell that it actually rendered.

>>> page = render({"alert": {"alert_id": "a<1>", "kind": "key_theft", "provider": "p", "key_id": "k", "project": None,
...   "started_at": "s", "detected_at": "d", "updated_at": "u", "started_at_ms": 0, "detected_at_ms": 1, "updated_at_ms": 2,
...   "severity": "high", "score": 0.8, "reasons": ["r"], "cost_impact_usd": 1.0, "status": "open", "version": 1, "details": {}},
...   "timeline": {"bucket_s": 60, "from_ms": 0, "to_ms": 10, "points": []}, "actions": [], "revocations": [], "deliveries": []})
>>> "a&lt;1&gt;" in page and "<svg" in page
True
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

W, H, PAD_L, PAD_B, PAD_T = 900, 260, 56, 28, 12
SEV_COLOR = {"critical": "#b3001b", "high": "#e4572e", "medium": "#f3a712", "low": "#4c86a8"}


def _x(t: int, lo: int, hi: int) -> float:
    return PAD_L + (W - PAD_L - 8) * (t - lo) / max(hi - lo, 1)


def chart(data: dict[str, Any]) -> str:
    """Requests per bucket as bars, cost as a line, the anomaly window shaded, detection marked."""
    tl, a = data["timeline"], data["alert"]
    lo, hi, pts = tl["from_ms"], tl["to_ms"], tl["points"]
    ymax = max([p["requests"] for p in pts] + [1])
    cmax = max([p["cost_usd"] for p in pts] + [1e-9])
    plot_h = H - PAD_B - PAD_T
    bw = max(1.0, (W - PAD_L - 8) * tl["bucket_s"] * 1000 / max(hi - lo, 1) - 1)
    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" style="max-width:{W}px" '
             f'role="img" aria-label="activity of the key around the anomaly">']
    x0, x1 = _x(a["started_at_ms"], lo, hi), _x(max(a["updated_at_ms"], a["detected_at_ms"]), lo, hi)
    parts.append(f'<rect class="anomaly" x="{x0:.1f}" y="{PAD_T}" width="{max(x1 - x0, 2):.1f}" height="{plot_h}" '
                 f'fill="#e4572e" fill-opacity="0.15"><title>anomaly: {escape(a["started_at"])} → {escape(a["updated_at"])}</title></rect>')
    for p in pts:
        h = plot_h * p["requests"] / ymax
        parts.append(f'<rect class="bar" x="{_x(p["t"], lo, hi):.1f}" y="{PAD_T + plot_h - h:.1f}" width="{bw:.1f}" '
                     f'height="{h:.1f}" fill="#4c86a8"><title>{p["requests"]} requests, ${p["cost_usd"]:.2f}, '
                     f'{p["ips"]} IPs, {p["countries"]} countries</title></rect>')
    if pts:
        line = " ".join(f'{_x(p["t"], lo, hi) + bw / 2:.1f},{PAD_T + plot_h - plot_h * p["cost_usd"] / cmax:.1f}' for p in pts)
        parts.append(f'<polyline class="cost" points="{line}" fill="none" stroke="#222" stroke-width="1.5"/>')
    xd = _x(a["detected_at_ms"], lo, hi)
    parts.append(f'<line class="detected" x1="{xd:.1f}" x2="{xd:.1f}" y1="{PAD_T}" y2="{PAD_T + plot_h}" stroke="#b3001b" '
                 f'stroke-width="2" stroke-dasharray="4 3"/><text x="{xd + 4:.1f}" y="{PAD_T + 12}" font-size="11" '
                 f'fill="#b3001b">detected</text>')
    parts.append(f'<line x1="{PAD_L}" x2="{W - 8}" y1="{PAD_T + plot_h}" y2="{PAD_T + plot_h}" stroke="#999"/>'
                 f'<text x="4" y="{PAD_T + 10}" font-size="11">{ymax} req</text>'
                 f'<text x="4" y="{PAD_T + 24}" font-size="11">${cmax:.2f}</text>'
                 f'<text x="{PAD_L}" y="{H - 8}" font-size="11">{escape(_ts(lo))}</text>'
                 f'<text x="{W - 8}" y="{H - 8}" font-size="11" text-anchor="end">{escape(_ts(hi))}</text></svg>')
    return "".join(parts)


def _ts(ms: int) -> str:
    from keywatch.models.events import format_ts
    return format_ts(ms)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None, empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    cols = columns or list(rows[0].keys())
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ddd}
.sev{display:inline-block;color:#fff;padding:1px 8px;border-radius:3px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
.muted{color:#777}dl{display:grid;grid-template-columns:180px 1fr;margin:0}dt{color:#555}dd{margin:0}"""

_SCRIPT = """(function(){var s=document.getElementById('timeline');var r=s.getBoundingClientRect();
s.setAttribute('data-rendered-width',String(Math.round(r.width)));
s.setAttribute('data-rendered-bars',String(s.querySelectorAll('rect.bar').length));})();"""


def render(data: dict[str, Any]) -> str:
    a = data["alert"]
    sev = a["severity"]
    facts = [("Alert", a["alert_id"]), ("Kind", a["kind"]), ("Provider", a["provider"]), ("Key", a["key_id"] or "—"),
             ("Project", a["project"] or "—"), ("Status", f'{a["status"]} (version {a["version"]})'),
             ("Started", a["started_at"]), ("Detected", a["detected_at"]), ("Last update", a["updated_at"]),
             ("Score", f'{a["score"]:.2f}'), ("Cost impact", f'${a["cost_impact_usd"]:,.2f} above the expected baseline')]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    reasons = "".join(f"<li>{escape(r)}</li>" for r in a["reasons"]) or "<li class='muted'>none recorded</li>"
    details = escape(json.dumps(a.get("details") or {}, indent=2, default=str))
    total = sum(p["cost_usd"] for p in data["timeline"]["points"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>keywatch incident {escape(a["alert_id"])}</title><style>{_CSS}</style></head>
<body data-alert-id="{escape(a["alert_id"])}">
<h1>{escape(a["kind"].replace("_", " "))} on {escape(a["key_id"] or a["project"] or a["provider"])}
 <span class="sev" style="background:{SEV_COLOR.get(sev, '#555')}">{escape(sev)}</span></h1>
<dl>{dl}</dl>
<h2>Activity timeline</h2>
<p class="muted">Requests per {data["timeline"]["bucket_s"]} s (bars), spend (line; ${total:,.2f} in the window);
the shaded band is the anomaly, the dashed line the detection.</p>
{chart(data)}
<h2>Evidence</h2><ul>{reasons}</ul>
<details><summary>Detector details</summary><pre>{details}</pre></details>
<h2>Actions taken</h2>
<h3>Revocations</h3>{_table(data["revocations"], ["requested_at", "action", "outcome", "adapter", "actor", "dry_run", "reason", "error"], "no revocation")}
<h3>Analyst actions</h3>{_table(data["actions"], ["at", "action", "label", "until", "actor", "note"], "no acknowledgement or feedback")}
<h2>Deliveries</h2>{_table(data["deliveries"], None, "no delivery recorded")}
<script>{_SCRIPT}</script>
</body></html>
"""
