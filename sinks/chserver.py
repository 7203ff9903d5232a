"""`keywatch db serve`: the embedded chDB database behind ClickHouse's HTTP interface.

chDB allows one process per data path. This server owns the path and speaks the part of
ClickHouse's HTTP protocol that clickhouse-connect uses, so several keywatch processes (workers of
one consumer group, CLI commands) share one embedded database through an ordinary
``KEYWATCH_CLICKHOUSE_DSN=http://127.0.0.1:8123``::

    keywatch db serve --port 8123 &
    KEYWATCH_CLICKHOUSE_DSN=http://127.0.0.1:8123 keywatch worker

Requests map onto a chDB connection the way clickhouse-connect's own chDB backend does
(``query`` parameter and/or POST body; ``INSERT … FORMAT x`` data goes through a temporary file
and ``INSERT … FROM INFILE``; ``param_*`` are bound parameters; other URL parameters are
settings, applied with ``SET`` and reset when a later request does not send them; ``database``
picks the current database). Responses carry the ``X-ClickHouse-*`` headers the client reads;
errors are ClickHouse's ``Code: N. DB::Exception: …`` with ``X-ClickHouse-Exception-Code``.
Request bodies may be lz4/zstd/gzip/deflate compressed; responses are compressed when the
client sends ``enable_http_compression=1``. Requests run side by side on
``KEYWATCH_CHSERVER_CONNECTIONS`` chDB connections (sinks/chengine.py).

Not kept: sessions (``SET``/``USE`` statements are accepted and have no lasting effect, as without
a session), temporary tables, external data, progress headers. With
``KEYWATCH_CHSERVER_PASSWORD`` set every request must carry the user and password (HTTP basic
auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or ``user``/``password`` parameters), compared
in constant time. SIGTERM/SIGINT stop it cleanly: running queries finish, chDB is closed.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, urlsplit

from keywatch.sinks.chengine import ChdbEngine
from keywatch.procs import die_with_parent, stop_process
from keywatch.sinks.chproto import CONTENT_TYPES, ChError, compress, decompress, parse_form

log = logging.getLogger("keywatch.chserver")
MAX_BODY = 1 << 30  # one request body at most (bytes as sent)


class Auth:
    """Basic auth / X-ClickHouse-User+Key / user+password parameters, checked in constant time."""

    def __init__(self, user: str, password: str | None) -> None:
        self.user, self.password = user, password

    def check(self, headers, params: dict[str, str]) -> None:
        if self.password is None:
            return
        user, password = params.get("user", ""), params.get("password", "")
        if headers.get("X-ClickHouse-User") is not None:
            user, password = headers.get("X-ClickHouse-User", ""), headers.get("X-ClickHouse-Key", "")
        scheme, _, cred = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except Exception:
                user, password = "", ""
        ok = hmac.compare_digest(user.encode(), self.user.encode())
        ok = hmac.compare_digest(password.encode(), self.password.encode()) and ok
        if not ok:
            raise ChError(516, f"{user[:64] or 'default'}: Authentication failed: password is incorrect, "
                               "or there is no user with such name")


class _Truncated(Exception):
    """The request body ended early (the client went away)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    disable_nagle_algorithm = True
    server_version = "keywatch-chserver"
    sys_version = ""
    timeout = 3600  # an idle keep-alive connection is closed after this
    server: "ChServer"

    def do_GET(self) -> None:  # noqa: N802
        self._serve(readonly=True)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(readonly=False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self, readonly: bool) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        started = time.perf_counter()
        try:
            body = self._read_body()
            if url.path in ("/ping", "/replicas_status") or (url.path in ("/", "") and "query" not in params and not body
                                                             and readonly):
                return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            if url.path not in ("/", ""):
                raise ChError(48, f"There is no handle {url.path[:200]}")
            self.server.auth.check(self.headers, params)
            ctype = self.headers.get("Content-Type") or ""
            if ctype.startswith("multipart/form-data"):
                params.update(parse_form(ctype, body))
                body = b""
            if params.get("decompress", "0") not in ("", "0"):
                raise ChError(48, "ClickHouse-compressed bodies (decompress=1) are not supported; use Content-Encoding")
            body = decompress(body, self.headers.get("Content-Encoding"))
            query = params.get("query", "").encode()
            sql = query + b"\n" + body if query and body else query or body
            reply = self.server.engine.execute(sql, params, readonly)
        except _Truncated:
            log.warning("a client closed the connection in the middle of a request; nothing was executed")
            self.close_connection = True
            return
        except ChError as exc:
            return self._error(exc, query_id)
        except Exception as exc:  # a bug here must still answer like ClickHouse
            log.exception("request failed")
            return self._error(ChError(1001, f"{type(exc).__name__}: {exc}"), query_id)
        reply.summary["elapsed_ns"] = reply.summary.get("elapsed_ns") or str(int((time.perf_counter() - started) * 1e9))
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Summary": json.dumps(reply.summary),
                   "X-ClickHouse-Timezone": params.get("session_timezone") or self.server.engine.timezone,
                   "Content-Type": CONTENT_TYPES.get(reply.fmt or "", "application/octet-stream" if reply.fmt
                                                     else "text/plain; charset=UTF-8")}
        if reply.fmt:
            headers["X-ClickHouse-Format"] = reply.fmt
        payload, enc = reply.body, None
        if reply.body and params.get("enable_http_compression") in ("1", "true"):
            payload, enc = compress(reply.body, self.headers.get("Accept-Encoding"))
        if enc:
            headers["Content-Encoding"] = enc
        self._send(200, payload, headers)

    def _read_body(self) -> bytes:
        """The whole request body. A client that goes away mid-body (killed) raises `_Truncated`:
        a partial INSERT must never be executed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise _Truncated()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (t := self.rfile.readline(65536)) not in (b"\r\n", b"\n"):
                        if not t:
                            raise _Truncated()  # trailers, then an empty line
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise ChError(27, "request body too large")
                parts.append(self.rfile.read(size))
                if len(parts[-1]) < size or self.rfile.readline(8) not in (b"\r\n", b"\n"):
                    raise _Truncated()
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ChError(27, "request body too large")
        body = self.rfile.read(n) if n > 0 else b""
        if len(body) < n:
            raise _Truncated()
        return body

    def _error(self, exc: ChError, query_id: str) -> None:
        log.debug("query %s failed: %s", query_id, exc)
        self._send(exc.status, exc.body(self.server.engine.version),
                   {"X-ClickHouse-Exception-Code": str(exc.code), "X-ClickHouse-Query-Id": query_id,
                    "Content-Type": "text/plain; charset=UTF-8"})

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class ChServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: ChdbEngine, auth: Auth) -> None:
        self.engine, self.auth = engine, auth
        super().__init__(address, Handler)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client went away (killed, timed out)
            log.debug("connection from %s lost", client_address)
        else:
            log.exception("error while serving %s", client_address)


def serve(settings, host: str | None = None, port: int | None = None, path: Path | None = None,
          ready=print) -> None:
    """Serve until SIGTERM/SIGINT. Defaults: the settings' host/port, the embedded chDB path."""
    log.setLevel(settings.log_level)
    path = Path(path) if path is not None else settings.data_dir / "chdb"
    host = host or settings.chserver_host
    port = settings.chserver_port if port is None else port
    password = settings.secret("chserver_password")
    if password is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("keywatch db serve listens on %s without a password (set KEYWATCH_CHSERVER_PASSWORD)", host)
    path.mkdir(parents=True, exist_ok=True)
    try:
        engine = ChdbEngine(path, settings.chserver_connections)
    except Exception as exc:  # most often: another process (an embedded worker) holds the path
        raise SystemExit(f"keywatch db serve: cannot open chDB at {path} (is another process using it?): {exc}") from None
    try:
        server = ChServer((host, port), engine, Auth(settings.chserver_user, password))
    except BaseException:
        engine.close()
        raise

    def stop(signum, frame) -> None:  # noqa: ARG001
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        ready(f"keywatch db serve: listening on http://{host}:{server.server_address[1]} "
              f"(chDB {engine.version} at {path})", flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
        for s, h in old.items():
            signal.signal(s, h)


class ServerProcess:
    """`keywatch db serve` as a child process on a free port (tests, drills, several local workers).

    ``with ServerProcess(path, log_file=log) as srv: … srv.dsn …`` — stopped with SIGTERM at exit.
    """

    def __init__(self, path: Path, *, env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                 port: int = 0, log_file: Path | None = None) -> None:
        self.path, self.host, self.port = Path(path), host, port
        self.env = dict(os.environ if env is None else env)
        self.log_file = Path(log_file) if log_file is not None else self.path.with_name(self.path.name + ".serve.log")
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        self.log_file.write_bytes(b"")
        cmd = [sys.executable, "-m", "keywatch.cli", "db", "serve", "--host", self.host, "--port", str(self.port),
               "--path", str(self.path)]
        with open(self.log_file, "ab") as out:
            # Own session, as the broker: a terminal's Ctrl-C must not stop it before its clients.
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://\S+?:(\d+) ", self.log_file.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"keywatch db serve did not start: {self.log_file.read_text(errors='replace')[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop it (SIGTERM: clean shutdown) and return its exit code."""
        return stop_process(self.proc, sig, timeout) if self.proc is not None else 0

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
