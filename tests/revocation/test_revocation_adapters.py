"""Each adapter against a local server speaking its API: success, 401, 404, 429, 5xx, timeout."""

from __future__ import annotations

import asyncio

import pytest

from keywatch.sinks.revocation.adapter_aws import AwsIamAdapter
from keywatch.sinks.revocation.adapter_http import AnthropicAdapter, LiteLLMAdapter, OpenAIAdapter, WebhookAdapter
from keywatch.sinks.revocation.adapters import RetryPolicy, Target
from revocation_servers import (
    ADMIN_KEY, ALL_SECRETS, ANTHROPIC_ADMIN_KEY, AWS_ADMIN_ID, AWS_ADMIN_SECRET, LITELLM_MASTER_KEY, WEBHOOK_SECRET, Fault,
)


def run(coro):
    return asyncio.run(coro)


def test_openai_delete_project_key(provider, retry):
    provider.openai_keys.add(("proj_1", "key_abc"))
    a = OpenAIAdapter(provider.url, ADMIN_KEY, retry)
    res = run(a.delete(Target("openai", "key_abc", "proj_1"), "rv_1"))
    assert res.ok and not res.already_done and res.status_code == 200 and res.request_id.startswith("req_")
    req = provider.requests[-1]
    assert req["method"] == "DELETE" and req["path"] == "/v1/organization/projects/proj_1/api_keys/key_abc"
    assert req["headers"]["Authorization"] == f"Bearer {ADMIN_KEY}" and req["headers"]["Idempotency-Key"] == "rv_1"
    # Already gone: 404 counts as done.
    again = run(a.delete(Target("openai", "key_abc", "proj_1"), "rv_1"))
    assert again.ok and again.already_done and again.status_code == 404
    # OpenAI cannot disable or re-enable; without a project id nothing is called.
    assert not run(a.disable(Target("openai", "k", "p"), "x")).ok
    n = len(provider.requests)
    assert "project id" in run(a.delete(Target("openai", "key_abc", None), "x")).error and len(provider.requests) == n


def test_openai_401_is_not_retried_and_scrubbed(provider, retry):
    a = OpenAIAdapter(provider.url, "sk-wrong-admin-key-0123456789abcdef", retry)
    res = run(a.delete(Target("openai", "key_abc", "proj_1"), "rv_1"))
    assert not res.ok and res.status_code == 401 and res.attempts == 1
    assert "sk-wrong" not in res.error and "<redacted>" in res.error and "invalid_request_error" in res.error


def test_path_injection_is_encoded(provider, retry):
    provider.openai_keys.add(("proj_1", "key_abc"))
    a = OpenAIAdapter(provider.url, ADMIN_KEY, retry)
    run(a.delete(Target("openai", "../../../key/block", "proj_1"), "rv_1"))
    assert provider.requests[-1]["path"] == "/v1/organization/projects/proj_1/api_keys/..%2F..%2F..%2Fkey%2Fblock"


def test_anthropic_disable_and_enable(provider, retry):
    provider.anthropic_keys["apikey_01"] = "active"
    a = AnthropicAdapter(provider.url, ANTHROPIC_ADMIN_KEY, "2023-06-01", retry)
    res = run(a.disable(Target("anthropic", "apikey_01"), "rv_2"))
    assert res.ok and provider.anthropic_keys["apikey_01"] == "inactive" and res.request_id.startswith("req_")
    h = provider.requests[-1]["headers"]
    assert h["x-api-key"] == ANTHROPIC_ADMIN_KEY and h["anthropic-version"] == "2023-06-01"
    assert run(a.enable(Target("anthropic", "apikey_01"), "rv_3")).ok and provider.anthropic_keys["apikey_01"] == "active"
    gone = run(a.disable(Target("anthropic", "apikey_missing"), "rv_4"))
    assert gone.ok and gone.already_done
    bad = run(AnthropicAdapter(provider.url, "sk-ant-admin01-wrong-000000000", "2023-06-01", retry).disable(Target("anthropic", "apikey_01"), "x"))
    assert not bad.ok and bad.status_code == 401 and "authentication_error" in bad.error


def test_429_retry_after_is_honoured(provider, retry, sleeps):
    provider.anthropic_keys["apikey_01"] = "active"
    provider.faults.append(Fault(429, {"Retry-After": "7"}, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    res = run(AnthropicAdapter(provider.url, ANTHROPIC_ADMIN_KEY, "2023-06-01", retry).disable(Target("anthropic", "apikey_01"), "rv"))
    assert res.ok and res.attempts == 2 and sleeps == [7.0]


def test_429_with_long_retry_after_gives_up(provider, retry, sleeps):
    provider.faults.append(Fault(429, {"Retry-After": "3600"}, {"error": {"type": "rate_limit_error", "message": "later"}}))
    provider.litellm_keys["tok_hash"] = False
    res = run(LiteLLMAdapter(provider.url, LITELLM_MASTER_KEY, retry).disable(Target("litellm", "tok_hash"), "rv"))
    assert not res.ok and res.status_code == 429 and "exceeds" in res.error and sleeps == []


def test_5xx_retried_then_exhausted(provider, retry, sleeps):
    provider.litellm_keys["tok_hash"] = False
    a = LiteLLMAdapter(provider.url, LITELLM_MASTER_KEY, retry)
    provider.faults.extend([Fault(502), Fault(503)])
    ok = run(a.disable(Target("litellm", "tok_hash"), "rv"))
    assert ok.ok and ok.attempts == 3 and provider.litellm_keys["tok_hash"] is True and len(sleeps) == 2
    provider.faults.extend([Fault(500)] * 3)
    bad = run(a.enable(Target("litellm", "tok_hash"), "rv"))
    assert not bad.ok and bad.status_code == 500 and bad.attempts == 3 and provider.litellm_keys["tok_hash"] is True
    assert run(a.enable(Target("litellm", "tok_hash"), "rv")).ok and provider.litellm_keys["tok_hash"] is False
    assert run(a.disable(Target("litellm", "unknown"), "rv")).already_done


def test_timeout(provider, sleeps):
    async def sleep(s):
        sleeps.append(s)

    retry = RetryPolicy(timeout_s=0.2, max_attempts=2, max_wait_s=1, sleep=sleep)
    provider.faults.extend([Fault(200, delay=0.6), Fault(200, delay=0.6)])
    res = run(LiteLLMAdapter(provider.url, LITELLM_MASTER_KEY, retry).disable(Target("litellm", "t"), "rv"))
    assert not res.ok and "timeout" in res.error and res.attempts == 2


def test_webhook_is_signed(provider, retry):
    a = WebhookAdapter(provider.url + "/hook", WEBHOOK_SECRET, retry)
    res = run(a.disable(Target("internal", "svc-key-1", "proj"), "rv_9"))
    assert res.ok, res.error
    assert provider.webhook_events == [{"action": "disable", "provider": "internal", "key_id": "svc-key-1", "project": "proj", "decision_id": "rv_9"}]
    forged = run(WebhookAdapter(provider.url + "/hook", "not-the-secret", retry).disable(Target("internal", "k"), "x"))
    assert not forged.ok and forged.status_code == 401


def _aws(moto_url, retry) -> AwsIamAdapter:
    return AwsIamAdapter(endpoint_url=moto_url, region="us-east-1", access_key_id=AWS_ADMIN_ID,
                         secret_access_key=AWS_ADMIN_SECRET, retry=retry)


def test_aws_access_key_deactivate_and_reactivate(iam, moto_url, retry):
    user = "svc-bedrock-adapter-test"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    a = _aws(moto_url, retry)
    res = run(a.disable(Target("bedrock", key), "rv"))
    assert res.ok and res.status_code == 200 and res.request_id
    status = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
    assert status[key] == "Inactive"
    assert run(a.enable(Target("bedrock", key), "rv")).ok
    assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"][0]["Status"] == "Active"
    gone = run(a.disable(Target("bedrock", "AKIA0000000000NOSUCH"), "rv"))
    assert gone.ok and gone.already_done
    temp = run(a.disable(Target("bedrock", "ASIA0000000000TEMP01"), "rv"))
    assert not temp.ok and "temporary" in temp.error


def test_aws_unreachable_endpoint_fails_cleanly(retry):
    a = AwsIamAdapter(endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key_id=AWS_ADMIN_ID,
                      secret_access_key=AWS_ADMIN_SECRET, retry=RetryPolicy(timeout_s=0.2, max_attempts=1))
    res = run(a.disable(Target("bedrock", "AKIA0000000000000001"), "rv"))
    assert not res.ok and res.error and AWS_ADMIN_SECRET not in res.error


def test_aws_bedrock_api_key_service_specific_credential(iam_creds_server, retry):
    iam_creds_server.credentials["ACCAEXAMPLE1234567890"] = ("bedrock-user", "Active")
    a = AwsIamAdapter(endpoint_url=iam_creds_server.url, region="us-east-1", access_key_id=AWS_ADMIN_ID,
                      secret_access_key=AWS_ADMIN_SECRET, retry=retry)
    res = run(a.disable(Target("bedrock", "ACCAEXAMPLE1234567890"), "rv"))
    assert res.ok and res.request_id and iam_creds_server.credentials["ACCAEXAMPLE1234567890"][1] == "Inactive"
    # The owner from the alert's principal ARN avoids the listing.
    assert run(a.enable(Target("bedrock", "ACCAEXAMPLE1234567890", None, {"principal": "arn:aws:iam::123456789012:user/bedrock-user"}), "rv")).ok
    assert iam_creds_server.credentials["ACCAEXAMPLE1234567890"][1] == "Active"
    assert run(a.disable(Target("bedrock", "ACCANOSUCHCREDENTIAL0"), "rv")).already_done


@pytest.mark.parametrize("secret", ALL_SECRETS)
def test_scrub_removes_every_configured_secret(secret):
    from keywatch.sinks.revocation.adapters import scrub

    assert secret not in scrub(f"error: {secret} was rejected", [secret])
