r"""Reading replay input: lines → blocks → decoded events and dead letters, in this process or in a reader process.

`decoded_blocks` is the decoding half of `keywatch replay` (keywatch/replay.py): JSON Lines
files (plain or gzip) in blocks of `BLOCK_LINES` lines, each block decoded in one parse when
every line is a good event, else line by line so that each dead letter names its file and line.

On a machine with more than one core, a big input (≥ `READER_PROCESS_MIN_BYTES`) is read and
decoded by a `ReaderProcess`: a forked child runs `decoded_blocks` and hands each block over
as msgpack (msgspec, validated again on arrival) while this process runs the detectors, so
reading and decoding (≈ a fifth of a replay's time) no longer add to it; in a split replay the
child also runs the shared-level detectors (keywatch/replay_batches.py). The events, dead
letters and their order are the same either way (tests/core/test_replay_reader.py).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "e.jsonl"
>>> _ = p.write_text('{"kind":"usage","event_id":"e1","ts":1795622400000,"provider":"openai","key_id":"k","model":"m"}\n\nnope\n')
>>> [(n, [e.event_id for e in evs], [d.reason for d in dead]) for n, evs, dead in decoded_blocks([p], EventDecoder())]
[(2, ['e1'], ['not_json'])]
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import time
import zlib
from itertools import repeat
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import msgspec

from keywatch.models.events import Event, share_text
from keywatch.procs import die_with_parent
from keywatch.replay_batches import SharedDetection
from keywatch.stream.decode import DeadLetter, EventDecoder, Origin, Reason

BLOCK_LINES = 500  # lines decoded in one parse (`EventDecoder.decode_block`)
READER_PROCESS_MIN_BYTES = 16 << 20  # smaller inputs: starting a process is not worth it
_QUEUE_BLOCKS = 64  # blocks the reader process may run ahead (≈ 32k events)
_BRACE = repeat(b"{")  # for a C-level `map` over lines

Block = tuple[int, list, list[DeadLetter]]  # (lines read, events, dead letters)


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


def decoded_blocks(paths: Iterable[Path], decoder: EventDecoder) -> Iterator[Block]:
    """(non-blank lines read, events, dead letters) per block of `BLOCK_LINES` lines (blocks run
    across files), in input order; a compressed file that breaks off is a `corrupt_file` dead
    letter after the block before it. Raises OSError if a file cannot be read."""
    block: list[bytes] = []  # lines of the next block, and where they came from (for dead letters)
    block_from: list[tuple[str, Sequence[int]]] = []

    def decode() -> Block:
        fast = decoder.decode_block(block)
        events: list = []
        dead: list[DeadLetter] = []
        if fast is not None:
            events = fast
        else:
            where = [(name, lineno) for name, nums in block_from for lineno in nums]
            for (name, lineno), line in zip(where, block):
                ok, bad = decoder.decode(line, Origin(name, -1, lineno))
                events.extend(ok)
                dead.extend(bad)
        out = (len(block), events, dead)
        block.clear()
        block_from.clear()
        return out

    for name, nums, lines in _read_runs(paths):
        if lines is None:  # a compressed file broke off after line `nums`
            yield decode()
            yield 0, [], [DeadLetter(reason=Reason.CORRUPT_FILE, error=f"cannot decompress after line {nums}",
                                     topic=name, partition=-1, offset=nums, index=-1, payload=b"",
                                     payload_size=0, received_at_ms=int(time.time() * 1000))]
            continue
        i, m = 0, len(lines)
        while i < m:  # blocks of exactly BLOCK_LINES lines across runs and files
            take = BLOCK_LINES - len(block)
            block.extend(lines[i:i + take])
            block_from.append((name, nums[i:i + take]))
            i += take
            if len(block) >= BLOCK_LINES:
                yield decode()
    yield decode()


def use_reader_process(paths: Sequence[Path]) -> bool:
    """Big input, Linux (where forking is safe and cheap), more than one core for this process."""
    if sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2:
        return False
    return sum(p.stat().st_size for p in paths) >= READER_PROCESS_MIN_BYTES


class ReaderProcess:
    """A forked process runs `decoded_blocks`, up to `_QUEUE_BLOCKS` blocks ahead of `blocks()`.

    Fork, not spawn: the child starts at once with this decoder (its settings, its secret key)
    and needs no imports; it only reads files and decodes. Blocks come as msgpack, decoded and
    validated here again — except a block that secret scrubbing may have changed (a fingerprint
    can be longer than the secret it replaces, past a field's bound): it comes pickled. An error
    in the child is raised here. Call `finish` after the last block, and `stop` in any case.

    With `shared` the child also runs the shared side of the replay's detectors on its batches
    (keywatch/replay_batches.py): from the fork on `shared.core` here holds the key side, and
    `finish` collects the child's alerts into `shared.received`."""

    def __init__(self, paths: Sequence[Path], decoder: EventDecoder, shared: SharedDetection | None = None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.q = ctx.Queue(maxsize=_QUEUE_BLOCKS)
        self.shared = shared
        # A replay killed with -9 takes its reader with it (it could wait on a full queue forever).
        on_parent_death = die_with_parent(signal.SIGKILL)
        self.proc = ctx.Process(target=_reader_main, args=(list(paths), decoder, self.q, shared, on_parent_death, os.getpid()),
                                name="keywatch-replay-reader", daemon=True)
        self.proc.start()
        if shared is not None:
            shared.after_fork()

    def _items(self) -> Iterator[tuple]:
        """The child's items up to the end of the input (`blocks`) or of its work (`finish`)."""
        while True:
            try:
                item = self.q.get(timeout=1.0)
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(f"the replay reader process stopped (exit code {self.proc.exitcode}) before the end of the input")
                continue
            if item is None or item[0] == "blocks_done":
                return
            if item[0] == "error":
                raise item[2]
            if item[0] == "alerts":  # the shared side's alerts of batch n
                self.shared.received.append((item[1], item[2]))
                continue
            yield item

    def blocks(self) -> Iterator[Block]:
        unpack = msgspec.msgpack.Decoder(list[Event]).decode
        for kind, n, events, dead in self._items():
            evs = unpack(events) if kind == "msgpack" else pickle.loads(events)
            share_text(evs)  # unpacked afresh: one object per distinct text again (models/events.py)
            yield n, evs, dead

    def finish(self) -> None:
        """The child's last alerts, and its exit."""
        for _ in self._items():
            pass
        self.proc.join()

    def stop(self) -> None:
        if self.shared is not None:
            self.shared.close()
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.q.close()
        self.q.cancel_join_thread()


def _reader_main(paths: list[Path], decoder: EventDecoder, q, shared: SharedDetection | None, on_parent_death, parent: int) -> None:
    if on_parent_death is not None:
        on_parent_death()
    if os.getppid() != parent:  # died before the line above
        os._exit(1)
    pack = msgspec.msgpack.Encoder().encode
    try:
        if shared is not None:
            shared.in_reader()
        scrubbed = decoder.scrubbed
        for n, events, dead in decoded_blocks(paths, decoder):
            if decoder.scrubbed != scrubbed:
                scrubbed = decoder.scrubbed
                # pickled now, not by the queue's feeder thread: the shared detectors below
                # price these very objects
                q.put(("pickled", n, pickle.dumps(events, protocol=5), dead))
            else:
                q.put(("msgpack", n, pack(events), dead))
            if shared is not None:  # after the block is on its way: the other process can go on
                shared.block(events, dead, q.put)
        q.put(("blocks_done", 0, None, []))
        if shared is not None:
            shared.end(q.put)
        q.put(None)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        q.put(("error", 0, exc, []))
    finally:
        q.close()
        q.join_thread()
