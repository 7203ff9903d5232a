"""Builds the default detection core from settings: every detector and enricher keywatch runs.

The streaming worker, `keywatch replay`, benchmarks and evals all call `build_core`, so they run
the same detection code with the same defaults.

Scopes (the worker splits detection in two, replay and tests run everything in one core):

* ``"all"`` — every enricher and detector in one core (replay, evals, tests; the default).
* ``"partition"`` — what only needs one key's events: prices enricher, key theft, gateway
  bypass and key-level cost-spike series. The worker runs one per input partition (messages
  are keyed by `key_id`), so this state moves with the partition.
* ``"global"`` — what needs every key of a project or provider: project/provider/model cost
  spikes (calibrated univariate scorer, projections, unknown models), budgets, billing
  reconciliation, telemetry health (dead-letter flood). Fed with the enriched, deduplicated
  events the partition cores output, so it neither enriches (no enrichers) nor keeps a dedupe
  window (capacity 0: only duplicates inside one batch are dropped, and there are none).
* ``"prepare"`` — a partition core without detectors: prices and deduplicates as a partition
  core does, so a worker of the ``projects`` tier (`KEYWATCH_WORKER_TIER`) feeds its global core
  the same events a worker running every tier would.

Partition + global detectors are the ``"all"`` set (cost spikes split by level):

>>> from keywatch.settings import Settings
>>> s = Settings()
>>> names = lambda c: sorted(d.name for d in c.detectors)
>>> names(build_core(s, "partition")), names(build_core(s, "global"))
(['cost_spike', 'gateway_bypass', 'key_theft'], ['billing', 'budget', 'cost_spike', 'telemetry_health'])
>>> names(build_core(s, "prepare")), [e.__class__.__name__ for e in build_core(s, "prepare").enrichers]
([], ['PriceEnricher'])
"""

from __future__ import annotations

from keywatch.models.core import DetectionCore, Detector, Enricher

SCOPES = ("all", "partition", "global", "prepare")
KEY_LEVELS = ("key",)
SHARED_LEVELS = ("project", "provider", "model")


def build_core(settings, scope: str = "all") -> DetectionCore:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    from keywatch.models import spill
    spill.configure(getattr(settings, "idle_spill_dir", ""))  # where packed idle state goes (process-wide)
    detectors: list[Detector] = []
    enrichers: list[Enricher] = []
    per_key, shared = scope in ("all", "partition"), scope in ("all", "global")
    # --- enrichers (order matters: prices before anything that reads cost_usd) --------------
    if scope != "global":  # the global core gets events the partition cores already priced
        from keywatch.models.prices import PriceEnricher  # issue 4: cost_usd, price_source
        enrichers.append(PriceEnricher.from_settings(settings))
    if scope == "prepare":
        return DetectionCore([], enrichers, quiet_ms=int(settings.incident_quiet_s * 1000),
                             dedupe_capacity=settings.dedupe_window_events)
    # --- detectors ---------------------------------------------------------------------------
    if per_key:
        from keywatch.models.keytheft import KeyTheftDetector; detectors.append(KeyTheftDetector.from_settings(settings))  # issue 3
        from keywatch.models.gatewaybypass import GatewayBypassDetector; detectors.append(GatewayBypassDetector.from_settings(settings))  # issue 7
    from keywatch.models.costspike import LEVELS, CostSpikeDetector  # issue 4: cost
    levels = LEVELS if scope == "all" else KEY_LEVELS if scope == "partition" else SHARED_LEVELS
    cls = PartitionCostSpikeDetector if scope == "partition" else CostSpikeDetector
    detectors.append(cls.from_settings(settings, levels=levels))
    if shared:
        from keywatch.models.billing import BillingDetector
        from keywatch.models.budgets import BudgetDetector
        detectors += [BudgetDetector.from_settings(settings), BillingDetector.from_settings(settings)]
        from keywatch.models.health import TelemetryHealthDetector  # dead-letter flood, telemetry gaps
        detectors.append(TelemetryHealthDetector())
    return DetectionCore(
        detectors,
        enrichers,
        quiet_ms=int(settings.incident_quiet_s * 1000),
        dedupe_capacity=0 if scope == "global" else settings.dedupe_window_events,
    )


from keywatch.models.costspike import CostSpikeDetector  # noqa: E402


class PartitionCostSpikeDetector(CostSpikeDetector):
    """Key-level cost spikes in a partition core. Findings are stamped with the end of their
    minute (see `CostSpikeDetector._advance`), so a partition core gives replay's alert ids
    without any cross-partition clock; the class stays so that older snapshots load."""

    def __setstate__(self, state: dict) -> None:
        state.pop("clock", None)  # snapshots from before minute-end stamps
        super().__setstate__(state)


def restrict(core: DetectionCore, scope: str) -> DetectionCore:
    """An ``"all"`` core (the pre-partition worker snapshot) cut down to `scope`, in place.

    Detectors outside the scope are dropped; the cost-spike detector keeps its rows but only
    updates the scope's levels from now on.
    """
    if scope == "all":
        return core
    keep = {"partition": {"key_theft", "gateway_bypass", "cost_spike"},
            "global": {"cost_spike", "budget", "billing", "telemetry_health"}}[scope]
    core.detectors = [d for d in core.detectors if d.name in keep]
    cs = core.detector("cost_spike")
    if cs is not None:
        cs.levels = KEY_LEVELS if scope == "partition" else SHARED_LEVELS
        if scope == "partition":
            cs.__class__ = PartitionCostSpikeDetector
    if scope == "global":
        core.enrichers = []
        core.dedupe_capacity = 0
    return core
