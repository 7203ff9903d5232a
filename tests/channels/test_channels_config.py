"""The channels file: the shipped example, secrets, routing, errors, and the hook wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from channels_helpers import make_alert

from keywatch.sinks.channels.config import ChannelsConfigError, load_config, parse_config
from keywatch.sinks.channels.router import match_routes

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "channels.example.yaml"
SECRETS = dict(SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/zzz", PAGERDUTY_ROUTING_KEY="rk-123",
               WEBHOOK_SECRET="whsec-abc")


def test_example_config_routes_finance_and_soc(make_settings):
    cfg = load_config(EXAMPLE, make_settings(**SECRETS))
    assert cfg.channels["soc-pagerduty"].routing_key.value == "rk-123"
    assert cfg.channels["finance-slack"].url.value.endswith("/zzz")
    assert "rk-123" not in repr(cfg) and "zzz" not in repr(cfg) and "whsec" not in str(cfg.channels)

    def routes(kind, sev):
        return [r.name for r in match_routes(cfg, make_alert(kind=kind, severity=sev).to_contract())]

    assert routes("cost_spike", "high") == ["finance"]
    assert routes("billing_divergence", "medium") == ["finance"]
    assert routes("cost_spike", "low") == ["finance-digest"]
    assert routes("key_theft", "critical") == ["soc"]
    assert routes("key_theft", "medium") == []
    assert routes("revocation_approval", "high") == ["soc"]
    assert routes("shadow_key", "critical") == []


def test_secret_from_file_and_errors(tmp_path, make_settings):
    (tmp_path / "pd.key").write_text("rk-from-file\n")
    base = {"channels": {"pd": {"type": "pagerduty", "routing_key_file": "pd.key"}},
            "routes": [{"name": "soc", "channels": ["pd"]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    assert load_config(path, make_settings()).channels["pd"].routing_key.value == "rk-from-file"

    s = make_settings()
    bad = [
        ({"channels": {"pd": {"type": "pagerduty"}}, "routes": [{"name": "r", "channels": ["pd"]}]}, "routing_key"),
        ({"channels": {"x": {"type": "sms"}}, "routes": []}, "type must be"),
        ({"channels": {"w": {"type": "webhook", "url": "http://h"}}, "routes": [{"name": "r", "channels": ["nope"]}]}, "unknown channel"),
        ({"channels": {"pd": {"type": "pagerduty", "routing_key": "k"}},
          "routes": [{"name": "r", "mode": "digest", "channels": ["pd"]}]}, "digest"),
        ({"channels": {"w": {"type": "webhook", "url": "http://h"}},
          "routes": [{"name": "r", "min_severity": "urgent", "channels": ["w"]}]}, "min_severity"),
        ({"channels": {"w": {"type": "webhook", "url": "http://h", "secret_setting": "nope"}}, "routes": []}, "not a keywatch setting"),
        ({"channels": {"e": {"type": "email"}}, "routes": []}, "to:"),
        ([], "channels"),
    ]
    for doc, needle in bad:
        with pytest.raises(ChannelsConfigError, match=needle):
            parse_config(doc, s)


def test_build_alert_hooks_appends_the_dispatcher(make_settings):
    from keywatch.hooks import build_alert_hooks
    from keywatch.sinks.channels.dispatch import Dispatcher

    assert not any(isinstance(h, Dispatcher) for h in build_alert_hooks(make_settings()))
    hooks = build_alert_hooks(make_settings(CHANNELS_FILE=str(EXAMPLE), **SECRETS))
    assert any(isinstance(h, Dispatcher) for h in hooks)
