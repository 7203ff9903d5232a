"""Replay's batches, and the split of its detectors over two processes (a split replay).

`Batches` cuts decoded blocks into the core's batches: a batch is cut once it holds `size`
events (whole blocks, so a batch may hold a little more), and once more at the end — that last
batch may be empty, and the core still runs on it (incidents expire). Every replay cuts its
batches this way, so both halves of a split replay see the same batches.

`SharedDetection` splits one ``"all"`` core in two along the only line no result crosses:

* this process keeps key theft and gateway bypass (`KEY_SIDE`, ≈ two thirds of the work): they
  read nothing from other detectors, and share one incident book (gateway bypass reports
  `key_theft` findings);
* the reader process (keywatch/replay_read.py) keeps cost spikes at every level, budgets,
  billing and telemetry health (`SHARED_SIDE`) and runs them on the same batches while it reads
  and decodes. Cost spikes read one thing from the others: a key under another detector's open
  incident does not learn (`IncidentBook.open_keys_at`). So after each batch's key theft and
  gateway bypass this process sends the batch's view of its book (`book_view`, taken where the
  cost-spike detector would have run in one core), and the reader runs the batch's shared
  detectors only once that view has come (`JoinedBook` answers from both books).

Both halves deduplicate and price every event. The reader's alerts come back numbered by
batch, and `keywatch replay` writes alerts in an order that does not depend on which half raised
them (keywatch/replay.py); tests/core/test_replay_split.py holds the file to one core's.

>>> from keywatch.stream.decode import DeadLetter
>>> b = Batches(3)
>>> b.add([1, 2], []), b.add([3, 4], [DeadLetter("not_json", "x", "f", -1, 1, -1, b"", 0, 0)])
(False, True)
>>> events, dead, rejected = b.take()
>>> events, [d.reason for d in dead], rejected
([1, 2, 3, 4], ['not_json'], {'not_json': 1})
>>> b.take()
([], [], {})
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections import deque
from typing import Callable

from keywatch.models.alerts import Alert, IncidentBook
from keywatch.models.core import Batch, Context, DetectionCore
from keywatch.stream.decode import DeadLetter

KEY_SIDE = frozenset({"key_theft", "gateway_bypass"})
SHARED_SIDE = frozenset({"cost_spike", "budget", "billing", "telemetry_health"})


class Batches:
    """Decoded blocks → the core's batches (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.events: list = []
        self.dead: list[DeadLetter] = []

    def add(self, events: list, dead: list[DeadLetter]) -> bool:
        """Add one block; True when a batch is ready (`take` it)."""
        self.events.extend(events)
        self.dead.extend(dead)
        return len(self.events) >= self.size

    def take(self) -> tuple[list, list[DeadLetter], dict[str, int]]:
        """The batch: (events, dead letters, dead letters by reason)."""
        events, dead = self.events, self.dead
        self.events, self.dead = [], []
        rejected: dict[str, int] = {}
        for d in dead:
            rejected[d.reason] = rejected.get(d.reason, 0) + 1
        return events, dead, rejected


def splittable(core: DetectionCore) -> bool:
    """Detectors on both sides, and none that `SharedDetection` would not place."""
    names = {d.name for d in core.detectors}
    return bool(names & KEY_SIDE) and bool(names & SHARED_SIDE) and names <= KEY_SIDE | SHARED_SIDE


def book_view(book: IncidentBook) -> IncidentBook:
    """What `open_keys_at` reads of `book`, copied (the original goes on changing)."""
    view = IncidentBook(book.quiet_ms)
    view.open, view.last_seen_ms, view.closed = dict(book.open), dict(book.last_seen_ms), list(book.closed)
    return view


class JoinedBook(IncidentBook):
    """The reader's book; `open_keys_at` also answers from the other half's view of the batch."""

    other: IncidentBook | None = None

    def open_keys_at(self, at_ms: int) -> list[tuple]:
        own = super().open_keys_at(at_ms)
        return own + self.other.open_keys_at(at_ms) if self.other is not None else own


class _BookTap:
    """The last detector of this process's half: sends the batch's `book_view`."""

    name = "book_tap"

    def __init__(self, send: Callable[[IncidentBook], None]) -> None:
        self.send = send

    def process(self, batch: Batch, ctx: Context) -> None:
        self.send(book_view(ctx.book))


class SharedDetection:
    """The split of a replay's core: `in_reader` runs in the forked reader process, `after_fork`
    and `close` here; `received` collects the reader's alerts as (batch number, alerts)."""

    def __init__(self, core: DetectionCore, batch_size: int) -> None:
        self.core = core
        self.batches = Batches(batch_size)
        self.views = multiprocessing.get_context("fork").Queue()  # this process → the reader
        self.waiting: deque[tuple[list, dict[str, int]]] = deque()  # the reader's batches without their view
        self.sent = 0
        self.received: list[tuple[int, list[Alert]]] = []
        self._parent = os.getpid()

    def after_fork(self) -> None:
        """This process keeps the key side, and sends each batch's view of its book."""
        self.core.detectors = [d for d in self.core.detectors if d.name in KEY_SIDE]
        self.core.detectors.append(_BookTap(self.views.put))

    def close(self) -> None:
        """After the replay (or its failure): the core keeps its own detectors only. The reader
        has had every view by now, or is stopped: none is left to send."""
        self.core.detectors = [d for d in self.core.detectors if d.name != _BookTap.name]
        self.views.close()
        self.views.cancel_join_thread()

    def in_reader(self) -> None:
        self.core.detectors = [d for d in self.core.detectors if d.name in SHARED_SIDE]
        self.core.book.__class__ = JoinedBook  # this process's own copy

    def block(self, events: list, dead: list[DeadLetter], put: Callable[[tuple], None]) -> None:
        if self.batches.add(events, dead):
            self._cut(put, wait=False)

    def end(self, put: Callable[[tuple], None]) -> None:
        self._cut(put, wait=True)

    def _cut(self, put: Callable[[tuple], None], wait: bool) -> None:
        events, _, rejected = self.batches.take()  # the other process writes the dead letters
        self.waiting.append((events, rejected))
        while self.waiting:  # run the batches whose view has come; at the end, wait for them all
            view = self._next_view(wait)
            if view is None:
                return
            events, rejected = self.waiting.popleft()
            self.core.book.other = view
            out = self.core.process(events, rejected=rejected, rows=False)
            put(("alerts", self.sent, out.alerts, []))
            self.sent += 1

    def _next_view(self, wait: bool) -> IncidentBook | None:
        while True:
            try:
                return self.views.get(timeout=1.0) if wait else self.views.get_nowait()
            except queue.Empty:
                if not wait:
                    return None
                if os.getppid() != self._parent:  # the replay is gone: nothing more will come
                    raise RuntimeError("the replay process stopped before sending every batch's incidents")
