"""Recovery-time ClickHouse fix-ups: rollup repair, idle-key baselines, re-read score rows.

Rollups (`usage_minute`, `spend_minute_by_project`) are filled by materialized views *during*
the `usage_events` INSERT, but not atomically with it: a worker killed inside that INSERT can
leave raw rows stored without their rollup rows. After a restart the re-read finds those rows
already stored (stream/recheck.py) and calls `repair_rollups` for the minutes they touch:
truth (grouped `usage_events FINAL`) minus the current rollup sums is inserted as extra rows
into the SummingMergeTree tables — a no-op when nothing was missing, so it is idempotent. It
runs before the batch's own rows are written, so both sides exclude those.

>>> _minutes([60_000, 61_000, 180_000])
[1, 3]
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterable

from keywatch.stream.state import _in_list

log = logging.getLogger(__name__)

USAGE_MINUTE_SUMS = ["events", "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd", "errors"]
SPEND_SUMS = ["requests", "cost_usd"]


def _minutes(ts_ms: Iterable[int]) -> list[int]:
    return sorted({t // 60_000 for t in ts_ms})


def _ints(values: Iterable[int]) -> str:
    return ",".join(str(int(v)) for v in values)


def _delta(truth: dict[tuple, list], have: dict[tuple, list]) -> list[tuple[tuple, list]]:
    out = []
    for k, t in truth.items():
        h = have.get(k, [0] * len(t))
        d = [a - b for a, b in zip(t, h)]
        # integer sums decide (cost is a float with rounding noise); never insert negatives
        if any(x > 0 for x in d[:-1] if isinstance(x, int)) and all(x >= 0 for x in d if isinstance(x, int)):
            out.append((k, [max(0.0, x) if isinstance(x, float) else x for x in d]))
    return out


def repair_rollups(client, db: str, events: list[Any]) -> int:
    """Insert what the rollups miss for the (key, minute)s and (project, minute)s of `events`."""
    if not events:
        return 0
    mins = _minutes(e.ts_ms for e in events)
    keys = sorted({e.key_id for e in events})
    projects = sorted({e.project or "" for e in events})
    where_ts = f"intDiv(toUnixTimestamp64Milli(ts), 60000) IN ({_ints(mins)})"
    where_min = f"intDiv(toUnixTimestamp(minute), 60) IN ({_ints(mins)})"
    dims = "provider, project, key_id, model"
    truth = {tuple(r[:5]): list(r[5:]) for r in client.query(
        f"SELECT intDiv(toUnixTimestamp64Milli(ts), 60000) AS m, {dims}, toUInt64(count()), toUInt64(sum(requests)), "
        "toUInt64(sum(input_tokens)), toUInt64(sum(output_tokens)), toUInt64(sum(cached_input_tokens)), "
        "sum(cost_usd), toUInt64(countIf(status >= 400 OR error_code != '')) "
        f"FROM {db}.usage_events FINAL WHERE key_id IN ({_in_list(keys)}) AND {where_ts} GROUP BY m, {dims}").result_rows}
    have = {tuple(r[:5]): list(r[5:]) for r in client.query(
        f"SELECT intDiv(toUnixTimestamp(minute), 60) AS m, {dims}, "
        + ", ".join(f"sum({c})" for c in USAGE_MINUTE_SUMS)
        + f" FROM {db}.usage_minute WHERE key_id IN ({_in_list(keys)}) AND {where_min} GROUP BY m, {dims}").result_rows}
    _reorder_cost_last(truth)
    _reorder_cost_last(have)
    n = 0
    rows = [[_dt(k[0]), *k[1:], *_cost_back(d)] for k, d in _delta(truth, have)]
    if rows:
        client.insert(f"{db}.usage_minute", rows, column_names=["minute", "provider", "project", "key_id", "model",
                                                                 *USAGE_MINUTE_SUMS])
        n += len(rows)
    truth = {tuple(r[:3]): [int(r[3]), float(r[4])] for r in client.query(
        f"SELECT intDiv(toUnixTimestamp64Milli(ts), 60000) AS m, provider, project, toUInt64(sum(requests)), sum(cost_usd) "
        f"FROM {db}.usage_events FINAL WHERE project IN ({_in_list(projects)}) AND {where_ts} GROUP BY m, provider, project"
    ).result_rows}
    have = {tuple(r[:3]): [int(r[3]), float(r[4])] for r in client.query(
        f"SELECT intDiv(toUnixTimestamp(minute), 60) AS m, provider, project, sum(requests), sum(cost_usd) "
        f"FROM {db}.spend_minute_by_project WHERE project IN ({_in_list(projects)}) AND {where_min} "
        "GROUP BY m, provider, project").result_rows}
    # spend has no event count: a missing row shows as fewer requests (every event has ≥ 1)
    rows = [[_dt(k[0]), k[1], k[2], d[0], max(0.0, d[1])] for k, d in
            ((k, [t[0] - have.get(k, [0, 0.0])[0], t[1] - have.get(k, [0, 0.0])[1]]) for k, t in truth.items())
            if d[0] > 0]
    if rows:
        client.insert(f"{db}.spend_minute_by_project", rows,
                      column_names=["minute", "provider", "project", *SPEND_SUMS])
        n += len(rows)
    if n:
        log.warning("repaired %d rollup rows left short by an interrupted insert", n)
    return n


def _reorder_cost_last(d: dict[tuple, list]) -> None:
    # [events, requests, in, out, cached, cost, errors] → ints first, cost last (for `_delta`)
    for k, v in d.items():
        d[k] = [int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[6]), float(v[5])]


def _cost_back(d: list) -> list:
    return [d[0], d[1], d[2], d[3], d[4], d[6], d[5]]


def _dt(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=timezone.utc)


def latest_baselines(client, db: str, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The newest `key_baselines` row of each (provider, key_id) that has one."""
    if not keys:
        return []
    rows = client.query(
        f"SELECT provider, key_id, argMax(state, saved_at) FROM {db}.key_baselines "
        f"WHERE key_id IN ({_in_list(sorted({k for _, k in keys}))}) GROUP BY provider, key_id").result_rows
    wanted = set(keys)
    return [{"provider": p, "key_id": k, "state": s} for p, k, s in rows if (p, k) in wanted]


def stored_scores(client, db: str, scores: list[Any]) -> set[tuple[str, str, int]]:
    """(key_id, detector, ts_ms) of `scores` already in the `scores` table (a re-read batch)."""
    if not scores:
        return set()
    keys = sorted({s.key_id or "" for s in scores})
    lo, hi = min(s.ts_ms for s in scores), max(s.ts_ms for s in scores)
    rows = client.query(
        f"SELECT key_id, detector, toUnixTimestamp64Milli(ts) FROM {db}.scores WHERE key_id IN ({_in_list(keys)}) "
        f"AND toUnixTimestamp64Milli(ts) BETWEEN {int(lo)} AND {int(hi)}").result_rows
    return {(k, d, int(t)) for k, d, t in rows}
