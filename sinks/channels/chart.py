"""PNG chart of an alert's series, for the email channel (matplotlib, Agg, no pyplot state).

The series shape (filled by detectors in `alert.details["series"]`):

    [{"ts": <epoch ms | RFC 3339 str>, "actual": float, "expected": float, "upper": float,
      "lower": float (optional)}, ...]

`actual` is the observed value per bucket (e.g. USD per 5 min), `expected` the forecast and
`upper`/`lower` its band. Cost alerts chart the spike against that band; any other alert whose
series has `ts` plus numeric fields gets those fields as lines. No usable series: no chart.

>>> pts = [{"ts": 1795622400000 + i * 60_000, "actual": a, "expected": 1.0, "upper": 2.0}
...        for i, a in enumerate([1, 1.2, 0.9, 6, 9])]
>>> png = render_chart({"kind": "cost_spike", "details": {"series": pts}, "started_at_ms": 1795622580000})
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
>>> render_chart({"kind": "key_theft", "details": {}}) is None
True
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from keywatch.models.events import parse_ts

_BAND = ("actual", "expected", "upper", "lower")
MAX_POINTS = 2000


def series_points(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The usable points of `details["series"]`, in time order (bad points skipped)."""
    raw = details.get("series") if isinstance(details, dict) else None
    if not isinstance(raw, list):
        return []
    pts = []
    for p in raw[-MAX_POINTS:]:
        if not isinstance(p, dict) or "ts" not in p:
            continue
        try:
            ts = parse_ts(p["ts"])
        except (TypeError, ValueError):
            continue
        nums = {k: float(v) for k, v in p.items() if k != "ts" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if nums:
            pts.append({"ts": ts, **nums})
    pts.sort(key=lambda p: p["ts"])
    return pts


def render_chart(alert: dict[str, Any], *, width: float = 7.0, height: float = 3.2) -> bytes | None:
    """PNG bytes, or None when the alert carries no usable series."""
    pts = series_points(alert.get("details") or {})
    if len(pts) < 2:
        return None
    from io import BytesIO

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = [datetime.fromtimestamp(p["ts"] / 1000, tz=timezone.utc) for p in pts]

    def col(name: str) -> list[float]:
        return [p.get(name, float("nan")) for p in pts]

    keys = {k for p in pts for k in p if k != "ts"}
    if "upper" in keys:
        lower = col("lower") if "lower" in keys else col("expected") if "expected" in keys else [0.0] * len(pts)
        ax.fill_between(x, lower, col("upper"), color="#9ecae1", alpha=0.45, label="expected band", linewidth=0)
    if "expected" in keys:
        ax.plot(x, col("expected"), color="#3182bd", linestyle="--", linewidth=1.2, label="expected")
    if "actual" in keys:
        actual = col("actual")
        ax.plot(x, actual, color="#d62728", linewidth=1.8, label="actual")
        if "upper" in keys:
            over = [(xi, a) for xi, a, u in zip(x, actual, col("upper")) if a > u]
            if over:
                ax.scatter([o[0] for o in over], [o[1] for o in over], color="#d62728", s=14, zorder=3)
    for k in sorted(keys - set(_BAND))[:6]:  # other series (non-cost alerts)
        ax.plot(x, col(k), linewidth=1.2, label=k)
    started = alert.get("started_at_ms")
    if isinstance(started, int) and started > 0 and pts[0]["ts"] <= started <= pts[-1]["ts"]:
        ax.axvline(datetime.fromtimestamp(started / 1000, tz=timezone.utc), color="#636363", linestyle=":", linewidth=1)
    ax.set_title(f"{alert.get('kind', 'alert')} · {alert.get('key_id') or alert.get('project') or ''}", fontsize=10)
    unit = (alert.get("details") or {}).get("series_unit")
    if unit:
        ax.set_ylabel(str(unit), fontsize=9)
    from matplotlib.dates import DateFormatter

    ax.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M", tz=timezone.utc))
    ax.set_xlabel("UTC", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
