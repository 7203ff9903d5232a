"""Generate the dashboards' JSON (`keywatch dashboards build`) and walk their panel queries.

The JSON under `dashboards/json/` is committed: Grafana provisioning reads it as files, and a
test regenerates it and fails when the committed copy is stale.

>>> [d["uid"] for d in build_all()]
['keywatch-soc', 'keywatch-spend', 'keywatch-pipeline']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from keywatch.dashboards import finance, ops, soc

JSON_DIR = Path(__file__).resolve().parent / "json"
BUILDERS = {"key-theft-live": soc.build, "spend": finance.build, "pipeline": ops.build}


def build_all(db: str = "keywatch") -> list[dict]:
    """Every dashboard model, for ClickHouse database `db` (the `${db}` constant variable)."""
    return [b(db) for b in BUILDERS.values()]


def render(dash: dict) -> str:
    # Stable formatting so the committed JSON diffs cleanly.
    return json.dumps(dash, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_all(out_dir: Path = JSON_DIR, db: str = "keywatch") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, builder in BUILDERS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(builder(db)), encoding="utf-8")
        paths.append(path)
    return paths


def load_all(json_dir: Path = JSON_DIR) -> list[dict]:
    """The committed dashboards (what provisioning and `dashboards push` use)."""
    return [json.loads((json_dir / f"{name}.json").read_text(encoding="utf-8")) for name in BUILDERS]


def sql_targets(dash: dict) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every ClickHouse query of a dashboard."""
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if "rawSql" in target:
                yield panel, target


if __name__ == "__main__":  # python -m keywatch.dashboards.build
    for p in write_all():
        print(p)
