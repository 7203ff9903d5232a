"""Incident report: data from ClickHouse or the worker API, HTML rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from keywatch.dashboards import sample
from keywatch.models.registry import build_core
from keywatch.report import collect
from keywatch.report_html import render
from keywatch.sinks.clickhouse import ClickHouseSink
from keywatch.stream.metrics import Metrics
from keywatch.stream.runtime import WorkerRuntime

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_collect_and_render(filled_db):
    client, settings = filled_db
    data = collect(client, settings.clickhouse_database, sample.THEFT_ALERT_ID)
    assert data["alert"]["version"] == 2 and data["alert"]["severity"] == "critical"
    pts = data["timeline"]["points"]
    assert len(pts) > 20 and max(p["countries"] for p in pts) >= 2  # the theft hour stands out
    assert [r["outcome"] for r in data["revocations"]] == ["executed"]  # FINAL: current state
    assert collect(client, settings.clickhouse_database, "nope") is None
    page = render(data)
    assert page.count('class="bar"') == len(pts) and 'class="anomaly"' in page and "executed" in page
    assert not re.search(r"(src|href)=\"https?:", page)  # self-contained


@pytest.fixture
def api_server(filled_db, serve):
    """The faust views on a real port (see `serve` in tests/conftest.py)."""
    client, settings = filled_db
    rt = WorkerRuntime(settings=settings, sink=ClickHouseSink(client, settings.clickhouse_database),
                       core=build_core(settings), metrics=Metrics())
    return serve(rt)


def test_cli_goes_through_the_api_in_embedded_mode(api_server, tmp_path, monkeypatch):
    from keywatch.cli import app
    from keywatch.settings import get_settings

    monkeypatch.setenv("KEYWATCH_WEB_PORT", str(api_server))
    monkeypatch.setenv("KEYWATCH_DATA_DIR", str(tmp_path / "nochdb"))  # would be an empty chDB if used
    monkeypatch.delenv("KEYWATCH_CLICKHOUSE_DSN", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["alerts", "list", "--json", "--kind", "key_theft"])
        assert res.exit_code == 0, res.output
        assert sample.THEFT_ALERT_ID in res.output
        res = runner.invoke(app, ["alerts", "ack", sample.THEFT_ALERT_ID])
        assert res.exit_code == 1 and "403" in res.output  # no API token configured: refused
        res = runner.invoke(app, ["key", "key_stolen"])
        assert res.exit_code == 0 and "hourly" in res.output
        out = tmp_path / "report.html"
        res = runner.invoke(app, ["report", sample.THEFT_ALERT_ID, "--html", str(out)])
        assert res.exit_code == 0, res.output
        assert 'data-alert-id="kw_sample_theft_0001"' in out.read_text()
        assert runner.invoke(app, ["report", "nope", "--html", str(out)]).exit_code == 1
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "nochdb" / "chdb").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI: apt-get install -y chromium); "
                                             "this test never installs it itself")
def test_report_chart_renders_in_headless_chromium(filled_db, tmp_path):
    client, settings = filled_db
    page = tmp_path / "report.html"
    page.write_text(render(collect(client, settings.clickhouse_database, sample.THEFT_ALERT_ID)), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--window-size=1200,1600", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
    width = re.search(r'data-rendered-width="(\d+)"', dom)
    bars = re.search(r'data-rendered-bars="(\d+)"', dom)
    assert width and bars, f"the page's script did not run: {dom[:500]}"
    assert int(width.group(1)) > 100 and int(bars.group(1)) > 20
