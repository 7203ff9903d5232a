"""`keywatch replay`: canonical events from JSON Lines files → the detection core → alerts file.

No broker, no server: the same `build_core` as the worker. Lines are decoded by the same
`EventDecoder` (one line = one message: an object or an array). Bad lines become dead letters
(written beside the alerts file and counted), never a crash. Each alert is written once, in the
order first raised, carrying its final state (later evidence updates it; no copies). "Order
raised" is batch by batch (`chunk_lines` events), and by detection time (then id) within a
batch: an order that does not depend on which detector ran first, so that a split replay
(keywatch/replay_batches.py: the shared-level detectors in the reader process) writes the same
file as one core.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, DetectionCore
from keywatch.replay_batches import Batches, SharedDetection, splittable
from keywatch.replay_read import ReaderProcess, decoded_blocks, use_reader_process
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
    split: bool = False  # the reader process ran the shared side of the detectors (keywatch/replay_batches.py)

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
    split: bool | None = None,
) -> ReplaySummary:
    """Run files through the core. Raises OSError if a file cannot be read (and ValueError for
    `split=True` with a core that `splittable` refuses).

    `reader_process`: read and decode in a forked reader process (None: when the input is big
    and there is a spare core, `use_reader_process`). `split`: the reader process also runs the
    cost-spike, budget, billing and telemetry-health detectors (keywatch/replay_batches.py;
    None: whenever there is a reader process, no `on_output` and a `splittable` core). A split
    leaves `core` with key theft and gateway bypass only. The output is the same either way:
    alerts are written batch by batch (the batch first raised), then by `detected_at`, then id."""
    for p in paths:  # fail before doing any work if a file is missing or unreadable
        with open(p, "rb"):
            pass
    summary = ReplaySummary(files=len(paths))
    want_rows = on_output is not None  # replay writes alerts only: rows nobody reads are not built
    started = time.perf_counter()
    alerts: dict[str, Alert] = {}  # id → latest state
    first: dict[str, tuple[int, int]] = {}  # id → (batch first raised, detected_at_ms): the file's order
    process = use_reader_process(paths) if reader_process is None else reader_process
    if split is None:
        split = process and on_output is None and splittable(core)
    elif split and not splittable(core):
        raise ValueError("split replay: the core's detectors are not all on one side or the other (replay_batches.splittable)")
    dead_fh = open(dead_letters_out, "wb") if dead_letters_out else None
    shared = SharedDetection(core, chunk_lines) if split and process else None
    summary.split = shared is not None
    batches = Batches(chunk_lines)
    batch_no = itertools.count()

    def note(n: int, raised: list[Alert]) -> None:
        for a in raised:
            alerts[a.alert_id] = a
            if a.alert_id not in first:
                first[a.alert_id] = (n, a.detected_at_ms)

    try:
        def flush() -> None:
            events, dead, rejected = batches.take()
            out = core.process(events, rejected=rejected, rows=want_rows)
            summary.events += len(out.usage) + len(out.audit) + len(out.billing)
            summary.duplicates += out.duplicates
            note(next(batch_no), out.alerts)
            if on_output is not None:
                on_output(out)
            _write_dead(dead, dead_fh, summary)

        summary.reader = "process" if process else "inline"
        reader = ReaderProcess(paths, decoder, shared) if process else None
        try:
            for n, events, bad in reader.blocks() if reader else decoded_blocks(paths, decoder):
                summary.lines += n
                if batches.add(events, bad):
                    flush()
            flush()
            if reader:
                reader.finish()
        finally:
            if reader:
                reader.stop()  # stops the reader process if the core failed part-way
    finally:
        if dead_fh:
            dead_fh.close()
    for n, raised in shared.received if shared is not None else ():
        note(n, raised)
    with open(alerts_out, "wb") as fh:
        for i in sorted(first, key=lambda i: (*first[i], i)):
            a = alerts[i]
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
