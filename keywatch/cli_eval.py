"""`keywatch eval …`: the evaluation sub-commands (scenario suite, NAB, …).

Each evaluation area adds one command to `eval_app` below (one function each, lazy imports
inside so the CLI starts fast). `keywatch/cli.py` registers this sub-app with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

eval_app = typer.Typer(no_args_is_help=True, help="Evaluations: detection rate, time-to-detect, false alarms.")
console = Console(stderr=True)


@eval_app.command("scenarios")
def scenarios(
    out: Path = typer.Option(Path("eval_scenarios.json"), "--out", "-o", help="JSON report"),
    seeds: int = typer.Option(6, "--seeds", help="simulated data sets (each has every attack style)"),
    keys: int = typer.Option(60, "--keys", help="keys per data set"),
    days: float = typer.Option(4.0, "--days", help="days of history per data set"),
    quick: bool = typer.Option(False, "--quick", help="small suite (CI)"),
    partitions: int = typer.Option(0, "--partitions", min=0,
                                   help="0: through replay (one core); N: through the worker's layout, N partition cores + the worker-wide core"),
    workers: int = typer.Option(1, "--workers", min=1, help="with --partitions: that many `all` workers in one group share the partitions (placed as KEYWATCH_PLACEMENT says; their project populations shared after every batch unless KEYWATCH_POPULATION_SHARE_S=0)"),
) -> None:
    """Key-theft scenario suite: simulated attacks of every style through replay (or the worker's layout); rates and times."""
    from keywatch.models.registry import build_core  # noqa: F401  (fail early on a broken core)
    from keywatch.scenario_eval import print_report, run_suite
    from keywatch.cli import load_settings

    settings = load_settings()
    report = run_suite(settings, seeds=seeds, keys=keys, days=days, quick=quick, out=out, partitions=partitions, workers=workers)
    print_report(report, console)
    if not report.get("targets_met", False):
        raise typer.Exit(1)


# --- other evaluation commands are added below (one function each) --------------------------


@eval_app.command("nab")
def nab(
    data: Path = typer.Option(..., "--data", help="NAB folder (data/ and labels/combined_windows.json)"),
    out: Path = typer.Option(Path("nab_results"), "--out", "-o", help="DIR/<category>/<file> score CSVs"),
    only: Optional[str] = typer.Option(None, "--only", help="only files whose name contains this"),
    limit: Optional[int] = typer.Option(None, "--limit", help="at most this many files"),
) -> None:
    """NAB: the cost-spike univariate detector (online) on every series, scored per profile (issue 4)."""
    import json
    import time

    from keywatch.models.nab import run_nab

    started = time.perf_counter()
    res = run_nab(data, out, limit=limit, only=only)
    summary = {k: {"score": round(v["score"], 2), "threshold": round(v["threshold"], 5), "tp_windows": v["tp"],
                   "windows": v["windows"], "fp_rows": v["fp"]} for k, v in res.items() if isinstance(v, dict)}
    summary["files"] = res["files"]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
