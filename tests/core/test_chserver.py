"""`keywatch db serve`: the embedded chDB behind ClickHouse's HTTP interface (sinks/chserver.py).

The server runs as a child process (`ServerProcess`) over a throwaway chDB path — this pytest
process may already hold another chDB path — and is used through clickhouse-connect's ordinary
HTTP client, the keywatch CLI and the worker's sink, exactly as a ClickHouse server would be.
"""

from __future__ import annotations

import datetime as dt
import doctest
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from keywatch.settings import Settings
from keywatch.sinks import chproto
from keywatch.sinks.chproto import compress as compress_body, parse_statement
from keywatch.sinks.chserver import ServerProcess

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWATCH_")}
    env.update({f"KEYWATCH_{k.upper()}": str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("chserver")
    with ServerProcess(d / "chdb", env=_env(DATA_DIR=d), log_file=d / "serve.log") as srv:
        yield srv


def _client(srv: ServerProcess, **kw):
    return clickhouse_connect.get_client(host=srv.host, port=srv.port, **kw)


TABLE = """CREATE TABLE {t} (s String, lc LowCardinality(String), ts DateTime64(3, 'UTC'), f Float64, u UInt64,
  i Int32, a Array(String), ns Nullable(String), nts Nullable(DateTime64(3, 'UTC')), m Map(String, UInt64))
  ENGINE = MergeTree ORDER BY s"""
ROWS = [
    ["a", "x", dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), 1.5, 2**64 - 1, -7, ["p", "q'\t"], None, None, {"k": 1}],
    ["b", "y", dt.datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), -0.25, 0, 5, [], "n\n", dt.datetime(2026, 1, 1, tzinfo=UTC), {}],
]
# clickhouse-connect returns UTC times as naive datetimes (the server's zone is UTC)
EXPECTED = [tuple(v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v for v in r) for r in ROWS]


@pytest.mark.parametrize("sql, shape", [
    (b"SELECT format FROM t", ("SELECT", None, -1, False)),  # a column named format
    (b"SELECT a FROM t FORMAT JSON SETTINGS max_threads = 1", ("SELECT", "JSON", -1, False)),
    (b"SELECT 1 SETTINGS max_threads = 1\n FORMAT Native", ("SELECT", "Native", -1, False)),
    (b"SELECT format('{}', 1)", ("SELECT", None, -1, False)),
    (b"INSERT INTO format FORMAT TSV\nx\t1", ("INSERT", "TSV", 30, False)),  # a table named format
    (b"INSERT INTO t SETTINGS a = 1 FORMAT CSV 1,2", ("INSERT", "CSV", 40, False)),
    (b"INSERT INTO t VALUES (1, ';'), (2)", ("INSERT", None, -1, False)),
    (b"INSERT INTO t VALUES (1); DROP TABLE t", ("INSERT", None, -1, True)),
    (b"INSERT INTO t FROM INFILE 'f' FORMAT CSV", ("INSERT", "CSV", -1, False)),  # the client's own file
    (b"  /* c */ select 1 -- ;x", ("SELECT", None, -1, False)),
    (b"SHOW TABLES FORMAT JSON;", ("SHOW", "JSON", -1, False)),
])
def test_statement_shapes(sql, shape):
    st = parse_statement(sql)
    assert (st.keyword, st.fmt, st.data_at, st.multi) == shape


def test_protocol_examples():
    assert doctest.testmod(chproto).failed == 0


def test_types_round_trip_bound_parameters_and_errors(server):
    c = _client(server)
    assert c.server_version and c.command("SELECT 1") == 1
    c.command("DROP TABLE IF EXISTS types")
    assert c.command(TABLE.format(t="types")) is not None
    assert c.insert("types", ROWS[:1]).written_rows == 1
    cols = [list(col) for col in zip(*ROWS[1:])]
    c.insert("types", cols, column_names=["s", "lc", "ts", "f", "u", "i", "a", "ns", "nts", "m"], column_oriented=True)
    assert c.query("SELECT * FROM types ORDER BY s").result_rows == EXPECTED
    # server-side {name:Type} parameters, client-side %(name)s ones, and a long one (form encoded)
    q = "SELECT s FROM types WHERE lc = {v:String} AND u > {n:UInt64}"
    assert c.query(q, parameters={"v": "x", "n": 5}).result_rows == [("a",)]
    assert c.query("SELECT s FROM types WHERE ns = %(v)s", parameters={"v": "n\n"}).result_rows == [("b",)]
    long = "z" * 20000
    assert c.query("SELECT length({v:String})", parameters={"v": long}).result_rows == [(20000,)]
    form = _client(server, form_encode_query_params=True)  # multipart/form-data requests
    assert form.query("SELECT {v:String}", parameters={"v": "f"}).result_rows == [("f",)]
    df = c.query_df("SELECT s, f FROM types ORDER BY s")
    assert list(df["s"]) == ["a", "b"] and list(df["f"]) == [1.5, -0.25]
    assert c.command("SELECT count() FROM types WHERE 0") == 0
    assert c.command("SELECT s FROM types WHERE 0") == ""  # a result set, although empty
    with pytest.raises(DatabaseError) as err:
        c.query("SELECT * FROM no_such_table")
    assert err.value.code == 60 and "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(DatabaseError) as err:
        c.command("SELEC 1")
    assert err.value.code == 62
    with pytest.raises(DatabaseError) as err:  # ClickHouse's HTTP interface refuses these too
        c.command("SELECT 1; DROP TABLE types")
    assert err.value.code == 62 and c.command("EXISTS TABLE types") == 1


@pytest.mark.parametrize("compress", [False, "lz4", "zstd", "gzip"])
def test_compressed_requests_and_responses(server, compress):
    c = _client(server, compress=compress)
    t = f"comp_{compress or 'none'}"
    c.command(f"DROP TABLE IF EXISTS {t}")
    c.command(TABLE.format(t=t))
    c.insert(t, ROWS * 300)
    assert c.query(f"SELECT * FROM {t} ORDER BY s LIMIT 1").result_rows == EXPECTED[:1]
    assert c.query(f"SELECT count() FROM {t}").result_rows == [(600,)]
    c.raw_insert(t, ["s", "u"], "c,1\nd,2\n", fmt="CSV")
    data, enc = compress_body(b"e\t3\n", compress or "")  # raw_insert sends the data as it is given
    c.raw_insert(t, ["s", "u"], data, fmt="TabSeparated", compression=enc)
    assert c.raw_query(f"SELECT s, u FROM {t} WHERE s > 'b' ORDER BY s", fmt="TabSeparated") == b"c\t1\nd\t2\ne\t3\n"
    with pytest.raises(DatabaseError) as err:  # a body that is not what its Content-Encoding says
        c.raw_insert(t, ["s", "u"], b"f\t4\n", fmt="TabSeparated", compression="lz4")
    assert err.value.code == 27


def test_settings_are_per_request_and_sessions_are_not_kept(server):
    c = _client(server)
    get = "SELECT getSetting('max_threads')"
    default = c.command(get)
    assert c.query(get, settings={"max_threads": 3}).result_rows == [(3,)]
    assert c.command(get) == default  # not left behind for the next request
    c.command("SET max_threads = 2")  # without a session a SET lasts for its own request only
    assert c.command(get) == default
    with pytest.raises(DatabaseError) as err:
        c.query("SELECT 1", settings={"no_such_setting": 1})
    assert err.value.code == 115
    base = f"http://{server.host}:{server.port}"
    assert httpx.get(f"{base}/ping").text == "Ok.\n"
    assert httpx.get(base, params={"query": "SELECT 1 + 1"}).text == "2\n"
    r = httpx.get(base, params={"query": "CREATE TABLE ro (a String) ENGINE = Memory"})  # GET is read-only
    assert r.status_code == 403 and r.headers["X-ClickHouse-Exception-Code"] == "164"
    r = httpx.post(base, params={"query": "SELECT 1 FORMAT JSONEachRow", "database": "system"}, content=b"")
    assert r.json() == {"1": 1} and r.headers["X-ClickHouse-Format"] == "JSONEachRow"


def _insert_during_a_long_query(srv: ServerProcess, table: str) -> bool:
    """Start a 2-second query, insert and read from a second client: still running after?"""
    slow, fast = _client(srv), _client(srv)
    fast.command(f"CREATE TABLE IF NOT EXISTS {table} (a UInt64) ENGINE = MergeTree ORDER BY a")
    long_query = threading.Thread(target=slow.command, args=("SELECT sleep(2)",))
    long_query.start()
    time.sleep(0.4)  # the long query is running
    fast.insert(table, [[1], [2]])
    assert fast.command(f"SELECT count() FROM {table}") == 2
    running = long_query.is_alive()
    long_query.join()
    return running


def test_requests_run_side_by_side(server, tmp_path):
    # An insert and a read are done while another client's long query runs (a dashboard's slow
    # query does not hold up the workers' writes, nor a write a worker's lookup) ...
    assert _insert_during_a_long_query(server, "side")
    # ... unless the server has one connection: then each request waits for the one before.
    with ServerProcess(tmp_path / "chdb", env=_env(DATA_DIR=tmp_path, CHSERVER_CONNECTIONS=1), log_file=tmp_path / "s.log") as one:
        assert not _insert_during_a_long_query(one, "side")


def test_many_clients_at_once_lose_nothing(server):
    # Writers and readers on all connections at once (more clients than connections): every
    # row lands once, every read sees a whole number of inserts, no request fails.
    setup = _client(server)
    setup.command("CREATE TABLE IF NOT EXISTS busy (w UInt8, i UInt32) ENGINE = MergeTree ORDER BY (w, i)")
    errors, seen = [], []

    def writer(w: int) -> None:
        c = _client(server)
        try:
            for b in range(10):
                c.insert("busy", [[w, b * 500 + i] for i in range(500)], column_names=["w", "i"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def reader() -> None:
        c = _client(server)
        try:
            for _ in range(20):
                seen.append(c.command("SELECT count() FROM busy"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert setup.query("SELECT count(), uniqExact(w, i) FROM busy").result_rows == [(30_000, 30_000)]
    assert seen and all(n % 500 == 0 for n in seen)  # an insert is seen whole or not at all


def test_a_request_cut_short_is_not_executed(server):
    c = _client(server)
    c.command("CREATE TABLE IF NOT EXISTS cut (a String) ENGINE = MergeTree ORDER BY a")
    body = b"INSERT INTO cut FORMAT TabSeparated\nx\ny\n"
    for head, payload in ((f"Content-Length: {len(body) + 10}", body),  # a client killed mid-request
                          ("Transfer-Encoding: chunked", f"{len(body):x}\r\n".encode() + body + b"\r\n")):  # no last chunk
        with socket.create_connection((server.host, server.port), timeout=30) as s:
            s.sendall(f"POST / HTTP/1.1\r\nHost: t\r\n{head}\r\n\r\n".encode() + payload)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""  # closed, nothing answered, nothing run
    assert c.command("SELECT count() FROM cut") == 0


def test_migrate_sink_and_snapshots_through_the_server(server, tmp_path):
    from keywatch.models.registry import build_core
    from keywatch.simulate import SimConfig, generate
    from keywatch.sinks.clickhouse import ClickHouseSink, connect
    from keywatch.stream.decode import EventDecoder
    from keywatch.stream.state import StreamState

    env = _env(DATA_DIR=tmp_path, CLICKHOUSE_DSN=server.dsn, CLICKHOUSE_DATABASE="kw_served")
    run = lambda: subprocess.run([sys.executable, "-m", "keywatch.cli", "db", "migrate"], env=env,  # noqa: E731
                                 capture_output=True, text=True, timeout=120)
    first, again = run(), run()
    assert first.returncode == 0 and "0001_core" in first.stderr, first.stderr
    assert again.returncode == 0 and "schema is current" in again.stderr, again.stderr
    settings = Settings.from_env(env)
    client = connect(settings)  # migrates: nothing to do
    events = list(generate(SimConfig(keys=4, projects=2, days=0.6, seed=2, incidents=["loud_burst"], warmup_days=0.3)))
    dec, core = EventDecoder.from_settings(settings, streaming=False), build_core(settings)
    sink, ids, n = ClickHouseSink(client, "kw_served"), set(), 0
    for i in range(0, len(events), 500):
        out = core.process(dec.decode(__import__("orjson").dumps(events[i:i + 500]))[0])
        sink.write(out)
        ids |= {a.alert_id for a in out.alerts}
        n += len(out.usage)
    usage, minute, alerts = (client.query(q).result_rows for q in (
        "SELECT count(), uniqExact(event_id) FROM kw_served.usage_events",
        "SELECT sum(events) FROM kw_served.usage_minute",
        "SELECT DISTINCT alert_id FROM kw_served.alerts FINAL"))
    assert usage == [(n, n)] and minute == [(n,)] and n > 1000
    assert ids and {r[0] for r in alerts} == ids
    state = StreamState(client, "kw_served", "group", b"secret")  # a worker's snapshots, over HTTP
    state.save_snapshot(core, {"t:0": 41}, "p:t:0")
    restored, offsets = state.load_snapshot("p:t:0")
    assert offsets == {"t:0": 41} and restored.watermark_ms == core.watermark_ms


def test_password_and_clean_shutdown_keep_the_data(tmp_path):
    path = tmp_path / "chdb"
    with ServerProcess(path, env=_env(DATA_DIR=tmp_path, CHSERVER_PASSWORD="s3cret"), log_file=tmp_path / "a.log") as srv:
        for kw in ({}, {"username": "default", "password": "wrong"}, {"username": "other", "password": "s3cret"}):
            with pytest.raises(DatabaseError) as err:
                _client(srv, **kw)
            assert err.value.code == 516
        c = _client(srv, username="default", password="s3cret")
        c.command("CREATE TABLE kept (a String) ENGINE = MergeTree ORDER BY a")
        c.insert("kept", [["x"], ["y"]])
        assert srv.stop(signal.SIGTERM) == 0  # chDB closed cleanly
    with ServerProcess(path, env=_env(DATA_DIR=tmp_path), log_file=tmp_path / "b.log") as srv:
        assert _client(srv).query("SELECT a FROM kept ORDER BY a").result_rows == [("x",), ("y",)]
