"""Constants and builders shared by the API tests (the fixtures are in conftest.py)."""

from __future__ import annotations

TOKEN = "api-test-token-5678"
AUTH = f"Bearer {TOKEN}"
T0 = 1_795_600_800_000  # 2026-11-25T10:00:00Z
POLICY = """
rules:
  - {name: theft, kinds: [key_theft], min_severity: high, action: disable, require_approval: true}
"""
BUDGETS = """
budgets:
  - {project: proj-a, period: day, amount_usd: 0.5}
  - {key_id: key_b, provider: anthropic, period: month, amount_usd: 1000}
"""


def traffic(minutes: int = 120):
    from keywatch.models.events import UsageEvent

    return [UsageEvent(event_id=f"{k}-{m}", ts=T0 + m * 60_000, provider=p, key_id=k, project=pr, model=mo,
                       input_tokens=1000, output_tokens=200)
            for m in range(minutes)
            for k, p, pr, mo in (("key_a", "openai", "proj-a", "gpt-4o"),
                                 ("key_b", "anthropic", "proj-b", "claude-3-5-haiku-20241022"))]


def cost_core(settings):
    """The worker's cost detectors and price enricher only (build_core's key-theft model is slow to build)."""
    from keywatch.models.budgets import BudgetDetector
    from keywatch.models.core import DetectionCore
    from keywatch.models.costspike import CostSpikeDetector
    from keywatch.models.prices import PriceEnricher

    return DetectionCore([CostSpikeDetector.from_settings(settings), BudgetDetector.from_settings(settings)],
                         [PriceEnricher.from_settings(settings)])
