"""Shared fixtures.

chDB allows one data path per process, so the test session opens one chDB path and every test
that needs ClickHouse gets its own throwaway database in it, migrated to the current schema.
"""

from __future__ import annotations

import asyncio
import sys
import threading

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


@pytest.fixture
def serve():
    """serve(runtime) → port of the worker's faust views on 127.0.0.1, served from a background
    thread with its own event loop (like the worker); stopped after the test."""
    import faust
    from aiohttp import web as aioweb

    from keywatch.stream.web import register_views

    servers = []

    def start(rt) -> int:
        app = faust.App(f"kw-api-test-{len(servers)}", broker="memory://", web_enabled=True, web_in_thread=False)
        register_views(app, rt)
        loop = asyncio.new_event_loop()
        started, state = threading.Event(), {}

        async def up():
            runner = aioweb.AppRunner(app.web.web_app)
            await runner.setup()
            site = aioweb.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state["runner"], state["port"] = runner, site._server.sockets[0].getsockname()[1]
            started.set()

        t = threading.Thread(target=lambda: (loop.run_until_complete(up()), loop.run_forever()), daemon=True)
        t.start()
        assert started.wait(10)
        servers.append((loop, t, state["runner"]))
        return state["port"]

    yield start
    for loop, t, runner in servers:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


@pytest.fixture
def provider():
    """A local server speaking the provider admin APIs that revocation calls (OpenAI, Anthropic,
    LiteLLM, webhook; tests/revocation/revocation_servers.py), stopped after the test."""
    helpers = str(Path(__file__).resolve().parent / "revocation")
    if helpers not in sys.path:
        sys.path.insert(0, helpers)
    from revocation_servers import ProviderServer

    srv = ProviderServer().start()
    yield srv
    srv.stop()
