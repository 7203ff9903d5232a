"""Small builders for Grafana dashboard JSON: data sources, template variables, panels, layout.

The dashboards in `build.py` are written with these helpers so that every panel gets the same
data source reference, a unique id and a `gridPos` from one `Grid` (no overlaps by construction).

>>> g = Grid()
>>> a = g.place(ch_panel("A", "SELECT 1", kind="stat"), w=12, h=4)
>>> b = g.place(ch_panel("B", "SELECT 1", kind="stat"), w=12, h=4)
>>> c = g.place(ch_panel("C", "SELECT 1", kind="table"), w=24, h=6)
>>> [p["gridPos"] for p in (a, b, c)]
[{'x': 0, 'y': 0, 'w': 12, 'h': 4}, {'x': 12, 'y': 0, 'w': 12, 'h': 4}, {'x': 0, 'y': 4, 'w': 24, 'h': 6}]
>>> flt("provider", "key_id")
"('${provider}' = '__all' OR provider = '${provider}') AND ('${key}' = '__all' OR key_id = '${key}')"
"""

from __future__ import annotations

from typing import Any

# Fixed data source uids: the provisioning files (infra/grafana/provisioning/datasources) create
# data sources with exactly these uids, so dashboards need no import-time mapping.
CLICKHOUSE_UID = "keywatch-clickhouse"
PROMETHEUS_UID = "keywatch-prometheus"
CH = {"type": "grafana-clickhouse-datasource", "uid": CLICKHOUSE_UID}
PROM = {"type": "prometheus", "uid": PROMETHEUS_UID}

# "All" is a sentinel rather than a regex or a list, so one SQL shape works for every selection
# and for both the plugin and the test's macro expansion.
ALL = "__all"
# The plugin's query formats (grafana-clickhouse-datasource v4): 0 time series, 1 table.
FORMAT = {"time_series": 0, "table": 1}

_VAR_FOR_COLUMN = {"provider": "provider", "project": "project", "key_id": "key"}


def flt(*columns: str, prefix: str = "") -> str:
    """SQL condition for the dashboard's provider/project/key variables on the given columns.

    Nullable columns (alerts.key_id, alerts.project) are wrapped in `ifNull` by passing
    e.g. ``"ifNull(key_id, '')"``; the variable is chosen from the bare column name.
    """
    parts = []
    for col in columns:
        bare = col.split("(")[-1].split(",")[0].strip() if "(" in col else col
        var = _VAR_FOR_COLUMN[bare]
        parts.append(f"('${{{var}}}' = '{ALL}' OR {prefix}{col} = '${{{var}}}')")
    return " AND ".join(parts)


def constant_var(name: str, value: str, label: str | None = None) -> dict[str, Any]:
    """A hidden constant (the ClickHouse database name): editable in the JSON, not in the UI."""
    return {"type": "constant", "name": name, "label": label or name, "hide": 2, "query": value,
            "current": {"text": value, "value": value}, "options": [{"text": value, "value": value, "selected": True}]}


def query_var(name: str, label: str, sql: str) -> dict[str, Any]:
    """A ClickHouse query variable with an "All" option whose value is the `__all` sentinel."""
    return {
        "type": "query", "name": name, "label": label, "datasource": CH,
        "query": sql, "definition": sql, "refresh": 2, "sort": 1,
        "includeAll": True, "allValue": ALL, "multi": False,
        "current": {"text": "All", "value": "$__all"}, "options": [],
    }


def ch_target(sql: str, fmt: str = "time_series", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": CH, "editorType": "sql", "rawSql": sql.strip(),
            "format": FORMAT[fmt], "queryType": "table" if fmt == "table" else "timeseries"}


def prom_target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": PROM, "expr": expr, "legendFormat": legend, "range": True}


def ch_panel(title: str, sql: str, *, kind: str = "timeseries", fmt: str | None = None,
             description: str = "", unit: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ClickHouse panel; table-like kinds query in table format, the others as time series."""
    fmt = fmt or ("time_series" if kind == "timeseries" else "table")
    panel = {"type": kind, "title": title, "description": description, "datasource": CH,
             "targets": [ch_target(sql, fmt)], "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        panel["fieldConfig"]["defaults"]["unit"] = unit
    panel.update(extra)
    return panel


def prom_panel(title: str, exprs: list[tuple[str, str]], *, kind: str = "timeseries",
               description: str = "", unit: str | None = None) -> dict[str, Any]:
    """A Prometheus panel with one target per (expr, legend)."""
    refs = "ABCDEFGH"
    panel = {"type": kind, "title": title, "description": description, "datasource": PROM,
             "targets": [prom_target(e, legend, refs[i]) for i, (e, legend) in enumerate(exprs)],
             "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        panel["fieldConfig"]["defaults"]["unit"] = unit
    return panel


def geomap_options(location_field: str, size_field: str) -> dict[str, Any]:
    """Geomap with a markers layer placed by ISO country code (Grafana's built-in gazetteer)."""
    return {
        "view": {"id": "zero", "lat": 20, "lon": 0, "zoom": 1},
        "controls": {"showZoom": True, "mouseWheelZoom": False},
        "basemap": {"type": "default", "name": "Basemap"},
        "layers": [{
            "type": "markers", "name": "source countries",
            "location": {"mode": "lookup", "lookup": location_field, "gazetteer": "public/gazetteer/countries.json"},
            "config": {"size": {"field": size_field, "min": 3, "max": 30, "fixed": 5},
                       "color": {"fixed": "red"}, "showLegend": True},
        }],
    }


class Grid:
    """Places panels left to right, wrapping at Grafana's 24 columns; assigns unique ids."""

    WIDTH = 24

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def place(self, panel: dict[str, Any], *, w: int, h: int) -> dict[str, Any]:
        if self.x + w > self.WIDTH:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)
        return panel

    def row(self, title: str) -> None:
        """A collapsible-looking row header on its own line (Grafana draws it full width)."""
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.place({"type": "row", "title": title, "collapsed": False, "panels": []}, w=24, h=1)


def dashboard(uid: str, title: str, grid: Grid, variables: list[dict[str, Any]], *,
              tags: list[str], refresh: str = "30s", time_from: str = "now-6h") -> dict[str, Any]:
    """The dashboard model Grafana stores (schemaVersion 39: Grafana 10/11)."""
    return {
        "uid": uid, "title": title, "tags": ["keywatch", *tags], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "refresh": refresh, "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables}, "annotations": {"list": []},
        "panels": grid.panels, "links": [],
    }
