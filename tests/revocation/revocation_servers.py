"""Local servers speaking the providers' documented key-management APIs, for revocation tests.

`ProviderServer` (one ThreadingHTTPServer on 127.0.0.1) serves:
- OpenAI Admin API: DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}
- Anthropic Admin API: POST /v1/organizations/api_keys/{api_key_id} {"status": ...}
- LiteLLM proxy: POST /key/block, POST /key/unblock {"key": ...}
- a signed webhook: POST /hook (HMAC-SHA256 over "timestamp.body")
with each API's auth headers and error shapes. `faults` injects the next responses (status,
headers, body, delay) to exercise 401/429/5xx/timeouts. `IamCredentialServer` speaks the IAM
query protocol for the two service-specific-credential actions moto does not implement.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

ADMIN_KEY = "sk-admin-TEST-abcdefghijklmnopqrstuvwxyz012345"
ANTHROPIC_ADMIN_KEY = "sk-ant-admin01-TESTsecretvalue-abcdefghijklmnop"
LITELLM_MASTER_KEY = "sk-litellm-master-TEST-0123456789abcdef"
WEBHOOK_SECRET = "whsec-TEST-0123456789abcdef0123456789"
AWS_ADMIN_ID = "AKIAKEYWATCHADMIN001"
AWS_ADMIN_SECRET = "kwTESTsecretAccessKey/0123456789abcdefXYZ"
ALL_SECRETS = (ADMIN_KEY, ANTHROPIC_ADMIN_KEY, LITELLM_MASTER_KEY, WEBHOOK_SECRET, AWS_ADMIN_SECRET)


@dataclass
class Fault:
    status: int = 500
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    delay: float = 0.0  # > client timeout: a timeout


class _Handler(BaseHTTPRequestHandler):
    server: "ProviderServer"

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def _reply(self, status: int, body: dict | None, headers: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        srv = self.server
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.requests.append({"method": method, "path": self.path, "headers": dict(self.headers), "body": raw})
            fault = srv.faults.popleft() if srv.faults else None
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            try:
                return self._reply(fault.status, fault.body, fault.headers)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                return None
        parts = [unquote(p) for p in self.path.split("/")]
        if method == "DELETE" and self.path.startswith("/v1/organization/projects/"):
            return self._openai(parts[4], parts[6])
        if method == "POST" and self.path.startswith("/v1/organizations/api_keys/"):
            return self._anthropic(parts[4], json.loads(raw or b"{}"))
        if self.path in ("/key/block", "/key/unblock"):
            return self._litellm(self.path.endswith("/block"), json.loads(raw or b"{}"))
        if self.path == "/hook":
            return self._webhook(raw)
        self._reply(404, {"error": {"message": f"unknown path {self.path}", "type": "invalid_request_error"}})

    def _openai(self, project: str, key_id: str) -> None:
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {ADMIN_KEY}":
            # OpenAI echoes (part of) the presented key: the adapter must scrub it.
            return self._reply(401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}.", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
        rid = {"x-request-id": "req_" + uuid.uuid4().hex[:12]}
        with self.server.lock:
            if (project, key_id) not in self.server.openai_keys:
                return self._reply(404, {"error": {"message": f"No such API key: {key_id}", "type": "invalid_request_error"}}, rid)
            self.server.openai_keys.discard((project, key_id))
        self._reply(200, {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}, rid)

    def _anthropic(self, key_id: str, body: dict) -> None:
        if self.headers.get("x-api-key") != ANTHROPIC_ADMIN_KEY or not self.headers.get("anthropic-version"):
            return self._reply(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        rid = {"request-id": "req_" + uuid.uuid4().hex[:12]}
        if body.get("status") not in ("active", "inactive", "archived"):
            return self._reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "status: invalid"}}, rid)
        with self.server.lock:
            if key_id not in self.server.anthropic_keys:
                return self._reply(404, {"type": "error", "error": {"type": "not_found_error", "message": "API key not found"}}, rid)
            self.server.anthropic_keys[key_id] = body["status"]
        self._reply(200, {"type": "api_key", "id": key_id, "name": "k", "status": body["status"], "workspace_id": None,
                          "created_at": "2026-01-01T00:00:00Z", "partial_key_hint": "sk-ant-api03-R2D...igAA",
                          "created_by": {"id": "user_01", "type": "user"}}, rid)

    def _litellm(self, block: bool, body: dict) -> None:
        if self.headers.get("Authorization") != f"Bearer {LITELLM_MASTER_KEY}":
            return self._reply(401, {"error": {"message": "Authentication Error, Invalid proxy server token passed.",
                                               "type": "auth_error", "code": "401"}})
        with self.server.lock:
            if body.get("key") not in self.server.litellm_keys:
                return self._reply(404, {"detail": {"error": f"Key not found: {body.get('key')}"}})
            self.server.litellm_keys[body["key"]] = block
        self._reply(200, {"token": body["key"], "blocked": block, "key_alias": None})

    def _webhook(self, raw: bytes) -> None:
        ts = self.headers.get("X-Keywatch-Timestamp", "")
        want = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("X-Keywatch-Signature", "")) or abs(time.time() - int(ts or 0)) > 300:
            return self._reply(401, {"error": "bad signature"})
        with self.server.lock:
            self.server.webhook_events.append(json.loads(raw))
        self._reply(200, {"ok": True})


class ProviderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.faults: deque[Fault] = deque()
        self.openai_keys: set[tuple[str, str]] = set()
        self.anthropic_keys: dict[str, str] = {}
        self.litellm_keys: dict[str, bool] = {}
        self.webhook_events: list[dict] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "ProviderServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def calls(self, prefix: str) -> list[dict]:
        return [r for r in self.requests if r["path"].startswith(prefix)]


class _IamHandler(BaseHTTPRequestHandler):
    server: "IamCredentialServer"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()).items()}
        action, rid = form.get("Action"), str(uuid.uuid4())
        ns = "https://iam.amazonaws.com/doc/2010-05-08/"
        creds = self.server.credentials
        if action == "ListServiceSpecificCredentials":
            members = "".join(
                f"<member><UserName>{u}</UserName><Status>{s}</Status><ServiceUserName>{u}-at-1</ServiceUserName>"
                f"<CreateDate>2026-01-01T00:00:00Z</CreateDate><ServiceSpecificCredentialId>{cid}</ServiceSpecificCredentialId>"
                f"<ServiceName>bedrock.amazonaws.com</ServiceName></member>" for cid, (u, s) in creds.items())
            body = (f'<ListServiceSpecificCredentialsResponse xmlns="{ns}"><ListServiceSpecificCredentialsResult>'
                    f"<ServiceSpecificCredentials>{members}</ServiceSpecificCredentials><IsTruncated>false</IsTruncated>"
                    f"</ListServiceSpecificCredentialsResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
                    f"</ListServiceSpecificCredentialsResponse>")
            return self._xml(200, body)
        if action == "UpdateServiceSpecificCredential":
            cid = form.get("ServiceSpecificCredentialId")
            if cid not in creds or creds[cid][0] != form.get("UserName"):
                return self._xml(404, f'<ErrorResponse xmlns="{ns}"><Error><Type>Sender</Type><Code>NoSuchEntity</Code>'
                                      f"<Message>No such credential {cid}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>")
            creds[cid] = (creds[cid][0], form["Status"])
            return self._xml(200, f'<UpdateServiceSpecificCredentialResponse xmlns="{ns}"><ResponseMetadata><RequestId>{rid}'
                                  f"</RequestId></ResponseMetadata></UpdateServiceSpecificCredentialResponse>")
        self._xml(400, f'<ErrorResponse xmlns="{ns}"><Error><Code>InvalidAction</Code><Message>{action}</Message></Error></ErrorResponse>')

    def _xml(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class IamCredentialServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _IamHandler)
        self.credentials: dict[str, tuple[str, str]] = {}  # id → (user, status)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def make_alert(key_id: str, *, kind: str = "key_theft", provider: str = "anthropic", project: str | None = "proj_a",
               severity: str = "critical", score: float = 0.97, alert_id: str | None = None, version: int = 1, **details):
    from keywatch.models.alerts import Alert

    ms = 1_795_622_400_000
    return Alert(
        alert_id=alert_id or f"kw_{uuid.uuid4().hex[:20]}", kind=kind, provider=provider, key_id=key_id, project=project,
        started_at="2026-11-25T16:00:00.000Z", detected_at="2026-11-25T16:05:00.000Z", severity=severity, score=score,
        reasons=["40 requests from 6 new IPs in 4 new countries"], cost_impact_usd=812.5, version=version,
        started_at_ms=ms, detected_at_ms=ms + 300_000, updated_at_ms=ms + 300_000, details=details,
    )
