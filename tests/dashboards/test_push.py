"""`keywatch dashboards push` against a small real HTTP server speaking Grafana's folder/dashboard API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from keywatch.dashboards.build import load_all
from keywatch.dashboards.push import push


class FakeGrafana(BaseHTTPRequestHandler):
    """Implements GET/POST /api/folders[/uid] and POST /api/dashboards/db; records requests."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self, body=None):
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization"), body))

    def do_GET(self):
        self._record()
        if self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.server.folders:
                return self._send(200, {"uid": uid, "title": self.server.folders[uid]})
            return self._send(404, {"message": "folder not found"})
        self._send(404, {"message": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._record(body)
        if self.path == "/api/folders":
            self.server.folders[body["uid"]] = body["title"]
            return self._send(200, {"uid": body["uid"], "title": body["title"], "id": 1})
        if self.path == "/api/dashboards/db":
            d = body["dashboard"]
            if not body.get("overwrite") and d["uid"] in self.server.dashboards:
                return self._send(412, {"message": "version-mismatch"})
            version = self.server.dashboards.get(d["uid"], 0) + 1
            self.server.dashboards[d["uid"]] = version
            return self._send(200, {"uid": d["uid"], "status": "success", "version": version, "url": f"/d/{d['uid']}/x"})
        self._send(404, {"message": "not found"})


@pytest.fixture
def grafana():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    server.requests, server.folders, server.dashboards = [], {}, {}
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def test_push_is_idempotent_by_uid(grafana):
    url = f"http://127.0.0.1:{grafana.server_address[1]}"
    first = push(url, "glsa_test_token")
    second = push(url, "glsa_test_token")
    uids = [d["uid"] for d in load_all()]
    assert [p.uid for p in first] == [p.uid for p in second] == uids
    assert sorted(grafana.dashboards) == sorted(uids) and all(v == 2 for v in grafana.dashboards.values())
    folder_posts = [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")]
    assert len(folder_posts) == 1 and folder_posts[0][3] == {"title": "keywatch", "uid": "keywatch"}
    dash_posts = [r for r in grafana.requests if r[1] == "/api/dashboards/db"]
    assert len(dash_posts) == 6
    for _, _, auth, body in dash_posts:
        assert auth == "Bearer glsa_test_token"
        assert body["overwrite"] is True and body["folderUid"] == "keywatch"
        assert body["dashboard"]["id"] is None and body["dashboard"]["panels"]


def test_cli_push_uses_settings(grafana, monkeypatch):
    from keywatch.cli import app
    from keywatch.settings import get_settings

    monkeypatch.setenv("KEYWATCH_GRAFANA_URL", f"http://127.0.0.1:{grafana.server_address[1]}")
    monkeypatch.setenv("KEYWATCH_GRAFANA_TOKEN", "tok-123")
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["dashboards", "push"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert len(grafana.dashboards) == 3
    assert "tok-123" not in res.output
    assert {r[2] for r in grafana.requests} == {"Bearer tok-123"}
