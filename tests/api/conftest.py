"""Fixtures for the API tests: a worker runtime on a real chDB database with a live revocation
engine (a local provider server) and a cost/budget core that has seen two hours of traffic, and
the faust views on a real port (a thread with its own event loop, like the worker)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "revocation"))

from revocation_servers import ANTHROPIC_ADMIN_KEY, ProviderServer, make_alert  # noqa: E402

from api_helpers import AUTH, BUDGETS, POLICY, TOKEN, cost_core, traffic  # noqa: E402,F401


@pytest.fixture
def provider():
    srv = ProviderServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def api_rt(ch_db, make_settings, provider, tmp_path):
    """A WorkerRuntime like `stream.worker.build_runtime` makes, plus two pending approvals."""
    from keywatch.hooks import build_alert_hooks
    from keywatch.sinks.clickhouse import ClickHouseSink
    from keywatch.stream.metrics import Metrics
    from keywatch.stream.runtime import WorkerRuntime

    client, base = ch_db
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "budgets.yaml").write_text(BUDGETS)
    settings = make_settings(
        CLICKHOUSE_DATABASE=base.clickhouse_database, API_TOKEN=TOKEN, REVOCATION_ENABLED="true",
        REVOCATION_POLICY_FILE=tmp_path / "policy.yaml", REVOCATION_ANTHROPIC_BASE_URL=provider.url,
        REVOCATION_ANTHROPIC_ADMIN_KEY=ANTHROPIC_ADMIN_KEY, REVOCATION_TIMEOUT_S="2",
        BUDGETS_FILE=tmp_path / "budgets.yaml")
    sink = ClickHouseSink(client, settings.clickhouse_database)
    core = cost_core(settings)
    sink.write(core.process(traffic()))
    rt = WorkerRuntime(settings=settings, sink=sink, core=core, metrics=Metrics())
    rt.alert_hooks = build_alert_hooks(settings, sink, rt.metrics)
    provider.anthropic_keys.update({"apikey_a": "active", "apikey_b": "active"})
    decided = asyncio.run(rt.alert_hooks[-1].handle([make_alert("apikey_a"), make_alert("apikey_b")]))
    assert [d.outcome for d in decided] == ["pending_approval"] * 2
    rt.pending = {d.key_id: d.decision_id for d in decided}
    return rt


@pytest.fixture
def serve():
    """serve(runtime) → port of the faust views on 127.0.0.1, served from a background thread."""
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
