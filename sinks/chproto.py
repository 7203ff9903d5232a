"""ClickHouse HTTP interface pieces for `keywatch db serve` (sinks/chserver.py): no I/O, no chDB.

What a request means: which URL parameters are settings, bound parameters or transport
options; where an ``INSERT … FORMAT x`` statement ends and its inline data begins; whether a
statement is read-only, a session statement (``SET``/``USE``) or several statements; request
and response compression; and ClickHouse's error text, so clickhouse-connect raises its
ordinary ``DatabaseError`` with the server's code.

>>> s = parse_statement(b"INSERT INTO `db`.`t` (`a`) FORMAT Native\\n\\x00\\x01")
>>> s.keyword, s.fmt, s.data_at
('INSERT', 'Native', 41)
>>> parse_statement(b"SELECT format FROM t FORMAT JSON").fmt
'JSON'
>>> parse_statement(b"SELECT 1; SELECT 2").multi, parse_statement(b"SELECT ';' ; -- done").multi
(True, False)
>>> split_params({"query": "q", "param_k": "v", "max_threads": "2", "database": "d"})
({'max_threads': '2'}, {'k': 'v'})
>>> error_text(60, "Table x does not exist")
'Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE)'
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

# URL parameters the HTTP layer consumes itself (ClickHouse's HTTPHandler and clickhouse-connect's
# transport settings). They are never applied to the engine with SET.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "readonly", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress", "cancel_http_readonly_queries_on_client_close",
    "http_wait_end_of_query", "http_response_buffer_size",
})
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
READ_ONLY = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "SET", "USE", "CHECK"})
ERROR_NAMES = {
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", 33: "CANNOT_READ_ALL_DATA", 48: "NOT_IMPLEMENTED",
    60: "UNKNOWN_TABLE", 62: "SYNTAX_ERROR", 81: "UNKNOWN_DATABASE", 115: "UNKNOWN_SETTING", 164: "READONLY",
    194: "REQUIRED_PASSWORD", 210: "NETWORK_ERROR", 516: "AUTHENTICATION_FAILED", 1001: "STD_EXCEPTION",
}
# ClickHouse answers some codes with a specific HTTP status; everything else is 500.
HTTP_STATUS = {516: 403, 194: 401, 164: 403, 62: 400, 27: 400, 60: 404, 81: 404, 48: 501, 210: 503}
CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8", "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent", "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8", "JSONCompact": "application/json; charset=UTF-8",
}
_CODE = re.compile(r"Code: (\d+)")
# Strings and quoted identifiers (backslash escapes; unterminated runs to the end), comments,
# words, punctuation that matters, then any other run. Unknown bytes are their own tokens.
_TOKEN = re.compile(rb"""
    (?P<str>'(?:[^'\\]|\\.)*'?) | (?P<qid>"(?:[^"\\]|\\.)*"?|`(?:[^`\\]|\\.)*`?)
  | (?P<com>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*) | (?P<p>[();.]) | (?P<other>[0-9]+|\S)
""", re.S | re.X)


class ChError(Exception):
    """A ClickHouse error: numeric code, message, HTTP status."""

    def __init__(self, code: int, message: str, verbatim: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.status = HTTP_STATUS.get(code, 500)
        self.verbatim = verbatim  # the message is already ClickHouse's full error text

    @classmethod
    def from_engine(cls, exc: BaseException) -> "ChError":
        """chDB's exception text already reads ``Code: N. DB::Exception: …``."""
        text = str(exc)
        at = text.find("Code: ")
        text = (text[at:] if at >= 0 else text).strip()
        m = _CODE.match(text)
        return cls(int(m.group(1)) if m else 1001, text, verbatim=bool(m))

    def body(self, version: str) -> bytes:
        text = str(self) if self.verbatim else error_text(self.code, str(self))
        return f"{text} (version {version})\n".encode()


def error_text(code: int, message: str) -> str:
    return f"Code: {code}. DB::Exception: {message.rstrip('.')}. ({ERROR_NAMES.get(code, 'UNKNOWN_EXCEPTION')})"


@dataclass(frozen=True)
class Statement:
    keyword: str = ""  # first keyword, upper case
    fmt: str | None = None  # the statement's own FORMAT clause
    data_at: int = -1  # INSERT … FORMAT x: where the inline data begins (-1: no inline data)
    format_at: int = -1  # INSERT … FORMAT x: where the FORMAT keyword begins
    settings_at: int = -1  # INSERT … SETTINGS …: where the SETTINGS keyword begins
    multi: bool = False  # more than one statement

    @property
    def read_only(self) -> bool:
        return self.keyword in READ_ONLY


def _data_start(sql: bytes, i: int) -> int:
    # ClickHouse: inline data starts after the first newline, or after the whitespace if none.
    while i < len(sql) and sql[i] in b" \t\r\f\v":
        i += 1
    return i + 1 if sql[i:i + 1] == b"\n" else i


class _Tokens:
    """Significant tokens (comments skipped) with one token of look-ahead."""

    def __init__(self, sql: bytes) -> None:
        self._it = (m for m in _TOKEN.finditer(sql) if m.lastgroup != "com")
        self._ahead: list = []

    def next(self):
        return self._ahead.pop() if self._ahead else next(self._it, None)

    def peek(self):
        if not self._ahead:
            self._ahead.append(next(self._it, None))
        return self._ahead[-1]


_NAME_FOLLOWS = frozenset({"INTO", "TABLE", "FUNCTION", "."})  # a table name, not a clause, comes next


def parse_statement(sql: bytes) -> Statement:
    """Read a statement's shape without parsing SQL; an INSERT's inline data is never scanned."""
    toks = _Tokens(sql)
    first = toks.next()
    if first is None:
        return Statement()
    keyword = first.group().decode("ascii").upper() if first.lastgroup == "word" else "?"
    depth, prev, fmt, after, settings_at, infile = 0, keyword, None, "", -1, False
    while (m := toks.next()) is not None:
        tok = m.group()
        word = tok.decode("ascii").upper() if m.lastgroup == "word" else ""
        if depth == 0 and tok == b";":
            return Statement(keyword, fmt, multi=toks.next() is not None)
        if after == "fmt":  # FORMAT x must end the statement; only SETTINGS may follow it
            after = "settings" if word == "SETTINGS" else ""
            fmt = fmt if after else None
        if depth == 0 and word == "FORMAT" and prev not in _NAME_FOLLOWS:
            name = toks.peek()
            if name is not None and name.lastgroup == "word":
                toks.next()
                fmt, after, prev = name.group().decode("ascii"), "fmt", "FORMAT x"
                if keyword == "INSERT" and not infile:
                    return Statement(keyword, fmt, _data_start(sql, name.end()), m.start(), settings_at)
                continue
        if depth == 0 and keyword == "INSERT":
            settings_at = m.start() if word == "SETTINGS" and settings_at < 0 else settings_at
            infile = infile or word == "INFILE"
        depth = max(0, depth + (tok == b"(") - (tok == b")"))
        prev = word or tok.decode("latin-1")
    return Statement(keyword, fmt)


def split_params(params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(settings to apply, bound query parameters without their ``param_`` prefix)."""
    settings, binds = {}, {}
    for k, v in params.items():
        if k.startswith("param_"):
            binds[k[6:]] = v
        elif k not in TRANSPORT_PARAMS:
            if not SETTING_NAME.match(k):
                raise ChError(115, f"Unknown setting '{k[:64]}'")
            settings[k] = v
    return settings, binds


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """multipart/form-data fields (clickhouse-connect sends long bound parameters this way)."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    out = {}
    for part in msg.iter_parts():
        if part.get_filename() is not None:
            raise ChError(48, "external data (file fields) is not supported by keywatch db serve")
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True).decode("utf-8")
    return out


def decompress(body: bytes, encoding: str | None) -> bytes:
    """A request body sent with ``Content-Encoding`` (lz4 frames may be concatenated)."""
    enc = (encoding or "").strip().lower()
    if not body or enc in ("", "identity"):
        return body
    try:
        if enc == "lz4":
            import lz4.frame

            out = []
            while body:
                d = lz4.frame.LZ4FrameDecompressor()
                out.append(d.decompress(body))
                if not d.eof:
                    raise ValueError("truncated lz4 frame")
                body = d.unused_data
            return b"".join(out)
        if enc == "zstd":
            return _zstd().decompress(body)
        if enc == "gzip":
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
    except Exception as exc:  # a broken body is the client's error, with a ClickHouse code
        raise ChError(27, f"Cannot decompress the request body ({enc}): {exc}") from None
    raise ChError(48, f"Unsupported Content-Encoding {enc!r}; supported: lz4, zstd, gzip, deflate")


def compress(body: bytes, accept: str | None) -> tuple[bytes, str | None]:
    """Compress a response in the client's preferred supported encoding (ClickHouse does this
    only with ``enable_http_compression=1``; the caller checks that)."""
    for enc in (e.split(";")[0].strip().lower() for e in (accept or "").split(",")):
        if enc == "lz4":
            import lz4.frame

            return lz4.frame.compress(body), "lz4"
        if enc == "zstd":
            return _zstd().compress(body), "zstd"
        if enc == "gzip":
            return gzip.compress(body, 3), "gzip"
        if enc == "deflate":
            return zlib.compress(body, 3), "deflate"
    return body, None


def _zstd():
    try:
        from compression import zstd  # Python ≥ 3.14
    except ImportError:
        from backports import zstd  # clickhouse-connect's dependency
    return zstd


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
