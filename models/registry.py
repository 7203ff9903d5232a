"""Builds the default detection core from settings: every detector and enricher keywatch runs.

The streaming worker, `keywatch replay`, benchmarks and evals all call `build_core`, so they run
the same detection code with the same defaults.
"""

from __future__ import annotations

from keywatch.models.core import DetectionCore, Detector, Enricher


def build_core(settings) -> DetectionCore:
    detectors: list[Detector] = []
    enrichers: list[Enricher] = []
    # --- enrichers (order matters: prices before anything that reads cost_usd) --------------
    from keywatch.models.prices import PriceEnricher  # issue 4: cost_usd, price_source
    enrichers.append(PriceEnricher.from_settings(settings))
    # --- detectors ---------------------------------------------------------------------------
    from keywatch.models.keytheft import KeyTheftDetector; detectors.append(KeyTheftDetector.from_settings(settings))  # issue 3
    from keywatch.models.gatewaybypass import GatewayBypassDetector; detectors.append(GatewayBypassDetector.from_settings(settings))  # issue 7
    from keywatch.models.billing import BillingDetector  # issue 4: cost
    from keywatch.models.budgets import BudgetDetector
    from keywatch.models.costspike import CostSpikeDetector
    detectors += [CostSpikeDetector.from_settings(settings), BudgetDetector.from_settings(settings),
                  BillingDetector.from_settings(settings)]
    from keywatch.models.health import TelemetryHealthDetector  # dead-letter flood, telemetry gaps
    detectors.append(TelemetryHealthDetector())
    return DetectionCore(
        detectors,
        enrichers,
        quiet_ms=int(settings.incident_quiet_s * 1000),
        dedupe_capacity=settings.dedupe_window_events,
    )
