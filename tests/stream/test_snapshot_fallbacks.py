"""A periodic snapshot that cannot be forked is taken in process, never skipped (stream/consumer.py);
the first one is forked (its length unknown), later ones when the last took `snapshot_fork_min_s` or more.

`Consumer._snapshot_and_ack` forks a child for big state (stream/snapfork.py). Two fallbacks,
on a real pipeline over the embedded chDB: less memory available than the worker's resident
size (`memory_headroom_ok`, read from /proc — made to say no here), and a fork the system
refuses (OSError from `os.fork`, as with a process limit). Either way the snapshot rows are
stored by this process at once, the events they cover are acked, no child runs, and the status
file says which way it went. The third test is the control: allowed to fork, the same call forks.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

import keywatch.stream.consumer as consumer_mod
import keywatch.stream.snapfork as snapfork
from keywatch.simulate import SimConfig, generate
from keywatch.stream.consumer import Consumer
from keywatch.stream.partitions import global_scope, scope_for
from keywatch.stream.status import StatusFile

from stream_helpers import TOPIC, pipeline_messages, pipeline_worker, run_batches

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class _Stream:
    """Stands in for faust's stream: records which events were acked."""

    def __init__(self) -> None:
        self.acked: list = []

    async def ack(self, event) -> bool:
        self.acked.append(event)
        return True


def _consumer(ch_db, tmp_path):
    client, settings = ch_db
    settings = settings.model_copy(update={"data_dir": tmp_path, "snapshot_fork": True, "snapshot_fork_min_s": 1.0})
    pipe = pipeline_worker(client, settings, global_core=True)
    pipe.assign({0, 1, 2})
    run_batches(pipe, pipeline_messages(list(generate(SimConfig(keys=12, projects=2, days=0.15, seed=5, incidents=["loud_burst"], warmup_days=0.05)))), batch=20)
    pipe.snapshot_seconds = 5.0  # the last snapshot was slow: big state, so the worker wants to fork
    c = Consumer(None, pipe.rt, pipe, None, StatusFile(tmp_path / "worker.status.json", os.getpid()), None, None)
    c.stream = _Stream()
    c.pending = ["event-1", "event-2"]  # stored in ClickHouse, waiting for a snapshot to cover them
    return client, settings.clickhouse_database, pipe, c


def _stored_scopes(client, db) -> set[str]:
    return {r[0] for r in client.query(f"SELECT scope FROM {db}.detector_snapshots").result_rows}


def _expect_in_process(client, db, pipe, c, written) -> None:
    assert c.snap is None and not pipe.dirty  # no child: stored here, now
    assert _stored_scopes(client, db) == {global_scope(TOPIC)} | {scope_for(TOPIC, p) for p in written}
    assert c.stream.acked == ["event-1", "event-2"] and c.pending == []
    assert c.status.data["snapshots"] == 1 and c.status.data["snapshot_bytes"] > 0
    assert not list(c.fork_dir.glob(snapfork.PREFIX + "*"))


def test_too_little_memory_snapshots_in_process(ch_db, tmp_path, monkeypatch):
    client, db, pipe, c = _consumer(ch_db, tmp_path)
    written = set(pipe.dirty)
    assert written and c.fork_dir == tmp_path
    monkeypatch.setattr(consumer_mod, "memory_headroom_ok", lambda: False)
    asyncio.run(c._snapshot_and_ack())
    _expect_in_process(client, db, pipe, c, written)
    assert c.status.data["snapshot_fork"] is False  # shown in the status file (and logged once)


def test_a_refused_fork_snapshots_in_process(ch_db, tmp_path, monkeypatch, caplog):
    client, db, pipe, c = _consumer(ch_db, tmp_path)
    written = set(pipe.dirty)

    def refuse():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(consumer_mod, "memory_headroom_ok", lambda: True)
    monkeypatch.setattr(snapfork.os, "fork", refuse)
    with caplog.at_level(logging.WARNING, logger="keywatch.worker"):
        asyncio.run(c._snapshot_and_ack())
    _expect_in_process(client, db, pipe, c, written)
    assert "could not fork for the snapshot, taking it in process" in caplog.text


def test_control_with_room_the_snapshot_is_forked(ch_db, tmp_path, monkeypatch):
    client, db, pipe, c = _consumer(ch_db, tmp_path)
    monkeypatch.setattr(consumer_mod, "memory_headroom_ok", lambda: True)

    async def run() -> None:
        await c._snapshot_and_ack()
        assert c.snap is not None and c.stream.acked == []  # a child takes it; acks wait for its rows
        await c._collect(block=True)

    asyncio.run(run())
    assert c.snap is None and c.stream.acked == ["event-1", "event-2"]
    assert global_scope(TOPIC) in _stored_scopes(client, db)


@pytest.mark.parametrize("last_s, forks", [(0.0, True), (0.2, False), (5.0, True)])
def test_the_first_snapshot_is_forked_then_its_length_decides(ch_db, tmp_path, monkeypatch, last_s, forks):
    """No snapshot stored yet (0 s: length unknown, e.g. just after a restore) → forked; one that
    took less than `snapshot_fork_min_s` (1 s here) → the next is taken in process."""
    client, db, pipe, c = _consumer(ch_db, tmp_path)
    pipe.snapshot_seconds = last_s
    monkeypatch.setattr(consumer_mod, "memory_headroom_ok", lambda: True)

    async def run() -> None:
        await c._snapshot_and_ack()
        assert (c.snap is not None) is forks
        await c._collect(block=True)

    asyncio.run(run())
    assert c.stream.acked == ["event-1", "event-2"] and global_scope(TOPIC) in _stored_scopes(client, db)
    assert pipe.snapshot_seconds > 0  # measured: it decides the next one
