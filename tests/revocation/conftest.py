"""Fixtures for revocation tests: local provider servers, moto IAM, a fake clock, an engine."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from revocation_servers import (
    ADMIN_KEY, ANTHROPIC_ADMIN_KEY, AWS_ADMIN_ID, AWS_ADMIN_SECRET, LITELLM_MASTER_KEY, WEBHOOK_SECRET,
    IamCredentialServer, ProviderServer, make_alert,
)


class FakeClock:
    """Wall clock the test controls (rate limits, breaker, cool-down, TTLs)."""

    def __init__(self, t: float = 1_795_622_400.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def iam(moto_url):
    import boto3

    return boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1",
                        aws_access_key_id=AWS_ADMIN_ID, aws_secret_access_key=AWS_ADMIN_SECRET)


@pytest.fixture
def iam_creds_server():
    srv = IamCredentialServer()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def retry(sleeps):
    """Short timeout; sleeps recorded instead of waited, so Retry-After tests stay fast."""
    from keywatch.sinks.revocation.adapters import RetryPolicy

    async def sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    return RetryPolicy(timeout_s=0.3, max_attempts=3, max_wait_s=30.0, sleep=sleep)


@pytest.fixture
def rev_settings(ch_db, make_settings, provider, moto_url, tmp_path):
    """Settings for a live engine against the local servers, in the test's ClickHouse database."""
    _, base = ch_db

    def make(policy_yaml: str | None = None, **env):
        values = dict(
            CLICKHOUSE_DATABASE=base.clickhouse_database, REVOCATION_ENABLED="true",
            REVOCATION_OPENAI_BASE_URL=provider.url, REVOCATION_OPENAI_ADMIN_KEY=ADMIN_KEY,
            REVOCATION_ANTHROPIC_BASE_URL=provider.url, REVOCATION_ANTHROPIC_ADMIN_KEY=ANTHROPIC_ADMIN_KEY,
            REVOCATION_LITELLM_BASE_URL=provider.url, REVOCATION_LITELLM_MASTER_KEY=LITELLM_MASTER_KEY,
            REVOCATION_WEBHOOK_URL=provider.url + "/hook", REVOCATION_WEBHOOK_SECRET=WEBHOOK_SECRET,
            REVOCATION_AWS_ENDPOINT_URL=moto_url, REVOCATION_AWS_ACCESS_KEY_ID=AWS_ADMIN_ID,
            REVOCATION_AWS_SECRET_ACCESS_KEY=AWS_ADMIN_SECRET,
        )
        if policy_yaml is not None:
            path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
            path.write_text(policy_yaml)
            values["REVOCATION_POLICY_FILE"] = str(path)
        values.update(env)
        return make_settings(**values)

    return make


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_engine(ch_db, rev_settings, retry, clock):
    """engine(policy_yaml, **env) → a RevocationEngine on the test database and local servers."""
    from keywatch.sinks.revocation.service import build_engine

    client, _ = ch_db

    def make(policy_yaml: str, notify=(), **env):
        settings = rev_settings(policy_yaml, **env)
        return build_engine(settings, client, clock=clock, retry=retry, notify=notify)

    return make


@pytest.fixture
def alert():
    return make_alert
