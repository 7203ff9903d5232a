"""`keywatch replay`: canonical events from JSON Lines files → the detection core → alerts file.

No broker, no server: the same `build_core` as the worker. Lines are decoded by the same
`EventDecoder` (one line = one message: an object or an array). Bad lines become dead letters
(written beside the alerts file and counted), never a crash. Each alert is written once, in the
order first raised, carrying its final state (later evidence updates it; no copies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, DetectionCore
from keywatch.replay_read import blocks_in_process, decoded_blocks, use_reader_process
from keywatch.stream.decode import DeadLetter, EventDecoder


@dataclass
class ReplaySummary:
    files: int = 0
    lines: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    alerts_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reader: str = "inline"  # "process": read and decoded by a reader process (keywatch/replay_read.py)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def replay(
    paths: list[Path],
    alerts_out: Path,
    core: DetectionCore,
    decoder: EventDecoder,
    *,
    dead_letters_out: Path | None = None,
    chunk_lines: int = 5000,
    on_output: Callable[[CoreOutput], None] | None = None,
    reader_process: bool | None = None,
) -> ReplaySummary:
    """Run files through the core. Raises OSError only if a file cannot be read.

    `reader_process`: read and decode in a forked reader process (None: when the input is big
    and there is a spare core, `use_reader_process`). The output is the same either way."""
    for p in paths:  # fail before doing any work if a file is missing or unreadable
        with open(p, "rb"):
            pass
    summary = ReplaySummary(files=len(paths))
    want_rows = on_output is not None  # replay writes alerts only: rows nobody reads are not built
    started = time.perf_counter()
    alerts: dict[str, Alert] = {}
    dead_fh = open(dead_letters_out, "wb") if dead_letters_out else None
    try:
        chunk: list = []
        dead: list[DeadLetter] = []

        def flush() -> None:
            rejected: dict[str, int] = {}
            for d in dead:
                rejected[d.reason] = rejected.get(d.reason, 0) + 1
            out = core.process(chunk, rejected=rejected, rows=want_rows)
            summary.events += len(out.usage) + len(out.audit) + len(out.billing)
            summary.duplicates += out.duplicates
            for a in out.alerts:
                alerts[a.alert_id] = a  # dict keeps first-raised order; value is the latest
            if on_output is not None:
                on_output(out)
            _write_dead(dead, dead_fh, summary)
            chunk.clear()
            dead.clear()

        process = use_reader_process(paths) if reader_process is None else reader_process
        summary.reader = "process" if process else "inline"
        blocks = blocks_in_process(paths, decoder) if process else decoded_blocks(paths, decoder)
        try:
            for n, events, bad in blocks:
                summary.lines += n
                chunk.extend(events)
                dead.extend(bad)
                if len(chunk) >= chunk_lines:
                    flush()
        finally:
            blocks.close()  # stops the reader process if the core failed part-way
        flush()
    finally:
        if dead_fh:
            dead_fh.close()
    with open(alerts_out, "wb") as fh:
        for a in alerts.values():
            fh.write(orjson.dumps(a.to_contract()) + b"\n")
            summary.alerts_by_kind[a.kind] = summary.alerts_by_kind.get(a.kind, 0) + 1
    summary.alerts = len(alerts)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_dead(dead: list[DeadLetter], fh, summary: ReplaySummary) -> None:
    for d in dead:
        summary.dead_letters += 1
        summary.dead_by_reason[d.reason] = summary.dead_by_reason.get(d.reason, 0) + 1
        if fh:
            fh.write(orjson.dumps({
                "reason": d.reason, "error": d.error, "file": d.topic, "line": d.offset, "index": d.index,
                "payload": d.payload.decode("utf-8", "replace"), "payload_size": d.payload_size,
            }) + b"\n")
