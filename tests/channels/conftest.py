"""Real local servers for the channel tests: a scripted HTTP server and aiosmtpd."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class HttpServer:
    """Records every request; answers from per-path scripts [(status, headers, delay_s)], then 200."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str | None, list[tuple[int, dict, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, *statuses, headers=None, delay=0.0, path=None):
        """Queue answers for requests to `path` (None: any path without its own queue)."""
        self.scripts.setdefault(path, []).extend((s, headers or {}, delay) for s in statuses)

    def next_answer(self, path: str) -> tuple[int, dict, float]:
        for key in (path, None):
            if self.scripts.get(key):
                return self.scripts[key].pop(0)
        return (200, {}, 0.0)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        end = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < end:
            time.sleep(0.01)
        return self.requests


@pytest.fixture
def http_server():
    state = HttpServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, delay = state.next_answer(self.path)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    state.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield state
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def smtp_server():
    """aiosmtpd on 127.0.0.1; yields (host, port, messages) with messages as raw bytes."""
    from aiosmtpd.controller import Controller

    messages: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            messages.append(envelope.original_content or envelope.content)
            return "250 OK"

    import socket

    with socket.socket() as s:  # a free port (the Controller connects to itself to start)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    yield ctl.hostname, ctl.port, messages
    ctl.stop()
