"""Snapshots taken by a forked child, so detection does not wait while the state is pickled.

Pickling the detector state is slow once it is big: ≈ 6 s for 100k tracked keys (136 MB), and
a snapshot taken in the worker stops detection for that long — a latency spike every time.
`fork_snapshot` forks the worker at a quiescent point instead (the state is consistent: no batch
half-detected, none detected but unwritten). The child pickles and seals the cores as they
were at that instant (copy-on-write) and writes the rows to a file; the parent goes on at once
(the fork itself takes ≈ 30–40 ms at 1.5 GB). When the child has exited, the parent reads the rows
and stores them (`ForkedSnapshot.rows`), and only then acks the offsets the snapshot covers —
commit-after-snapshot holds as before.

The cost is memory: pages the child touches (reference counts) are copied — at 100k keys
1.26 GB of a 1.49 GB process holding them, for the ≈ 8 s the child runs. So the worker forks
only while the memory available (host, and cgroup limit) is at least its own resident size
(`memory_headroom_ok`), and snapshots in process otherwise; `KEYWATCH_SNAPSHOT_FORK=false`
always snapshots in process. Small state is pickled in process too (a child is slower, and
competes for the cores): the worker forks once a snapshot took `KEYWATCH_SNAPSHOT_FORK_MIN_S`.
The child never logs, imports or touches ClickHouse, Kafka or any lock (only the forking
thread exists in it) and leaves with ``os._exit``; its rows are JSON, not pickle, so a file
someone else wrote can at worst fail to load.

>>> from keywatch.models.core import DetectionCore
>>> import tempfile, pathlib, time
>>> class State:  # the `snapshot_row` of stream/state.py, minus the sealing
...     def snapshot_row(self, core, offsets, scope, taken_ms):
...         return ["w", scope, taken_ms, str(offsets), 0, 1, "d", "sealed"]
>>> snap = fork_snapshot(State(), [(DetectionCore([]), {"t:0": 5}, "p:t:0")], pathlib.Path(tempfile.mkdtemp()))
>>> while not snap.done():
...     time.sleep(0.01)
>>> [r[1] for r in snap.rows()], snap.scopes
(['p:t:0'], ['p:t:0'])
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from keywatch.memtrim import resident_bytes
from keywatch.procs import libc_prctl

PREFIX = "snapshot-child-"


def forking_supported() -> bool:
    return hasattr(os, "fork") and hasattr(os, "waitpid")


class SnapshotChildError(RuntimeError):
    """The child did not produce the rows (it failed, was killed, or its file is unreadable)."""


class ForkedSnapshot:
    """A snapshot a child process is taking: `done()` polls it, `rows()` collects the result."""

    def __init__(self, pid: int, path: Path, scopes: list[str], started: float) -> None:
        self.pid, self.path, self.scopes, self.started = pid, path, scopes, started
        self.status: int | None = None  # the child's wait status, once reaped
        self.partitions: set[int] = set()  # the partitions it covers (the caller's bookkeeping)
        self.seconds = 0.0  # fork to exit

    def done(self, block: bool = False) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if pid == 0:
                return False
            self.status, self.seconds = status, time.monotonic() - self.started
        return True

    def rows(self) -> list[list[Any]]:
        """The child's rows (waits for it); raises `SnapshotChildError` if it failed."""
        self.done(block=True)
        err = self.path.with_suffix(".err")
        try:
            code = os.waitstatus_to_exitcode(self.status)
            if code != 0:
                detail = err.read_text(errors="replace")[-2000:] if err.exists() else "no error report"
                raise SnapshotChildError(f"snapshot child {self.pid} exited with {code}: {detail}")
            try:
                rows = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise SnapshotChildError(f"snapshot child {self.pid} left no readable rows: {exc}") from exc
            if [r[1] for r in rows] != self.scopes:
                raise SnapshotChildError(f"snapshot child {self.pid} wrote scopes {[r[1] for r in rows]}, not {self.scopes}")
            return rows
        finally:
            for f in (self.path, err, self.path.with_suffix(".part")):
                f.unlink(missing_ok=True)


def fork_snapshot(state, items: list[tuple[Any, dict[str, int], str]], directory: Path, *,
                  delay_s: float = 0.0) -> ForkedSnapshot:
    """Fork; the child writes ``state.snapshot_row(core, offsets, scope, now)`` for each item.

    `items` must not change in the parent until this returns (the caller holds the batch lock);
    after that the child has its own copy. `delay_s` makes the child slower (tests: a big state).
    """
    directory.mkdir(parents=True, exist_ok=True)
    taken_ms = int(time.time() * 1000)
    path = directory / f"{PREFIX}{os.getpid()}-{taken_ms}-{time.monotonic_ns()}.json"
    started = time.monotonic()
    prctl, parent = libc_prctl(), os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: pickle, write, leave — nothing else
        code = 1
        try:
            if prctl is not None:  # Linux: killed with the worker, not left pickling on its own
                prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            if os.getppid() != parent:
                raise RuntimeError("the worker is gone")
            if delay_s:
                time.sleep(delay_s)
            rows = [state.snapshot_row(core, offsets, scope, taken_ms) for core, offsets, scope in items]
            part = path.with_suffix(".part")
            part.write_bytes(orjson.dumps(rows))
            os.replace(part, path)
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent through the .err file
            try:
                path.with_suffix(".err").write_text(traceback.format_exc())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    return ForkedSnapshot(pid, path, [scope for _, _, scope in items], started)


def memory_headroom_ok() -> bool:
    """Room for the child to copy the whole worker: memory available (the host's, and the
    cgroup's when limited, as in a container) at least this process's resident size. Where
    that cannot be read, True."""
    rss = resident_bytes()
    if rss is None:
        return True
    try:
        avail = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return avail >= rss


def remove_stale(directory: Path) -> int:
    """Files left by snapshot children of workers that are gone (died mid-snapshot)."""
    n = 0
    for f in directory.glob(PREFIX + "*"):
        try:
            os.kill(int(f.name[len(PREFIX):].split("-", 1)[0]), 0)
            continue  # its worker still runs
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        f.unlink(missing_ok=True)
        n += 1
    return n
