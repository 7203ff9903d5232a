"""Networks accepted into a key's baseline without alerts stay on probation (low trust):
acceptance is rate-limited, a surge they carry is new-caller evidence, trust is earned by days
of real traffic, and the state survives a snapshot."""

from __future__ import annotations

import pickle

from keywatch.models.core import DetectionCore
from keywatch.models.events import UsageEvent
from keywatch.models.keytheft import KeyTheftDetector
from keywatch.models.netnovelty import net_parts

T0 = 1_793_577_600_000  # Monday 00:00 UTC
MIN = 60_000
DAY = 1440 * MIN


def usage(i, ts, ip="34.1.2.3", model="gpt-4o-mini"):
    return UsageEvent(event_id=f"{i}-{ts}", ts=ts, provider="openai", key_id="k1", project="p", model=model,
                      source_ip=ip, country="US", user_agent="openai-python/1.50.0", input_tokens=500,
                      output_tokens=200, cost_usd=0.002)


def core_with_accepted(nets=("52.1.0.9",), alert_min=0.45):
    """A settled key, then quiet calls from `nets` on day 3 that raise no alert and are accepted."""
    core = DetectionCore([KeyTheftDetector(alert_min=alert_min)])
    core.process([usage(i, T0 + i * MIN) for i in range(3 * 1440)])
    t = T0 + 3 * DAY + 10 * 60 * MIN
    ev = [usage(f"o{i}", t + i * MIN) for i in range(120)]
    ev += [usage(f"q{j}", t + j * 5 * MIN + 7_000, ip=ip) for j, ip in enumerate(nets)]
    out = core.process(sorted(ev, key=lambda e: e.ts_ms))
    assert not [a for a in out.alerts if a.kind == "key_theft"]
    return core, core.detector("key_theft").keys[("openai", "k1")]


def test_acceptance_is_rate_limited_and_accepted_networks_are_on_probation():
    nets = ("52.1.0.9", "52.2.0.9", "52.3.0.9")
    _, st = core_with_accepted(nets, alert_min=0.6)  # three new networks at once: a higher threshold stays quiet
    n16 = [net_parts(ip)[2] for ip in nets]
    known = [v for v in n16 if v in st.base.ids.values("n16")]
    assert len(known) == 2 and sorted(st.prob.n16) == sorted(known)  # two a day; the third stays new


def test_quiet_use_of_a_network_on_probation_is_not_alerted_but_a_surge_from_it_is_high():
    core, st = core_with_accepted()
    t = T0 + 4 * DAY + 11 * 60 * MIN
    quiet = [usage(f"n{i}", t + i * MIN, ip="52.1.0.9" if i % 3 == 0 else "34.1.2.3") for i in range(60)]
    assert not [a for a in core.process(quiet).alerts if a.kind == "key_theft"]
    t += 2 * 60 * MIN
    surge = [usage(f"s{i}", t + i * 3000, ip=f"52.1.{i % 50}.9", model="gpt-4") for i in range(200)]
    alerts = [a for a in core.process(surge).alerts if a.kind == "key_theft"]
    assert alerts and max(a.score for a in alerts) >= 0.7
    assert any("on probation" in r for a in alerts for r in a.reasons)


def test_a_network_that_carries_real_traffic_for_a_week_earns_trust_and_survives_snapshots():
    core, st = core_with_accepted()
    assert pickle.loads(pickle.dumps(st)).prob.n16 == st.prob.n16
    assert len(pickle.dumps(st)) <= 2048
    t = T0 + 4 * DAY
    for d in range(8):  # the new office line carries half of the key's traffic every day
        core.process([usage(f"w{d}-{i}", t + d * DAY + i * 2 * MIN, ip="52.1.0.9" if i % 2 else "34.1.2.3")
                      for i in range(720)])
    st = core.detector("key_theft").keys[("openai", "k1")]  # unpacked after its idle night (models/keytheft_cold.py)
    assert st.prob is None and net_parts("52.1.0.9")[2] in st.base.ids.values("n16")
