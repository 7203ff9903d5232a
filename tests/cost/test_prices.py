"""Price table: alias matching, overrides, unknown models flagged (never silently $0)."""

import pytest

from keywatch.models.events import UsageEvent
from keywatch.models.prices import PriceEnricher, PriceTable

T0 = 1795622400000


@pytest.mark.parametrize("provider,model,canonical", [
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("azure_openai", "gpt-4.1-mini", "gpt-4.1-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
    ("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
    ("bedrock", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
    ("bedrock", "apac.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
    ("bedrock", "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
    ("bedrock", "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", "amazon.nova-pro"),
    ("bedrock", "meta.llama3-1-70b-instruct-v1:0", "meta.llama3-1-70b-instruct"),
    ("vertex", "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
    ("vertex", "publishers/google/models/gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("vertex", "gemini-2.5-flash", "gemini-2.5-flash"),
])
def test_alias_matching(provider, model, canonical):
    table = PriceTable.load()
    price, source = table.lookup(provider, model)
    assert source == f"table:{table.version}"
    assert price == table.models[canonical]


def test_table_is_versioned():
    table = PriceTable.load()
    assert table.version and table.as_of.startswith("20")


def test_override_and_sources(tmp_path):
    f = tmp_path / "prices.yaml"
    f.write_text("models:\n  my-finetune: {input: 1.0, output: 2.0}\n  gpt-4o: {input: 5.0, output: 20.0}\n")
    enr = PriceEnricher(PriceTable.load(f))
    evs = [
        UsageEvent(event_id="a", ts=T0, provider="openai", key_id="k", model="gpt-4o-2024-08-06", input_tokens=1_000_000),
        UsageEvent(event_id="b", ts=T0, provider="openai", key_id="k", model="ft:my-finetune", input_tokens=1_000_000),
        UsageEvent(event_id="c", ts=T0, provider="openai", key_id="k", model="gpt-4o", cost_usd=1.23),
        UsageEvent(event_id="d", ts=T0, provider="openai", key_id="k", model="mystery-model", input_tokens=10),
        UsageEvent(event_id="e", ts=T0, provider="anthropic", key_id="k", model="claude-3-haiku-20240307", input_tokens=1_000_000),
    ]
    enr.enrich(evs)
    assert (evs[0].cost_usd, evs[0].price_source) == (5.0, "override")
    assert evs[1].price_source == "unknown"  # `ft:` ids are not guessed at
    assert (evs[2].cost_usd, evs[2].price_source) == (1.23, "event")
    assert (evs[3].cost_usd, evs[3].price_source) == (0.0, "unknown")
    assert evs[4].price_source.startswith("table:") and evs[4].cost_usd == pytest.approx(0.25)
    assert enr.unknown[("openai", "mystery-model")] == 1
    assert {"provider": "openai", "model": "mystery-model", "events": 1} in enr.describe()["unknown_models"]


def test_cached_tokens():
    table = PriceTable.load()
    p, _ = table.lookup("openai", "gpt-4o")
    # OpenAI counts cached tokens inside input tokens; Anthropic reports them apart.
    assert table.cost("openai", p, 1_000_000, 0, 1_000_000) == pytest.approx(1.25)
    p2, _ = table.lookup("anthropic", "claude-3-5-sonnet")
    assert table.cost("anthropic", p2, 1_000_000, 0, 1_000_000) == pytest.approx(3.30)
