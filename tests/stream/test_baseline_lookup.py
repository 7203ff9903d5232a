"""A key idle past `KEYWATCH_KEY_IDLE_EXPIRE_S` leaves memory with its baseline stored in
`key_baselines`; when it is seen again its baseline comes back (stream/recheck.py) — and that
lookup does not wait behind the ClickHouse write in flight.

On a real pipeline over the embedded chDB, wired as the worker wires it (`Consumer`: writes on
the io thread, detection on the detect thread). The io thread is held busy, as by a long insert;
before `StreamState.lookups`, the returning key's lookup queued behind it and detection stopped
until the write was done.
"""

from __future__ import annotations

import os
import threading

import orjson

from keywatch.stream.consumer import Consumer
from keywatch.stream.status import StatusFile

from stream_helpers import TOPIC, Msg, pipeline_worker

T0 = 1_793_577_600_000  # a whole hour, UTC


def _usage(key: str, ts: int, n: int, step_ms: int) -> list[dict]:
    return [{"kind": "usage", "event_id": f"{key}-{ts + i * step_ms}", "ts": ts + i * step_ms, "provider": "openai",
             "key_id": key, "project": "p1", "model": "gpt-4o-mini", "input_tokens": 120, "output_tokens": 30,
             "source_ip": "34.1.2.3", "country": "US"} for i in range(n)]


def test_a_returning_key_gets_its_baseline_while_a_write_is_in_flight(ch_db, tmp_path):
    client, s = ch_db
    s = s.model_copy(update={"key_idle_expire_s": 3600.0, "data_dir": tmp_path})
    db = s.clickhouse_database
    pipe = pipeline_worker(client, s)
    # k-old learns 40 calls; two hours later another key's traffic on the same partition sweeps it out
    msgs = [Msg(TOPIC, 0, 0, orjson.dumps(_usage("k-old", T0, 40, 30_000))),
            Msg(TOPIC, 0, 1, orjson.dumps(_usage("k-other", T0 + 7_200_000, 5, 1_000)))]
    for m in msgs:
        pipe.write(pipe.process([m]))
    det = pipe.cores.core_for(0).detector("key_theft")
    assert ("openai", "k-old") not in det.keys
    assert client.query(f"SELECT count() FROM {db}.key_baselines WHERE key_id = 'k-old'").result_rows == [(1,)]

    c = Consumer(None, pipe.rt, pipe, None, StatusFile(tmp_path / "worker.status.json", os.getpid()), None, None)
    gate = threading.Event()
    held = c.io.submit(gate.wait, 60)  # the io thread is busy, as with a long insert
    try:
        back = Msg(TOPIC, 0, 2, orjson.dumps(_usage("k-old", T0 + 7_260_000, 1, 0)))
        res = c.detect.submit(pipe.process, [back]).result(timeout=30)  # before: waited for the gate
        assert not held.done()
    finally:
        gate.set()
    assert [e.key_id for e in res.out.usage] == ["k-old"]
    st = det.keys[("openai", "k-old")]
    assert st.base.learned >= 40  # what it had learned, not a new key's first call
    assert ("openai", "k-old") not in pipe.no_baseline
    c.io.shutdown()
    c.detect.shutdown()


def test_idle_keys_come_back_per_provider_in_a_batch_of_several():
    """`_restore_baselines` takes one provider's batch as a set of key ids, and a mixed batch
    as (provider, key id) pairs: a key id used under two providers is two keys."""
    from types import SimpleNamespace

    from keywatch.stream.recheck import RecheckSteps

    class Det:
        name, keys, restored = "key_theft", {("openai", "known"): object()}, {}

        def __init__(self) -> None:
            self.got: list[dict] = []

        def restore(self, rows) -> None:
            self.got += rows

    stored = {(p, k): {"provider": p, "key_id": k} for p in ("openai", "anthropic") for k in ("k1", "k2", "known")}
    steps = RecheckSteps()
    steps.unwritten_baselines, steps.no_baseline = stored, set()
    ev = lambda p, k: SimpleNamespace(provider=p, key_id=k)  # noqa: E731
    for events, expected in (([ev("openai", "k1"), ev("openai", "k1"), ev("openai", "known"), ev("openai", None)],
                              {("openai", "k1")}),
                             ([ev("openai", "k2"), ev("anthropic", "k2"), ev("anthropic", "known")],
                              {("openai", "k2"), ("anthropic", "k2"), ("anthropic", "known")})):
        det = Det()
        steps._restore_baselines(SimpleNamespace(detector=lambda name, d=det: d), events)
        assert {(r["provider"], r["key_id"]) for r in det.got} == expected and len(det.got) == len(expected)
