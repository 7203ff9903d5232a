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
) -> None:
    """Key-theft scenario suite: simulated attacks of every style through replay; rates and times."""
    from keywatch.models.registry import build_core  # noqa: F401  (fail early on a broken core)
    from keywatch.scenario_eval import print_report, run_suite
    from keywatch.cli import load_settings

    settings = load_settings()
    report = run_suite(settings, seeds=seeds, keys=keys, days=days, quick=quick, out=out)
    print_report(report, console)
    if not report.get("targets_met", False):
        raise typer.Exit(1)


# --- other evaluation commands are added below (one function each) --------------------------
