"""A small JSON status file the worker keeps current (`<data_dir>/worker.status.json`).

`keywatch demo` and `keywatch bench` run the worker as a separate process (it owns chDB) and
follow its progress here: counters, batch times and the most recent alerts. Written atomically
(temp file + rename), at most every `min_interval` seconds unless forced.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "s.json"
>>> s = StatusFile(p, pid=1); s.update(ready=True); StatusFile.read(p)["ready"]
True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

RECENT_ALERTS = 200


class StatusFile:
    def __init__(self, path: Path, pid: int, min_interval: float = 0.2) -> None:
        self.path = Path(path)
        self.min_interval = min_interval
        self._last_write = 0.0
        self.data: dict[str, Any] = {
            "pid": pid, "ready": False, "started_at": time.time(), "messages": 0, "events_in": 0,
            "dead_letters": 0, "dead_by_reason": {}, "alerts": 0, "alert_seq": 0, "recent_alerts": [],
            "batches": 0, "skipped_messages": 0, "redelivered_rows": 0, "duplicates": 0,
            "first_batch_at": None, "last_batch_at": None, "snapshots": 0,
            # CPU seconds of the whole process (every thread, chDB's included) at the start of the
            # first batch and the end of the last: `keywatch bench` reports CPU per event from them.
            "first_batch_cpu": None, "last_batch_cpu": None,
        }

    def update(self, force: bool = True, **fields: Any) -> None:
        self.data.update(fields)
        self._flush(force)

    def batch(self, res, events: int, alerts: list[dict]) -> None:
        d = self.data
        now = time.time()
        d["first_batch_at"] = d["first_batch_at"] or (now - (time.perf_counter() - res.started))
        d["last_batch_at"] = now
        if d.get("first_batch_cpu") is None:
            d["first_batch_cpu"] = res.cpu_started
        d["last_batch_cpu"] = time.process_time()
        d["batches"] += 1
        d["messages"] += res.messages
        d["events_in"] += events
        d["skipped_messages"] += res.skipped_messages
        d["redelivered_rows"] += res.redelivered_rows
        d["duplicates"] += res.out.duplicates if res.out is not None else 0
        d["dead_letters"] += len(res.dead)
        for dl in res.dead:
            d["dead_by_reason"][dl.reason] = d["dead_by_reason"].get(dl.reason, 0) + 1
        for a in alerts:
            # One row per incident: an update replaces the alert's earlier entry.
            d["alert_seq"] += 1
            recent = [r for r in d["recent_alerts"] if r.get("alert_id") != a.get("alert_id")]
            if len(recent) == len(d["recent_alerts"]):
                d["alerts"] += 1
                d.setdefault("alerts_by_kind", {})
                d["alerts_by_kind"][a.get("kind")] = d["alerts_by_kind"].get(a.get("kind"), 0) + 1
            else:
                d["alert_updates"] = d.get("alert_updates", 0) + 1
            recent.append({"seq": d["alert_seq"], **{k: a.get(k) for k in (
                "alert_id", "kind", "severity", "key_id", "project", "provider", "score", "reasons",
                "cost_impact_usd", "detected_at", "version", "status")}})
            d["recent_alerts"] = recent
        del d["recent_alerts"][:-RECENT_ALERTS]
        self._flush(False)

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.data, default=str))
        os.replace(tmp, self.path)

    @staticmethod
    def handled(st: dict[str, Any]) -> int:
        """Events a worker is done with, by its status: stored, duplicate or dead.

        >>> StatusFile.handled({"events_in": 5, "duplicates": 1, "dead_letters": 2})
        8
        """
        return st.get("events_in", 0) + st.get("duplicates", 0) + st.get("dead_letters", 0)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        try:
            return orjson.loads(Path(path).read_bytes())
        except (OSError, ValueError):
            return {}
