"""AWS IAM adapter (boto3): deactivate access keys and Bedrock long-term API keys. Reversible.

- Access keys (``AKIA…``): `GetAccessKeyLastUsed` finds the owning user (without `UserName`,
  `UpdateAccessKey` would act on the *caller's* user), then `UpdateAccessKey Status=Inactive`.
- Bedrock long-term API keys are IAM service-specific credentials (``ACCA…``): the user comes
  from the alert's details (`user_name`, or an IAM user ARN in `principal`) or from
  `ListServiceSpecificCredentials AllUsers=true`; then `UpdateServiceSpecificCredential`.
- Temporary credentials (``ASIA…``) cannot be deactivated in IAM: the call is refused with an
  explanation (revoke the role's sessions instead), never silently "done".

boto3 is synchronous, so calls run in a thread; retries on throttling and 5xx are boto3's own
(standard mode, `max_attempts` from settings). `endpoint_url` points it at moto in tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from keywatch.sinks.revocation.adapters import CallResult, RetryPolicy, Target, scrub

BEDROCK_SERVICE = "bedrock.amazonaws.com"
_NOT_FOUND = {"NoSuchEntity", "NoSuchEntityException", "NotFoundException"}


class AwsIamAdapter:
    name = "aws_iam"
    supports_disable = True
    supports_delete = False  # deletion is never needed: an inactive key is useless to a thief

    def __init__(self, *, endpoint_url: str | None, region: str, access_key_id: str | None,
                 secret_access_key: str | None, retry: RetryPolicy) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._creds = (access_key_id, secret_access_key)
        self.retry = retry
        self._iam = None

    def _client(self):
        if self._iam is None:
            import boto3
            from botocore.config import Config

            cfg = Config(connect_timeout=self.retry.timeout_s, read_timeout=self.retry.timeout_s,
                         retries={"max_attempts": self.retry.max_attempts, "mode": "standard"})
            kw: dict[str, Any] = {"region_name": self.region, "config": cfg}
            if self.endpoint_url:
                kw["endpoint_url"] = self.endpoint_url
            if self._creds[0] and self._creds[1]:
                kw["aws_access_key_id"], kw["aws_secret_access_key"] = self._creds
            self._iam = boto3.session.Session().client("iam", **kw)
        return self._iam

    async def disable(self, t: Target, decision_id: str) -> CallResult:
        return await asyncio.to_thread(self._set_status, t, "Inactive")

    async def enable(self, t: Target, decision_id: str) -> CallResult:
        return await asyncio.to_thread(self._set_status, t, "Active")

    async def delete(self, t: Target, decision_id: str) -> CallResult:
        return CallResult(ok=False, attempts=0, error="aws_iam keys are deactivated, never deleted, by keywatch")

    def _set_status(self, t: Target, status: str) -> CallResult:
        key = t.key_id
        if key.startswith("ASIA"):
            return CallResult(ok=False, attempts=0, error=(
                "temporary STS credentials (ASIA…) cannot be deactivated in IAM; revoke the role's "
                "active sessions (deny policy on aws:TokenIssueTime) instead"))
        try:
            iam = self._client()
            if key.startswith("ACCA"):
                user = self._credential_owner(iam, t)
                if user is None:
                    return CallResult(ok=True, already_done=True, status_code=404, error="")
                resp = iam.update_service_specific_credential(UserName=user, ServiceSpecificCredentialId=key, Status=status)
            else:
                user = iam.get_access_key_last_used(AccessKeyId=key).get("UserName")
                if not user:  # the root user's keys have no user name; never touch those automatically
                    return CallResult(ok=False, attempts=1, error="access key has no IAM user (root?); not changed")
                resp = iam.update_access_key(UserName=user, AccessKeyId=key, Status=status)
        except Exception as exc:  # botocore's error classes are many; classify, never raise
            return self._failure(exc)
        meta = resp.get("ResponseMetadata", {})
        return CallResult(ok=True, status_code=int(meta.get("HTTPStatusCode", 200)), request_id=meta.get("RequestId", ""),
                          attempts=1 + int(meta.get("RetryAttempts", 0)))

    @staticmethod
    def _credential_owner(iam, t: Target) -> str | None:
        user = t.details.get("user_name")
        principal = str(t.details.get("principal") or "")
        if not user and ":user/" in principal:
            user = principal.rsplit("/", 1)[-1]
        if user:
            return str(user)
        kw: dict[str, Any] = {"AllUsers": True, "ServiceName": BEDROCK_SERVICE}
        while True:
            page = iam.list_service_specific_credentials(**kw)
            for cred in page.get("ServiceSpecificCredentials", []):
                if cred.get("ServiceSpecificCredentialId") == t.key_id:
                    return cred.get("UserName")
            if not page.get("IsTruncated") or not page.get("Marker"):
                return None
            kw["Marker"] = page["Marker"]

    def _failure(self, exc: Exception) -> CallResult:
        from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code = int(meta.get("HTTPStatusCode", 0) or 0)
            rid = meta.get("RequestId", "")
            attempts = 1 + int(meta.get("RetryAttempts", 0))
            if err.get("Code") in _NOT_FOUND or code == 404:
                return CallResult(ok=True, already_done=True, status_code=404, request_id=rid, attempts=attempts)
            msg = scrub(f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}", self._creds)
            return CallResult(ok=False, status_code=code, request_id=rid, attempts=attempts, error=msg)
        if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
            return CallResult(ok=False, attempts=self.retry.max_attempts, error=f"timeout after {self.retry.timeout_s:g} s")
        if isinstance(exc, EndpointConnectionError):
            return CallResult(ok=False, attempts=self.retry.max_attempts, error=scrub(str(exc), self._creds))
        return CallResult(ok=False, error=scrub(f"{type(exc).__name__}: {exc}", self._creds))
