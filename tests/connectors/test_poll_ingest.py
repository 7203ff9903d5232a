"""Pollers against a real local HTTP server serving fixture pages; `keywatch ingest` end to end."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from keywatch.stream.connectors.poll import PollError, Poller

FIX = Path(__file__).parent / "fixtures"
NOW = 1748779200 + 2 * 86400  # two days after the fixtures' buckets
EMPTY = {"object": "page", "data": [], "has_more": False, "next_page": None}


class _Server:
    """Serves `routes[(path, page)]`; `fail_first` answers 429 (Retry-After: 0) once per path."""

    def __init__(self, routes: dict, fail_first: set[str] = frozenset()) -> None:
        self.routes, self.fail_first, self.seen = routes, set(fail_first), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                u = urlparse(self.path)
                q = parse_qs(u.query)
                outer.seen.append((u.path, q, dict(self.headers)))
                if u.path in outer.fail_first:
                    outer.fail_first.discard(u.path)
                    return self._send(429, {"error": "rate_limited"}, {"Retry-After": "0"})
                body = outer.routes.get((u.path, (q.get("page") or [None])[0]), EMPTY)
                self._send(200, body)

            def _send(self, code, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _load(name):
    return json.loads((FIX / name).read_text())


@pytest.fixture
def openai_server():
    p1 = _load("openai_usage_completions_p1.json")
    s = _Server({
        ("/v1/organization/usage/completions", None): p1,
        ("/v1/organization/usage/completions", p1["next_page"]): _load("openai_usage_completions_p2.json"),
        ("/v1/organization/costs", None): _load("openai_costs.json"),
    }, fail_first={"/v1/organization/usage/completions"})
    yield s
    s.close()


def test_openai_poll_paginates_retries_and_resumes(openai_server, make_settings) -> None:
    settings = make_settings(OPENAI_ADMIN_KEY="sk-admin-test-000000000000000000000", OPENAI_BASE_URL=openai_server.url)
    sleeps, got = [], []
    poller = Poller("openai", settings, sleep=sleeps.append, now=lambda: NOW)
    r = poller.poll_once(lambda ev, dead: got.append((ev, dead)))
    assert r.retries == 1 and sleeps == [0.0]  # the 429's Retry-After was honoured
    assert r.events == 3 + 1 + 2 and r.dead == 2 + 2  # both usage pages + costs
    comp = [q for p, q, _ in openai_server.seen if p.endswith("/completions")]
    assert [q.get("page") for q in comp] == [None, None, ["page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="]]
    assert comp[0]["group_by"] == ["api_key_id", "project_id", "model"] and comp[0]["bucket_width"] == ["1m"]
    headers = openai_server.seen[0][2]
    assert headers["Authorization"].startswith("Bearer sk-admin")
    cursor = json.loads(poller.cursor_path.read_text())
    assert cursor["completions"] == (NOW - 300) // 60 * 60 and cursor["costs"] == NOW // 86400 * 86400
    # Resume: the next poll starts at the saved cursor and re-reads nothing.
    openai_server.seen.clear()
    r2 = Poller("openai", settings, sleep=sleeps.append, now=lambda: NOW + 600).poll_once(lambda *a: None)
    comp2 = [q for p, q, _ in openai_server.seen if p.endswith("/completions")]
    assert comp2[0]["start_time"] == [str(cursor["completions"])]
    assert not any(p.endswith("/costs") for p, _, _ in openai_server.seen)  # that day is not over yet
    assert r2.windows["completions"][0] == cursor["completions"]


def test_anthropic_poll_and_errors(make_settings) -> None:
    s = _Server({("/v1/organizations/usage_report/messages", None): {**_load("anthropic_usage.json"), "has_more": False},
                 ("/v1/organizations/cost_report", None): _load("anthropic_cost.json")})
    try:
        settings = make_settings(ANTHROPIC_ADMIN_KEY="sk-ant-admin01-test", ANTHROPIC_BASE_URL=s.url, POLL_MAX_RETRIES="1")
        events = []
        r = Poller("anthropic", settings, sleep=lambda _: None, now=lambda: NOW).poll_once(lambda ev, d: events.extend(ev))
        assert r.events == 5 and {type(e).__name__ for e in events} == {"UsageEvent", "BillingEvent"}
        path, q, headers = s.seen[0]
        assert headers["x-api-key"] == "sk-ant-admin01-test" and headers["anthropic-version"] == "2023-06-01"
        assert q["group_by[]"] == ["api_key_id", "model", "workspace_id"] and q["starting_at"][0].endswith("Z")
    finally:
        s.close()
    with pytest.raises(PollError):
        Poller("anthropic", make_settings())  # no admin key
    dead = make_settings(ANTHROPIC_ADMIN_KEY="x", ANTHROPIC_BASE_URL="http://127.0.0.1:9", POLL_MAX_RETRIES="1",
                         DATA_DIR=str(settings.data_dir) + "-fresh")  # no cursor yet: it must call the API
    with pytest.raises(PollError):
        Poller("anthropic", dead, sleep=lambda _: None, now=lambda: NOW).poll_once(lambda *a: None)


def test_cli_ingest_replay_and_out(tmp_path, monkeypatch) -> None:
    from keywatch.cli import app
    from keywatch.settings import get_settings

    monkeypatch.setenv("KEYWATCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    runner = CliRunner()
    out = tmp_path / "events.jsonl"
    res = runner.invoke(app, ["ingest", str(FIX / "bedrock_invocation.jsonl"), str(FIX / "cloudtrail.json"),
                              "-f", "bedrock-invocation", "-f", "cloudtrail", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len({e["event_id"] for e in lines}) == len(lines) == 7  # 3 logs + 5 trail - 1 joined pair
    dead = (tmp_path / "events.jsonl.dead_letters.jsonl").read_text().splitlines()
    assert len(dead) == 3 and json.loads(dead[0])["reason"] == "normalise:no_key"
    alerts = tmp_path / "alerts.jsonl"
    res = runner.invoke(app, ["ingest", str(FIX / "litellm_spend.json"), "--format", "litellm",
                              "--replay", "--alerts-out", str(alerts)])
    assert res.exit_code == 0, res.output
    assert alerts.exists() and "dead letters" in res.output
    assert runner.invoke(app, ["ingest", str(tmp_path / "missing.json"), "-f", "litellm", "--out", str(out)]).exit_code == 1
    assert runner.invoke(app, ["ingest", str(out), "-f", "nope", "--out", str(out)]).exit_code == 2
    get_settings.cache_clear()
