"""Fixtures for the API tests: a worker runtime on a real chDB database with a live revocation
engine (a local provider server) and a cost/budget core that has seen two hours of traffic, and
the faust views on a real port (a thread with its own event loop, like the worker)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "revocation"))

from revocation_servers import ANTHROPIC_ADMIN_KEY, make_alert  # noqa: E402

from api_helpers import AUTH, BUDGETS, POLICY, TOKEN, cost_core, traffic  # noqa: E402,F401


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
