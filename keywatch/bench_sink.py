"""`keywatch bench-sink`: writing usage rows to ClickHouse the sink's way and the driver's column way, same run.

The worker detects one batch while the batch before is written, in another thread of the same
process, and both need the interpreter lock: whatever a write spends in Python, detection waits
for. So what counts is a write's Python time, not only its wall time. Both ways write the same
decoded usage events (simulated, 200 keys) to the same embedded chDB table, `usage_events`:

* json (the sink, sinks/clickhouse.py `usage_json`): msgspec encodes the events to
  `JSONEachRow` in C; ClickHouse parses it without holding the lock;
* native (clickhouse-connect's `insert(..., column_oriented=True)`, the sink's way until
  session 10): one Python list per column, serialised to the `Native` format by the driver.

Per event, median over `batches` batches of `batch_events` events: the Python time that builds
what is sent (json: `usage_json`; native: the columns and the driver's Native encoder, which the
driver runs inside `insert`), and the whole write's wall time.

It opens its own embedded chDB, so it runs as a command (one chDB path per process), and its
test is a subprocess: tests/stream/test_bench_smoke.py. The Native way's columns:

>>> from keywatch.models.events import UsageEvent
>>> e = UsageEvent(event_id="e1", ts=1795622400123, provider="openai", key_id="k", model="m", requests=2)
>>> cols = native_columns([e], {"e1": (3, 41)})
>>> len(cols) == len(USAGE_COLUMNS), cols[1], cols[8], cols[-3:]
(True, [1795622400123], [2], [[3], [41], ['']])
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import orjson

from keywatch.models.events import UsageEvent
from keywatch.sinks.clickhouse import NOWHERE, USAGE_COLUMNS, ClickHouseSink, connect, insert_rows, usage_json
from keywatch.stream.decode import EventDecoder, Origin


def native_columns(events: Sequence[UsageEvent], offsets: dict[str, tuple[int, int]]) -> list[list[Any]]:
    """`USAGE_COLUMNS` column-wise, as the sink built them for the driver's Native insert."""
    where = [offsets.get(e.event_id, NOWHERE) for e in events]
    return [
        [e.event_id for e in events], [e.ts_ms for e in events], [e.provider for e in events],
        [e.key_id for e in events], [e.principal or "" for e in events], [e.project or "" for e in events],
        [e.model for e in events], [e.operation or "" for e in events], [e.requests for e in events],
        [e.input_tokens for e in events], [e.output_tokens for e in events], [e.cached_input_tokens for e in events],
        [e.cost_usd or 0.0 for e in events], [e.price_source or "" for e in events], [e.source_ip or "" for e in events],
        [e.user_agent or "" for e in events], [e.region or "" for e in events], [e.country or "" for e in events],
        [e.status or 0 for e in events], [e.error_code or "" for e in events], [e.latency_ms or 0.0 for e in events],
        [e.source or "" for e in events], [e.request_id or "" for e in events], [w[0] for w in where],
        [w[1] for w in where], [e.credential_type or "" for e in events],
    ]


def _events(n: int) -> list[UsageEvent]:
    from keywatch.bench import bench_events

    decoder, out = EventDecoder(), []
    raw = bench_events(n, 200)
    for i in range(0, len(raw), 100):  # as the worker gets them: 100 per message
        out += [e for e in decoder.decode(orjson.dumps(raw[i:i + 100]), Origin("bench", 0, i))[0] if isinstance(e, UsageEvent)]
    return out


def run_sink_bench(settings=None, *, batch_events: int = 20_000, batches: int = 6, quiet: bool = False) -> dict:
    from keywatch.settings import Settings

    with tempfile.TemporaryDirectory(prefix="kw-bench-sink-") as td:
        settings = (settings or Settings.from_env()).model_copy(update={"data_dir": Path(td), "clickhouse_dsn": None})
        client = connect(settings)
        db = settings.clickhouse_database
        sink = ClickHouseSink(client, db)
        events = _events(batch_events * (batches + 1))
        cuts = [events[i * batch_events:(i + 1) * batch_events] for i in range(batches + 1)]
        offsets = {e.event_id: (0, i) for i, e in enumerate(events)}
        table = f"{db}.usage_events"
        # The driver's Native encoder, as `insert` runs it (its `_transform` is not public API).
        transform = client._transform
        types = list(client.create_insert_context(table, column_names=USAGE_COLUMNS).column_types)  # as `insert_rows` caches them

        def native_prepare(b):
            ctx = client.create_insert_context(table, USAGE_COLUMNS, column_types=types, data=native_columns(b, offsets),
                                               column_oriented=True)
            return b"".join(transform.build_insert(ctx))

        ways = {
            "json": (lambda b: usage_json(b, offsets), lambda b: sink.write(_usage_only(b), offsets=offsets)),
            "native": (native_prepare, lambda b: insert_rows(client, table, native_columns(b, offsets), USAGE_COLUMNS,
                                                             column_oriented=True)),
        }
        result: dict = {"config": {"batch_events": batch_events, "batches": batches}}
        for name, (prepare, write) in ways.items():
            client.command(f"TRUNCATE TABLE {table}")
            write(cuts[-1])  # warm-up: types looked up, first part created
            client.command(f"TRUNCATE TABLE {table}")
            prep, wall = [], []
            for b in cuts[:-1]:
                t0 = time.perf_counter()
                prepare(b)
                t1 = time.perf_counter()
                write(b)
                wall.append(time.perf_counter() - t1)
                prep.append(t1 - t0)
            rows = client.query(f"SELECT count() FROM {table}").result_rows[0][0]
            result[name] = {"rows": rows, "python_us_per_event": round(1e6 * statistics.median(prep) / batch_events, 2),
                            "write_us_per_event": round(1e6 * statistics.median(wall) / batch_events, 2)}
        client.close()
    if not quiet:
        print_report(result)
    return result


def _usage_only(events):
    from keywatch.models.core import CoreOutput

    return CoreOutput(list(events), [], [], [], [], {})


def print_report(r: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"usage rows to embedded chDB: {r['config']['batches']} batches of {r['config']['batch_events']:,} events (median)")
    for col in ("way", "rows", "Python µs/event (holds the lock)", "write µs/event (wall)"):
        t.add_column(col, justify="left" if col == "way" else "right")
    for name in ("json", "native"):
        x = r[name]
        t.add_row(name, f"{x['rows']:,}", f"{x['python_us_per_event']:.2f}", f"{x['write_us_per_event']:.2f}")
    (console or Console()).print(t)


def register(app) -> None:
    import typer

    def bench_sink(
        batch_events: int = typer.Option(20_000, "--batch-events", help="usage events per write"),
        batches: int = typer.Option(6, "--batches", help="writes per way; the median is reported"),
        json_out: Path = typer.Option(None, "--json-out", help="results as JSON"),
    ) -> None:
        """Usage rows written the sink's way (JSON) and the driver's column way (Native), same run."""
        from keywatch.cli import load_settings

        r = run_sink_bench(load_settings(), batch_events=batch_events, batches=batches)
        if json_out is not None:
            json_out.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))

    app.command("bench-sink")(bench_sink)
