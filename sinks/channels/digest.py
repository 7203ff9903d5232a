"""Daily digests: a `mode: digest` route collects alerts on disk and sends one summary a day.

Each (route, channel) has its own buffer file `<data_dir>/channels/digest/<route>.<channel>.jsonl`
(one alert per line, later versions win), so a channel that failed keeps its alerts for the
next attempt while the others are emptied. Files are locked (`flock`), so the worker and
`keywatch channels digest --send` can share them.

>>> import tempfile, pathlib
>>> box = DigestBox(pathlib.Path(tempfile.mkdtemp()))
>>> box.add("fin", "mail", {"alert_id": "a", "version": 1}); box.add("fin", "mail", {"alert_id": "a", "version": 2})
>>> [a["version"] for a in box.pending("fin", "mail")]
[2]
>>> due_period("08:00", now_s=1795622400.0, last=None)   # 2026-11-25 16:00 UTC, never sent
'2026-11-25'
>>> due_period("08:00", now_s=1795622400.0, last="2026-11-25") is None
True
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson


class DigestBox:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, route: str, channel: str, suffix: str = "jsonl") -> Path:
        return self.root / f"{route}.{channel}.{suffix}"

    @contextmanager
    def _locked(self, route: str, channel: str) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._path(route, channel, "lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._path(route, channel)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, route: str, channel: str, alert: dict[str, Any]) -> None:
        with self._locked(route, channel) as path, open(path, "ab") as f:
            f.write(orjson.dumps(alert, default=str) + b"\n")

    def pending(self, route: str, channel: str) -> list[dict[str, Any]]:
        with self._locked(route, channel) as path:
            return _read(path)

    def take(self, route: str, channel: str) -> tuple[list[dict[str, Any]], Path | None]:
        """The pending alerts and a snapshot file; `commit(snapshot)` after sending, `restore` on failure."""
        with self._locked(route, channel) as path:
            if not path.exists():
                return [], None
            snap = path.with_suffix(f".sending.{os.getpid()}")
            path.rename(snap)
            return _read(snap), snap

    def commit(self, snap: Path | None) -> None:
        if snap is not None:
            snap.unlink(missing_ok=True)

    def restore(self, route: str, channel: str, snap: Path | None) -> None:
        if snap is None:
            return
        with self._locked(route, channel) as path:
            data = snap.read_bytes()
            with open(path, "ab") as f:  # alerts that arrived meanwhile stay after the old ones
                f.write(data)
            snap.unlink(missing_ok=True)

    def last_sent(self, route: str) -> str | None:
        p = self.root / f"{route}.last"
        return p.read_text().strip() if p.exists() else None

    def mark_sent(self, route: str, period: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / f"{route}.last").write_text(period)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        try:
            a = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line after a crash
        key = str(a.get("alert_id"))
        if key not in latest or int(a.get("version", 0)) >= int(latest[key].get("version", 0)):
            latest[key] = a
    sev = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    return sorted(latest.values(), key=lambda a: (sev.get(a.get("severity"), 4), -float(a.get("cost_impact_usd") or 0)))


def due_period(digest_at: str, now_s: float, last: str | None) -> str | None:
    """The day (YYYY-MM-DD, UTC) whose digest is due now, or None if already sent / not yet time."""
    now = datetime.fromtimestamp(now_s, tz=timezone.utc)
    hh, mm = (int(x) for x in digest_at.split(":"))
    today_at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    day = now.date() if now >= today_at else now.date() - timedelta(days=1)
    period = day.isoformat()
    return None if last is not None and last >= period else period


def seconds_until(digest_at: str, now_s: float) -> float:
    now = datetime.fromtimestamp(now_s, tz=timezone.utc)
    hh, mm = (int(x) for x in digest_at.split(":"))
    nxt = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if nxt <= now:
        nxt += timedelta(days=1)
    return (nxt - now).total_seconds()
