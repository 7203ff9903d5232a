"""cost_spike: a spike is caught within 5 minutes with the right root cause; a steady seasonal
series raises nothing over 7 days; feedback suppresses repeats; forecast rows are emitted."""

from keywatch.models.core import DetectionCore
from keywatch.models.costspike import CostSpikeDetector
from keywatch.models.events import UsageEvent, format_ts
from keywatch.models.prices import PriceEnricher

from .sim import DAY0, MIN, steady


def run(events, det, chunk=5000):
    core = DetectionCore([det], [PriceEnricher()])
    alerts, rows = {}, {}
    buf = []
    for e in events:
        buf.append(e)
        if len(buf) >= chunk:
            out = core.process(buf)
            buf = []
            for a in out.alerts:
                alerts[a.alert_id] = a
            for t, r in out.rows.items():
                rows[t] = rows.get(t, 0) + len(r)
    out = core.process(buf)
    for a in out.alerts:
        alerts[a.alert_id] = a
    return core, list(alerts.values()), rows


def with_spike(days: float, start_min: int, minutes: int = 20):
    """Steady traffic plus key7 sending o1 calls from eu-west-1 (≈ $9/min) for `minutes`."""
    spike = [UsageEvent(event_id=f"x{m}-{j}", ts=DAY0 + m * MIN + 500 + j * 2000, provider="openai", key_id="key7",
                        project="p1", model="o1-2024-12-17", region="eu-west-1", input_tokens=20_000, output_tokens=5_000)
             for m in range(start_min, start_min + minutes) for j in range(20)]
    base = list(steady(days))
    return sorted(base + spike, key=lambda e: e.ts_ms)


def test_spike_detected_within_5_minutes_with_root_cause():
    start = 2 * 1440 + 13 * 60  # day 3, 13:00 UTC
    core, alerts, rows = run(with_spike(2.7, start), CostSpikeDetector())
    spikes = [a for a in alerts if a.kind == "cost_spike"]
    assert spikes, "no cost_spike raised"
    key_alert = next(a for a in spikes if a.key_id == "key7")
    proj_alert = next(a for a in spikes if a.key_id is None and a.project == "p1")
    t_spike = DAY0 + start * MIN
    for a in (key_alert, proj_alert):
        latency_s = (a.detected_at_ms - t_spike) / 1000
        assert 0 <= latency_s <= 300, f"{a.key_id}: detected after {latency_s:.0f} s"
        print(f"latency {a.key_id}: {latency_s:.0f} s")
        rc = a.details["root_cause"]
        assert rc["models"][0]["value"] == "o1-2024-12-17"
        assert rc["regions"][0]["value"] == "eu-west-1"
        assert a.cost_impact_usd >= 5
        assert any("top model o1-2024-12-17" in r for r in a.reasons)
    top_key = proj_alert.details["root_cause"]["keys"][0]
    assert top_key["value"] == "key7" and top_key["pct"] > 80
    assert not [a for a in spikes if a.key_id not in (None, "key7")]
    assert rows["spend_forecast"] > 2 * 1440 and rows["spend_projection"] > 0
    # spend returns to normal: the incident resolves explicitly (status carried by a later version)
    assert key_alert.status == "resolved"


def test_no_spike_on_seven_steady_days():
    core, alerts, rows = run(steady(7, keys=6, seed=3), CostSpikeDetector())
    spikes = [(a.key_id, a.detected_at, a.reasons[0]) for a in alerts if a.kind == "cost_spike"]
    assert spikes == []
    det = core.detector("cost_spike")
    proj = {p["level"]: p for p in det.describe()["projections"]}
    assert proj["project"]["eom_projected_usd"] >= proj["project"]["month_spent_usd"] > 0
    assert det.bank.nbytes() < 200_000


def test_feedback_planned_activity_suppresses_repeats():
    start = 2 * 1440 + 13 * 60
    det = CostSpikeDetector()
    core = DetectionCore([det], [PriceEnricher()])
    events = with_spike(2.7, start, minutes=6)
    cut = DAY0 + (start + 4) * MIN
    out = core.process([e for e in events if e.ts_ms < cut])
    first = [a for a in out.alerts if a.kind == "cost_spike" and a.key_id == "key7"]
    assert first
    until = DAY0 + (start + 600) * MIN
    assert core.feedback(first[0].alert_id, "planned_activity", cut, until_ms=until).status == "resolved"
    out2 = core.process([e for e in events if e.ts_ms >= cut])
    assert not [a for a in out2.alerts if a.kind == "cost_spike" and a.key_id == "key7" and a.status == "open"]
    assert det.describe_key("key7")["series"][0]["history_min"] > 1000


def test_unknown_model_alert_once():
    evs = [UsageEvent(event_id=f"u{i}", ts=DAY0 + i * 1000, provider="openai", key_id="k", project="p",
                      model="secret-model-x", input_tokens=100) for i in range(50)]
    core, alerts, _ = run(evs, CostSpikeDetector())
    unk = [a for a in alerts if a.kind == "unknown_model"]
    assert len(unk) == 1 and "secret-model-x" in unk[0].reasons[0]
    assert core.detector("cost_spike").describe()["unknown_models"][0]["events"] == 50
    assert format_ts(unk[0].detected_at_ms) == unk[0].detected_at
