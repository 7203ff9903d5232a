"""Expand grafana-clickhouse-datasource (v4) macros and template variables, as the plugin does.

Used by the tests (every panel query runs against chDB) and by `keywatch dashboards check`.
Only the macros the plugin documents are expanded; anything left that still starts with `$`
raises, so a typo in a dashboard fails a test instead of failing in Grafana.

>>> q = expand("SELECT $__timeInterval(ts) t FROM ${db}.x WHERE $__timeFilter(ts) AND p = '${provider}'",
...            from_s=0, to_s=3600, interval_s=60, variables={"db": "kw", "provider": "openai"})
>>> print(q)
SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) t FROM kw.x WHERE ts >= toDateTime(0) AND ts <= toDateTime(3600) AND p = 'openai'
"""

from __future__ import annotations

import re
from typing import Mapping


class MacroError(ValueError):
    pass


def _func_macros(from_s: int, to_s: int, interval_s: int) -> dict[str, callable]:
    fm, tm = from_s * 1000, to_s * 1000
    return {
        "timeFilter": lambda c: f"{c} >= toDateTime({from_s}) AND {c} <= toDateTime({to_s})",
        "timeFilter_ms": lambda c: f"{c} >= fromUnixTimestamp64Milli({fm}) AND {c} <= fromUnixTimestamp64Milli({tm})",
        "dateFilter": lambda c: f"{c} >= toDate({from_s}) AND {c} <= toDate({to_s})",
        "dateTimeFilter": lambda c: _date_time_filter(c, from_s, to_s),
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)",
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {interval_s * 1000} millisecond)",
    }


def _date_time_filter(arg: str, from_s: int, to_s: int) -> str:
    date_col, time_col = (a.strip() for a in arg.split(","))
    return (f"({date_col} >= toDate({from_s}) AND {date_col} <= toDate({to_s})) AND "
            f"({time_col} >= toDateTime({from_s}) AND {time_col} <= toDateTime({to_s}))")


_FUNC = re.compile(r"\$__(timeFilter_ms|timeFilter|dateFilter|dateTimeFilter|timeInterval_ms|timeInterval)\(([^()]*(?:\([^()]*\))?[^()]*)\)")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(sql: str, *, from_s: int, to_s: int, interval_s: int, variables: Mapping[str, str]) -> str:
    """The SQL Grafana would send for this time range, interval and variable selection."""
    funcs = _func_macros(from_s, to_s, interval_s)
    sql = _FUNC.sub(lambda m: funcs[m.group(1)](m.group(2).strip()), sql)
    simple = {
        "__fromTime_ms": f"fromUnixTimestamp64Milli({from_s * 1000})",
        "__toTime_ms": f"fromUnixTimestamp64Milli({to_s * 1000})",
        "__fromTime": f"toDateTime({from_s})",
        "__toTime": f"toDateTime({to_s})",
        "__interval_s": str(interval_s),
    }

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name in simple:
            return simple[name]
        if name not in variables:
            raise MacroError(f"unknown macro or variable ${name} in query")
        value = str(variables[name])
        if fmt == "singlequote":
            return "'" + value.replace("'", "\\'") + "'"
        if fmt not in (None, "raw"):
            raise MacroError(f"unsupported variable format :{fmt}")
        return value

    # Longest names first in `simple` are matched by the regex's greedy identifier.
    out = _VAR.sub(var, sql)
    if "$__" in out:
        raise MacroError(f"unexpanded macro in: {out[:200]}")
    return out
