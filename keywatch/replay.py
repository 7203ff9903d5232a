"""`keywatch replay`: canonical events from JSON Lines files → the detection core → alerts file.

No broker, no server: the same `build_core` as the worker. Lines are decoded by the same
`EventDecoder` (one line = one message: an object or an array). Bad lines become dead letters
(written beside the alerts file and counted), never a crash. Each alert is written once, in the
order first raised, carrying its final state (later evidence updates it; no copies).
"""

from __future__ import annotations

import gzip
import zlib
import time
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import orjson

from keywatch.models.alerts import Alert
from keywatch.models.core import CoreOutput, DetectionCore
from keywatch.stream.decode import DeadLetter, EventDecoder, Origin, Reason


BLOCK_LINES = 500  # lines decoded in one parse (`EventDecoder.decode_block`)
_BRACE = repeat(b"{")  # for a C-level `map` over lines


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

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def open_text(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(paths: Iterable[Path]) -> Iterator[tuple[str, int, bytes | None]]:
    """(file, line number, line) for every non-blank line; `None` marks a file whose compressed
    stream broke off at that line (the caller records it; the next file is still read)."""
    for path in paths:
        n = 0
        try:
            with open_text(path) as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        yield str(path), n, line
        except (gzip.BadGzipFile, EOFError, zlib.error):
            yield str(path), n, None


def _read_runs(paths: Iterable[Path], hint: int = 1 << 16) -> Iterator[tuple[str, Sequence[int] | int, list[bytes] | None]]:
    """`read_lines` in runs: (file, line numbers, lines without their line end) for the non-blank
    lines, and `(file, line, None)` where a compressed file broke off. Parallel lists, not a tuple
    per line: this runs for every line of a replay. A plain file is read many lines per call
    (`readlines`), not line by line; compressed files go through `read_lines`, so that a break is
    still found at its line."""
    for path in paths:
        name = str(path)
        if path.suffix == ".gz":
            nums: list[int] = []
            lines: list[bytes] = []
            for _, n, line in read_lines([path]):
                if line is None:
                    yield name, nums, lines
                    nums, lines = [], []
                    yield name, n, None
                else:
                    nums.append(n)
                    lines.append(line.rstrip(b"\r\n"))
            yield name, nums, lines
            continue
        with open(path, "rb") as fh:
            n = 0
            while raw := fh.readlines(hint):
                lines = [line.rstrip(b"\r\n") for line in raw]
                if all(map(bytes.startswith, lines, _BRACE)):  # the usual run: no blank line to drop
                    yield name, range(n + 1, n + 1 + len(lines)), lines
                else:
                    kept = [(i, line) for i, line in enumerate(lines, n + 1) if line.strip()]
                    yield name, [i for i, _ in kept], [line for _, line in kept]
                n += len(raw)


def replay(
    paths: list[Path],
    alerts_out: Path,
    core: DetectionCore,
    decoder: EventDecoder,
    *,
    dead_letters_out: Path | None = None,
    chunk_lines: int = 5000,
    on_output: Callable[[CoreOutput], None] | None = None,
) -> ReplaySummary:
    """Run files through the core. Raises OSError only if a file cannot be read."""
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

        block: list[bytes] = []  # lines of the next block, and where they came from (for dead letters)
        block_from: list[tuple[str, Sequence[int]]] = []

        def decode_block() -> None:
            # One parse for the whole block when every line is a good event (the common case);
            # otherwise line by line, so each dead letter names its file and line.
            fast = decoder.decode_block(block)
            if fast is not None:
                chunk.extend(fast)
            else:
                where = [(name, lineno) for name, nums in block_from for lineno in nums]
                for (name, lineno), line in zip(where, block):
                    ok, bad = decoder.decode(line, Origin(name, -1, lineno))
                    chunk.extend(ok)
                    dead.extend(bad)
            block.clear()
            block_from.clear()
            if len(chunk) >= chunk_lines:
                flush()

        for name, nums, lines in _read_runs(paths):
            if lines is None:  # a compressed file broke off after line `nums`
                decode_block()
                dead.append(DeadLetter(reason=Reason.CORRUPT_FILE, error=f"cannot decompress after line {nums}",
                                       topic=name, partition=-1, offset=nums, index=-1, payload=b"",
                                       payload_size=0, received_at_ms=int(time.time() * 1000)))
                continue
            summary.lines += len(lines)
            # Blocks of exactly BLOCK_LINES lines across runs and files, as line by line.
            i, m = 0, len(lines)
            while i < m:
                take = BLOCK_LINES - len(block)
                block.extend(lines[i:i + take])
                block_from.append((name, nums[i:i + take]))
                i += take
                if len(block) >= BLOCK_LINES:
                    decode_block()
        decode_block()
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
