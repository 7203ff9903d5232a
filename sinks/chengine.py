"""The chDB side of `keywatch db serve` (sinks/chserver.py): a few connections, one request each.

A request is mapped onto a connection the way clickhouse-connect's chDB backend does it:
``INSERT … FORMAT x`` with inline data becomes ``INSERT … FROM INFILE '<tmp>' FORMAT x``; other
statements run as they are, with bound parameters passed to chDB. URL settings are applied with
``SET`` only where they differ from what the connection already has (and reset to ``DEFAULT``
when a request no longer sends them), so the usual case costs no extra statements.

Each request takes a free connection (chDB runs queries of one path's connections side by
side, as a server does): a dashboard's query or a worker's lookup does not wait for another
worker's insert, nor an insert for a long query. With every connection busy, a request waits
for the first to be free.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keywatch.sinks.chproto import ChError, parse_statement, quote_ident, quote_literal, split_params


@dataclass
class Reply:
    body: bytes = b""
    fmt: str | None = None  # X-ClickHouse-Format: set when the statement produced a result set
    summary: dict = field(default_factory=dict)


@dataclass
class _Conn:
    """One chDB connection and its session state (each connection has its own)."""

    conn: Any
    database: str = "default"  # the connection's current database
    applied: dict[str, str] = field(default_factory=dict)  # settings SET on it by earlier requests


class ChdbEngine:
    """`connections` chDB connections on one path, each used by one request at a time."""

    def __init__(self, path: Path, connections: int = 4) -> None:
        import chdb

        self.path = Path(path)
        self.conns = [_Conn(chdb.connect(str(self.path))) for _ in range(max(1, connections))]
        self.free: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        for c in self.conns:
            self.free.put(c)
        self.close_lock = threading.Lock()
        self.tmp = Path(tempfile.mkdtemp(prefix="keywatch-chserver-"))
        self.closed = False
        first = self.conns[0].conn
        version, self.timezone = first.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        self.version = version

    def execute(self, sql: bytes, params: dict[str, str], readonly: bool = False) -> Reply:
        stmt = parse_statement(sql)
        if stmt.multi:
            raise ChError(62, "Syntax error: Multi-statements are not allowed")
        if not stmt.keyword:
            raise ChError(62, "Empty query")
        if (readonly or params.get("readonly", "0") not in ("", "0")) and not stmt.read_only:
            raise ChError(164, "Cannot execute query in readonly mode (a GET request or readonly=1)")
        if stmt.keyword in ("SET", "USE"):
            return Reply()  # no session: a SET or USE lasts only for its own request
        settings, binds = split_params(params)
        infile = None
        if stmt.data_at >= 0:  # INSERT … FORMAT x + data: the data goes through a file, as in chdb_backend
            infile = self.tmp / f"{uuid.uuid4().hex}.data"
            infile.write_bytes(memoryview(sql)[stmt.data_at:])
            cut = stmt.settings_at if stmt.settings_at >= 0 else stmt.format_at
            sql = (sql[:cut] + f" FROM INFILE {quote_literal(str(infile))} ".encode() + sql[cut:stmt.format_at]
                   + f"FORMAT {stmt.fmt}".encode())
        default = params.get("default_format") or "TabSeparated"
        # Without a FORMAT clause: run WithNames, so a result set (even empty) is told apart
        # from a statement without one (clickhouse-connect's command() needs that).
        names = stmt.fmt is None and infile is None and default in ("TabSeparated", "TSV")
        c = self.free.get()
        try:
            if self.closed:
                raise ChError(210, "the server is shutting down")
            self._use(c, params.get("database") or "default")
            self._apply(c, settings)
            res = self._query(c, sql, "TabSeparatedWithNames" if names else default, binds)
            body = res.bytes() or b""
            summary = _summary(res)
        finally:
            self.free.put(c)
            if infile is not None:
                infile.unlink(missing_ok=True)
        if infile is not None:
            return Reply(b"", None, summary)
        if names:
            nl = body.find(b"\n")
            return Reply(body[nl + 1:], "TabSeparated", summary) if body else Reply(b"", None, summary)
        return Reply(body, stmt.fmt or (default if body else None), summary)

    @staticmethod
    def _query(c: _Conn, sql, fmt: str, binds: dict | None = None):
        try:
            return c.conn.query(sql, fmt, params=binds or {})
        except Exception as exc:
            raise ChError.from_engine(exc) from None

    def _use(self, c: _Conn, database: str) -> None:
        if database != c.database:
            self._query(c, f"USE {quote_ident(database)}", "TabSeparated")
            c.database = database

    def _apply(self, c: _Conn, settings: dict[str, str]) -> None:
        """Make the connection's settings equal this request's (only the differences are SET)."""
        for name in [n for n in c.applied if n not in settings]:
            self._query(c, f"SET {name} = DEFAULT", "TabSeparated")
            del c.applied[name]
        for name, value in settings.items():
            if c.applied.get(name) != value:
                c.applied.pop(name, None)
                self._query(c, f"SET {name} = {quote_literal(value)}", "TabSeparated")
                c.applied[name] = value

    def close(self) -> None:
        """Wait for the running queries, then close chDB (it flushes) and remove temporary files."""
        with self.close_lock:
            if self.closed:
                return
            self.closed = True
            held = [self.free.get() for _ in self.conns]  # each one free: no query runs
            for c in held:
                c.conn.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            for c in held:  # a request still waiting gets one, sees `closed` and fails cleanly
                self.free.put(c)


def _summary(res) -> dict[str, str]:
    out = {}
    for key, fn in (("read_rows", "rows_read"), ("read_bytes", "bytes_read"), ("written_rows", "rows_written"),
                    ("written_bytes", "bytes_written")):
        try:
            out[key] = str(int(getattr(res, fn)()))
        except Exception:  # older chDB: no such statistic
            out[key] = "0"
    try:
        out["elapsed_ns"] = str(int(res.elapsed() * 1e9))
    except Exception:
        pass
    return out
