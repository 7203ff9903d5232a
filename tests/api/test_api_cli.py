"""`keywatch revoke …` and `keywatch spend` in embedded mode go through the worker's HTTP API
(a real local server over the same chDB database); nothing opens chDB in the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from api_helpers import TOKEN


@pytest.fixture
def cli(api_rt, serve, tmp_path, monkeypatch):
    from keywatch.cli import app
    from keywatch.settings import get_settings

    port = serve(api_rt)
    monkeypatch.setenv("KEYWATCH_WEB_PORT", str(port))
    monkeypatch.setenv("KEYWATCH_API_TOKEN", TOKEN)
    monkeypatch.setenv("KEYWATCH_DATA_DIR", str(tmp_path / "nochdb"))  # would be an empty chDB if used
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("KEYWATCH_CLICKHOUSE_DSN", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str):
        get_settings.cache_clear()
        return runner.invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()
    assert not (tmp_path / "nochdb" / "chdb").exists()


def test_revoke_commands_through_the_api(cli, api_rt, provider, monkeypatch):
    a, b = api_rt.pending["apikey_a"], api_rt.pending["apikey_b"]
    res = cli("revoke", "list", "--provider", "anthropic")
    assert res.exit_code == 0, res.output
    assert a in res.output and b in res.output and "pending_approval" in res.output
    assert cli("revoke", "list", "--provider", "openai").output.count("rv_") == 0
    res = cli("revoke", "show", a)
    assert res.exit_code == 0 and "apikey_a" in res.output
    assert cli("revoke", "show", "rv_nope").exit_code == 3
    res = cli("revoke", "approve", a, "--actor", "ana")
    assert res.exit_code == 0, res.output
    assert "executed" in res.output and "actor=ana" in res.output
    assert provider.anthropic_keys["apikey_a"] == "inactive"
    assert cli("revoke", "approve", a, "--actor", "ana").exit_code == 3  # 409: not pending
    res = cli("revoke", "undo", a, "--actor", "ana")
    assert res.exit_code == 0 and "enable" in res.output and provider.anthropic_keys["apikey_a"] == "active"
    res = cli("revoke", "reject", b, "--reason", "planned", "--actor", "bo")
    assert res.exit_code == 0 and "rejected" in res.output
    res = cli("revoke", "list", "--status", "all", "--key", "apikey_a")
    assert res.exit_code == 0 and "undone" in res.output
    monkeypatch.setenv("KEYWATCH_API_TOKEN", "wrong-token")
    res = cli("revoke", "approve", b, "--actor", "ana")
    assert res.exit_code == 2 and "401" in res.output


def test_spend_command_through_the_api(cli):
    res = cli("spend")
    assert res.exit_code == 0, res.output
    assert "spend projection (core)" in res.output and "proj-a" in res.output
    assert "project:proj-a/day" in res.output and "over" in res.output and "key:key_b/month" in res.output
    res = cli("spend", "--json", "--level", "provider")
    assert res.exit_code == 0 and '"source": "core"' in res.output and "proj-b" not in res.output
    res = cli("spend", "--level", "model")
    assert res.exit_code == 1 and "level must be one of" in res.output
