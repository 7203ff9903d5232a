"""The batch types the worker and `Pipeline` (stream/pipeline.py) exchange.

>>> Msg("t", 3, 0, b"").key
't:3'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keywatch.models.core import CoreOutput
from keywatch.stream.decode import DeadLetter


@dataclass(slots=True)
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: float | None = None  # producer time, epoch seconds

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass
class BatchResult:
    out: CoreOutput | None
    dead: list[DeadLetter]
    last: dict[str, int]  # "topic:partition" → highest offset in the batch
    rechecked: bool = False  # part of the batch may already be stored
    skipped_messages: int = 0
    redelivered_rows: int = 0  # rows not written again because they were already stored
    messages: int = 0
    oldest_ts: float | None = None
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)  # the process's CPU seconds (all threads)


def describe(res: BatchResult) -> dict[str, Any]:
    out = res.out
    return {
        "messages": res.messages, "skipped_messages": res.skipped_messages,
        "events": (len(out.usage) + len(out.audit) + len(out.billing)) if out else 0,
        "dead_letters": len(res.dead), "alerts": len(out.alerts) if out else 0,
    }
