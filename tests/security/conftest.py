"""Fixtures for the security tests: hostile input, poisoned telemetry, secrets, signatures.

Fuzzing is bounded in CI. For a longer run on demand, set ``KEYWATCH_FUZZ_EXAMPLES`` (examples
per property), e.g. ``KEYWATCH_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/security -k fuzz``.
The local provider servers are the revocation tests' (tests/revocation/revocation_servers.py).
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "revocation"))


class _Capture(BaseHTTPRequestHandler):
    def log_message(self, *a) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.got.append((dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver():
    """A local HTTP server that records each POST (headers, body) in `.got`: the channels' and
    webhooks' receiving end."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    srv.got = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
