"""A dead-letter flood raises an alert instead of silently filling the DLQ — in replay and in the worker.

Someone who can write to the input topic can bury real telemetry under junk. The health
detector (`models/health.py`) sees each batch's rejected counts: `keywatch replay` passes them,
and so does the worker's `Pipeline` (per partition core). A flood = at least 500 rejected
messages and ≥ 25 % of all messages in 10 minutes of event time; a trickle of bad input is not.
"""

from __future__ import annotations

import orjson

from keywatch.models.registry import build_core
from keywatch.replay import replay
from keywatch.stream.decode import EventDecoder

T0 = 1_795_622_400_000
JUNK = [b"not json at all", b'{"kind":"usage","event_id":"x"}', b"\xff\xfe\x00", b'{"kind":"usage","event_id":"y",'
        b'"ts":1795622400000,"provider":"openai","key_id":"k","model":"m","input_tokens":-5}', b"[" * 5000 + b"]" * 5000]


def good(i: int) -> bytes:
    return orjson.dumps({"kind": "usage", "event_id": f"g{i}", "ts": T0 + i * 1000, "provider": "openai",
                         "key_id": f"key_{i % 5}", "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10})


def mixed(n_good: int, n_bad: int) -> list[bytes]:
    """Good and bad messages interleaved, good ones spread over `n_good` seconds of event time."""
    out, step = [], max(1, n_good // max(1, n_bad))
    b = 0
    for i in range(n_good):
        out.append(good(i))
        while b < n_bad and (b * step <= i or i == n_good - 1):
            out.append(JUNK[b % len(JUNK)])
            b += 1
    return out


def _replay(tmp_path, lines: list[bytes], make_settings):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "alerts.jsonl"
    settings = make_settings()
    summary = replay([src], out, build_core(settings), EventDecoder.from_settings(settings, streaming=False),
                     dead_letters_out=tmp_path / "dead.jsonl", chunk_lines=200)
    alerts = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    return summary, alerts


def test_replay_flood_raises_one_alert_with_the_reasons(tmp_path, make_settings):
    summary, alerts = _replay(tmp_path, mixed(300, 700), make_settings)
    assert summary.dead_letters == 700 and summary.events == 300
    assert set(summary.dead_by_reason) == {"not_json", "validation", "invalid_utf8", "too_deep"}
    floods = [a for a in alerts if a["kind"] == "dead_letter_flood"]
    assert len(floods) == 1, alerts  # one incident, updated — not one alert per chunk
    assert floods[0]["severity"] in ("medium", "high") and "rejected" in floods[0]["reasons"][0]
    assert set(floods[0]["details"]["rejected_by_reason"]) >= {"not_json", "validation"}
    dead = [orjson.loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert len(dead) == 700 and all(d["reason"] and d["error"] for d in dead)  # every one kept, with a reason


def test_replay_trickle_of_bad_input_is_not_a_flood(tmp_path, make_settings):
    summary, alerts = _replay(tmp_path, mixed(3000, 60), make_settings)
    assert summary.dead_letters == 60
    assert not [a for a in alerts if a["kind"] == "dead_letter_flood"]


def test_worker_pipeline_flood_is_an_alert_in_clickhouse(ch_db):
    """The worker's path: `Pipeline.process` passes each partition's rejected counts to its core."""
    from keywatch.sinks.clickhouse import ClickHouseSink
    from keywatch.stream.metrics import Metrics
    from keywatch.stream.pipeline import Msg, Pipeline
    from keywatch.stream.runtime import WorkerRuntime
    from keywatch.stream.state import StreamState

    client, settings = ch_db
    db = settings.clickhouse_database
    rt = WorkerRuntime(settings=settings, sink=ClickHouseSink(client, db), core=None, metrics=Metrics())
    state = StreamState(client, db, "sec-test", b"k")
    pipe = Pipeline(rt, EventDecoder.from_settings(settings, streaming=False), state, topic="keywatch.events",
                    factory=lambda: build_core(settings))
    msgs = [Msg("keywatch.events", 0, off, value) for off, value in enumerate(mixed(200, 600))]
    alerts = []
    for i in range(0, len(msgs), 200):  # several batches: the flood builds up over them
        res = pipe.process(msgs[i:i + 200])
        pipe.write(res)
        alerts += [a for a in res.out.alerts if a.kind == "dead_letter_flood"]
    assert alerts and len({a.alert_id for a in alerts}) == 1
    rows = client.query(f"SELECT kind, severity FROM {db}.alerts FINAL WHERE kind = 'dead_letter_flood'").result_rows
    assert len(rows) == 1
    assert client.query(f"SELECT count() FROM {db}.dead_letters").result_rows[0][0] == 600
