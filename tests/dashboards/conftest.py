"""Fixtures for dashboard, API and report tests: a migrated chDB database with the sample story."""

from __future__ import annotations

import pytest


@pytest.fixture
def filled_db(ch_db):
    """(client, settings) with `keywatch.dashboards.sample` written into a fresh database."""
    from keywatch.dashboards import sample

    client, settings = ch_db
    sample.fill(client, settings.clickhouse_database)
    return client, settings
