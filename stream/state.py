"""Worker state in ClickHouse: detector snapshots, written high-water offsets, re-delivery checks.

A snapshot is the pickled `DetectionCore` of one input partition (scope ``p:<topic>:<n>``,
see stream/partitions.py; ``g:<topic>`` is the worker's global project-level core; scope
``core`` is the pre-partition format, still read once for an upgrade) with the input offsets it already includes, signed
with an HMAC (key: `KEYWATCH_KEY_HASH_SECRET`) so that only a snapshot this deployment wrote is
ever unpickled. Tables come from migration 0002.

>>> blob = seal(b"state", b"k"); unseal(blob, b"k")
b'state'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import time
import zlib
from typing import Any, Iterable

import orjson

from keywatch.sinks.clickhouse import dt, insert_rows

SNAPSHOT_COLUMNS = ["worker_id", "scope", "taken_at", "offsets", "watermark_ms", "size_bytes", "digest", "state"]


class SnapshotError(RuntimeError):
    pass


def seal(raw: bytes, key: bytes) -> str:
    """zlib + base64 text (safe in a String column) with an HMAC-SHA256 tag in front."""
    body = zlib.compress(raw, 3)
    tag = hmac.new(key, body, hashlib.sha256).hexdigest()
    return tag + ":" + base64.b64encode(body).decode()


def unseal(text: str, key: bytes) -> bytes:
    tag, _, b64 = text.partition(":")
    body = base64.b64decode(b64)
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).hexdigest()):
        raise SnapshotError("snapshot signature does not match KEYWATCH_KEY_HASH_SECRET; not restoring it")
    return zlib.decompress(body)


def _in_list(values: Iterable[str]) -> str:
    # Values are escaped for a single-quoted ClickHouse literal (event ids are free text).
    return ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


class StreamState:
    def __init__(self, client, database: str, worker_id: str, secret: bytes) -> None:
        self.client = client
        self.lookups = client  # idle-key baseline lookups; the worker's `Consumer` gives them their own
        self.db = database
        self.worker_id = worker_id
        self.secret = secret

    # --- snapshots -----------------------------------------------------------------------------
    def save_snapshot(self, core: Any, offsets: dict[str, int], scope: str = "core") -> int:
        row = self.snapshot_row(core, offsets, scope, int(time.time() * 1000))
        return self.insert_snapshot_rows([row])

    def snapshot_row(self, core: Any, offsets: dict[str, int], scope: str, taken_ms: int) -> list:
        """One `detector_snapshots` row (pickled, sealed); pure, so a forked child can build it
        (stream/snapfork.py). `taken_ms` is when the state was this: the latest row of a scope wins."""
        raw = pickle.dumps(core, protocol=pickle.HIGHEST_PROTOCOL)
        return [self.worker_id, scope, taken_ms, orjson.dumps(offsets).decode(), int(getattr(core, "watermark_ms", 0)),
                len(raw), hashlib.sha256(raw).hexdigest()[:16], seal(raw, self.secret)]

    def insert_snapshot_rows(self, rows: list[list]) -> int:
        """Store rows of `snapshot_row` in one INSERT; returns their pickled bytes."""
        if rows:
            self.client.insert(f"{self.db}.detector_snapshots", [[*r[:2], dt(r[2]), *r[3:]] for r in rows],
                               column_names=SNAPSHOT_COLUMNS)
        return sum(r[5] for r in rows)

    def load_snapshot(self, scope: str = "core") -> tuple[Any, dict[str, int]] | None:
        rows = self.client.query(
            f"SELECT offsets, state FROM {self.db}.detector_snapshots WHERE worker_id = %(w)s AND scope = %(s)s "
            "ORDER BY taken_at DESC LIMIT 1", parameters={"w": self.worker_id, "s": scope}).result_rows
        if not rows:
            return None
        offsets, sealed = rows[0]
        core = pickle.loads(unseal(sealed, self.secret))  # noqa: S301 - HMAC-verified, our own
        return core, {k: int(v) for k, v in orjson.loads(offsets).items()}

    def snapshot_offsets(self, scope: str) -> dict[str, int] | None:
        """The offsets of the latest snapshot of `scope` (without loading its state), or None."""
        rows = self.client.query(
            f"SELECT offsets FROM {self.db}.detector_snapshots WHERE worker_id = %(w)s AND scope = %(s)s "
            "ORDER BY taken_at DESC LIMIT 1", parameters={"w": self.worker_id, "s": scope}).result_rows
        return {k: int(v) for k, v in orjson.loads(rows[0][0]).items()} if rows else None

    # --- offsets whose output may already be stored ---------------------------------------------
    def mark_high_water(self, topic: str, offsets: dict[int, int]) -> None:
        if offsets:
            rows = [[topic, p, o, self.worker_id] for p, o in offsets.items()]
            insert_rows(self.client, f"{self.db}.stream_offsets", rows, ["topic", "partition", "offset", "worker_id"])

    def high_water(self, topic: str) -> dict[int, int]:
        rows = self.client.query(
            f"SELECT partition, max(offset) FROM {self.db}.stream_offsets WHERE topic = %(t)s GROUP BY partition",
            parameters={"t": topic}).result_rows
        return {int(p): int(o) for p, o in rows}

    # --- what a re-read batch already stored ---------------------------------------------------
    def existing_usage_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 5000):
            chunk = ids[i:i + 5000]
            if chunk:
                found.update(r[0] for r in self.client.query(
                    f"SELECT DISTINCT event_id FROM {self.db}.usage_events WHERE event_id IN ({_in_list(chunk)})").result_rows)
        return found

    def existing_dead_letters(self, topic: str, offsets: list[tuple[int, int]]) -> set[tuple[int, int, int]]:
        if not offsets:
            return set()
        lo, hi = min(o for _, o in offsets), max(o for _, o in offsets)
        parts = sorted({p for p, _ in offsets})
        rows = self.client.query(
            f"SELECT partition, offset, idx FROM {self.db}.dead_letters WHERE topic = %(t)s AND partition IN %(p)s "
            "AND offset BETWEEN %(lo)s AND %(hi)s", parameters={"t": topic, "p": parts, "lo": lo, "hi": hi}).result_rows
        return {(int(p), int(o), int(i)) for p, o, i in rows}
