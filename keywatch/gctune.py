"""Garbage-collector settings for keywatch's hot loops (`KEYWATCH_GC_THRESHOLD`).

The worker and `keywatch replay` allocate short-lived objects (events, rows, columns) by the
hundred thousand per second beside long-lived detector state. With Python's default threshold
(700 allocations) the collector runs thousands of times a run, and its older generations walk
that state again each time (docs/performance.md, session 7: 11–16 % of the worker's CPU per event).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc(threshold: int) -> None:
    """For the rest of the process (the worker): collect less often (`threshold` allocations
    between young collections; older generations after 20 and 100 of those), and keep
    everything alive now (modules, the runtime) out of the collector's scans (`gc.freeze`,
    which also spares those copy-on-write pages in forked snapshots). 0 leaves Python's defaults.

    >>> before = gc.get_threshold(); tune_gc(0); gc.get_threshold() == before
    True
    """
    if threshold <= 0:
        return
    gc.collect()  # no garbage frozen with the rest
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)


@contextmanager
def fewer_collections(threshold: int) -> Iterator[None]:
    """For the duration of a block (`keywatch replay`): `threshold` allocations between young
    collections, Python's own thresholds again afterwards; nothing frozen, as a library call
    must leave the process as it found it. 0 changes nothing.

    >>> before = gc.get_threshold()
    >>> with fewer_collections(50_000):
    ...     gc.get_threshold()
    (50000, 20, 100)
    >>> gc.get_threshold() == before
    True
    """
    before = gc.get_threshold()
    if threshold > 0:
        gc.set_threshold(threshold, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
