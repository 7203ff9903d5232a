"""Alert hooks: what runs when alerts are raised or updated, off the detection hot path.

The worker calls `build_alert_hooks` once at start and runs each hook on every batch's new or
updated alerts in a background task (a slow channel or provider API never stalls ingestion).
`keywatch replay` calls it too when revocation or channels are enabled there.
Each hook: `hook(alerts: list[Alert]) -> None | Awaitable[None]`; it must not raise for a
delivery failure (it records the failure itself).
"""

from __future__ import annotations

from typing import Any, Callable

AlertHook = Callable[[list[Any]], Any]


def build_alert_hooks(settings, sink=None, metrics=None) -> list[AlertHook]:
    hooks: list[AlertHook] = []
    # --- alert channels (issue 4) -----------------------------------------------------------
    if settings.channels_file:
        from keywatch.sinks.channels.dispatch import build_channel_hook

        hooks.append(build_channel_hook(settings, sink=sink, metrics=metrics))
    # --- revocation (issue 5) ---------------------------------------------------------------
    if settings.revocation_policy_file:
        from keywatch.sinks.revocation.service import build_revocation_hook

        # Pending approvals go to the channel hooks built above, as `revocation_approval` alerts.
        hooks.append(build_revocation_hook(settings, sink=sink, metrics=metrics, notify=list(hooks)))
    return hooks
