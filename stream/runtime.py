"""What a running worker holds, shared by the consumer loop and the HTTP API views.

The consumer loop (stream/consumer.py) owns the core and the sink; HTTP views (stream/web.py)
read through this object. Access to `core` from a view must hold `core_lock`, because the
consumer mutates it between awaits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from keywatch.models.core import DetectionCore
from keywatch.settings import Settings
from keywatch.sinks.clickhouse import ClickHouseSink
from keywatch.stream.metrics import Metrics


@dataclass
class WorkerRuntime:
    settings: Settings
    sink: ClickHouseSink
    core: DetectionCore
    metrics: Metrics
    core_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False  # True once topics exist, the schema is migrated and partitions are assigned
    # Called with each batch's new/updated alerts, off the hot path (alert channels, revocation).
    alert_hooks: list[Callable[[list[Any]], Any]] = field(default_factory=list)
    # RevocationService for the /revocations endpoints; the API builds it on first use around the
    # revocation hook's engine (same guard state), see stream/api_revoke.py.
    revocation: Any = None
