"""Shared fixtures.

chDB allows one data path per process, so the test session opens one chDB path and every test
that needs ClickHouse gets its own throwaway database in it, migrated to the current schema.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from keywatch.settings import Settings


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_client(chdb_path):
    import clickhouse_connect

    return clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")


@pytest.fixture
def make_settings(tmp_path):
    """Settings for a test: isolated data dir, no environment leakage."""

    def make(**env: str) -> Settings:
        base = {"KEYWATCH_DATA_DIR": str(tmp_path / "data")}
        base.update({k if k.startswith("KEYWATCH_") else f"KEYWATCH_{k.upper()}": str(v) for k, v in env.items()})
        return Settings.from_env(base)

    return make


@pytest.fixture
def ch_db(chdb_client, make_settings):
    """(client, settings) with a fresh, migrated database; dropped afterwards."""
    from keywatch.sinks.migrate import migrate, migration_params

    db = f"kw_test_{uuid.uuid4().hex[:10]}"
    settings = make_settings(CLICKHOUSE_DATABASE=db)
    migrate(chdb_client, migration_params(settings))
    yield chdb_client, settings
    chdb_client.command(f"DROP DATABASE IF EXISTS {db}")
