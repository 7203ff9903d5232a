"""Baseline poisoning: an attacker trickles traffic from their network on a victim key, then attacks.

The attacker can write telemetry (or use the stolen key gently) for days: a few requests a day
from their own network, same country, same SDK, same cheap model — hoping the network becomes
part of the key's baseline, so that the later high-volume abuse from it looks "known".
Defence (models/keytheft*.py): a new network is quarantined as evidence; it joins the baseline
only if it raised *no alert* for an hour, at most two such networks per key a day, and then only
on probation (models/keytheft_probation.py): low trust for at least 7 days and until it carried a
meaningful share of the key's traffic on 3 distinct days. A surge carried by a network on
probation is new-caller evidence, so it alerts even when the trickle itself never did.
"""

from __future__ import annotations

from keywatch.models.events import UsageEvent
from keywatch.models.registry import build_core
from keywatch.settings import Settings

T0 = 1_793_577_600_000
H = 3_600_000
DAYS = 4


def ev(i: str, ts: int, ip: str, model: str = "gpt-4o-mini") -> UsageEvent:
    return UsageEvent(event_id=i, ts=ts, provider="openai", key_id="key_victim", project="proj_v", model=model,
                      source_ip=ip, country="US", user_agent="openai-python/1.50.0", input_tokens=800, output_tokens=200)


def scenario(poison: bool, settings: Settings) -> tuple[list, list]:
    """(alerts during the poisoning phase, alerts during the attack)."""
    evs = [ev(f"n{i}", T0 + i * 120_000, f"34.1.2.{i % 6}") for i in range(DAYS * 720)
           if 8 <= ((T0 + i * 120_000) // H) % 24 < 20 or i % 3 == 0]  # busier in working hours
    if poison:  # days 2-3: four requests, 25 min apart, in working hours, from the attacker's /16
        evs += [ev(f"p{d}-{j}", T0 + d * 24 * H + 10 * H + j * 25 * 60_000 + 7_000, f"198.51.100.{d * 4 + j}")
                for d in (1, 2) for j in range(4)]
    evs.sort(key=lambda e: e.ts_ms)
    core = build_core(settings)
    before = []
    for i in range(0, len(evs), 2000):
        before += [a for a in core.process(evs[i:i + 2000]).alerts if a.kind == "key_theft"]
    t = T0 + DAYS * 24 * H + 11 * H  # the attack: 300 requests in 15 min from the same network
    attack = [ev(f"x{i}", t + i * 3000, f"198.51.100.{i % 250}") for i in range(300)]
    after = [a for a in core.process(attack).alerts if a.kind == "key_theft"]
    return before, after


def test_attack_from_a_new_network_is_detected_without_poisoning():
    _, after = scenario(False, Settings.from_env({}))
    assert after and max(a.score for a in after) >= 0.7


def test_poisoning_is_itself_alerted_and_the_later_attack_still_detected():
    before, after = scenario(True, Settings.from_env({}))
    assert before, "the trickle from a new network raised no alert: it could have been learned"
    assert after and max(a.score for a in after) >= 0.7 and any("new network" in r for a in after for r in a.reasons)


def test_poisoning_with_a_raised_alert_threshold():
    settings = Settings.from_env({"KEYWATCH_KEYTHEFT_ALERT_MIN_SCORE": "0.45"})
    _, after = scenario(True, settings)
    assert after, "the attack from the poisoned network raised no alert"
    assert max(a.score for a in after) >= 0.7 and any("on probation" in r for a in after for r in a.reasons)
