"""Two workers share key theft's project populations over the embedded broker (stream/popshare.py).

Real Tansu, real pipelines over the embedded chDB, wired as the worker wires them (`Consumer`:
detection on its own thread). Worker A learns project p1's traffic from one key, worker B from
another key on its own partition: each learns the other's callers and requests, and neither
merges its own. A message on the populations topic that does not decode is a dead letter, in
the DLQ topic and the `dead_letters` table, and sharing goes on. Marked `integration`.
"""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from keywatch.stream.broker import ensure_topics, topic_specs
from keywatch.stream.consumer import Consumer
from keywatch.stream.popshare import PopulationSync
from keywatch.stream.status import StatusFile

from stream_helpers import TOPIC, Msg, pipeline_worker

pytestmark = pytest.mark.integration
T0 = 1_793_577_600_000


def _usage(key: str, ip: str, n: int) -> bytes:
    return orjson.dumps([{"kind": "usage", "event_id": f"{key}-{i}", "ts": T0 + i * 1000, "provider": "openai",
                          "key_id": key, "project": "p1", "model": "gpt-4o-mini", "input_tokens": 120,
                          "output_tokens": 30, "source_ip": ip, "country": "US"} for i in range(n)])


async def _until(pred, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_two_workers_learn_each_others_populations(ch_db, broker, tmp_path):
    client, s = ch_db
    s = s.model_copy(update={"data_dir": tmp_path, "population_share_s": 0.2, "population_topic": "pop.sync",
                             "dlq_topic": "pop.dlq"})
    ensure_topics(broker.bootstrap, topic_specs(s))
    workers = []
    for name in ("a", "b"):
        pipe = pipeline_worker(client, s)
        c = Consumer(None, pipe.rt, pipe, None, StatusFile(tmp_path / f"{name}.status.json", os.getpid()), None, None)
        workers.append((pipe, c, PopulationSync(s, broker.bootstrap, c)))
    (pa, ca, sa), (pb, cb, sb) = workers

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(sync.run()) for _, _, sync in workers]
        try:
            await asyncio.wait_for(asyncio.gather(sa.ready.wait(), sb.ready.wait()), 30)
            loop = asyncio.get_running_loop()
            # a batch on each worker: A's key on partition 0, B's on partition 1
            await loop.run_in_executor(ca.detect, pa.process, [Msg(TOPIC, 0, 0, _usage("k-a", "34.1.2.3", 30))])
            await loop.run_in_executor(cb.detect, pb.process, [Msg(TOPIC, 1, 0, _usage("k-b", "35.7.8.9", 20))])
            pop_a = pa.cores.shared_key_theft.pops
            pop_b = pb.cores.shared_key_theft.pops
            await _until(lambda: "p1" in pop_a and "p1" in pop_b and pop_a["p1"].learned == pop_b["p1"].learned == 50)
            for pops in (pop_a, pop_b):
                assert {34 << 8 | 1, 35 << 8 | 7} <= set(pops["p1"].ids.values("n16"))
            assert sa.counts["merged"] >= 1 and sb.counts["merged"] >= 1  # each learned the other's, not its own
            await asyncio.sleep(1.0)  # more rounds: nothing more to say, and nothing counted twice
            assert pop_a["p1"].learned == pop_b["p1"].learned == 50

            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(s.population_topic, b'{"pop": "p1", "learned": "lots"}')
            finally:
                await producer.stop()
            await _until(lambda: sa.counts["bad"] == 1 and sb.counts["bad"] == 1)
            await loop.run_in_executor(ca.detect, pa.process, [Msg(TOPIC, 0, 1, _usage("k-a2", "36.1.1.1", 5))])
            await _until(lambda: pop_b["p1"].learned == 55)  # sharing goes on after the bad message
            dlq = AIOKafkaConsumer(s.dlq_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
            await dlq.start()
            try:
                got = await dlq.getmany(timeout_ms=5000)
            finally:
                await dlq.stop()
            records = [orjson.loads(m.value) for msgs in got.values() for m in msgs]
            assert [r["reason"] for r in records] == ["bad_population_delta"] * 2  # one per worker that read it
            assert records[0]["topic"] == s.population_topic and "learned" in records[0]["payload"]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    rows = client.query(f"SELECT reason, topic FROM {s.clickhouse_database}.dead_letters "
                        "WHERE reason = 'bad_population_delta'").result_rows
    assert rows == [("bad_population_delta", s.population_topic)] * 2
    for _, c, _ in workers:
        c.io.shutdown()
        c.detect.shutdown()


def test_sharing_starts_once_the_broker_is_there(ch_db, tmp_path):
    """The broker is not there when the worker starts (or restarts without the topic): the
    sharing starts again until it is, then works."""
    from keywatch.stream.broker import EmbeddedBroker, free_port

    client, s = ch_db
    s = s.model_copy(update={"data_dir": tmp_path, "population_share_s": 0.2, "population_topic": "pop.late"})
    pipe = pipeline_worker(client, s)
    c = Consumer(None, pipe.rt, pipe, None, StatusFile(tmp_path / "w.status.json", os.getpid()), None, None)
    port = free_port()
    sync = PopulationSync(s, f"127.0.0.1:{port}", c)
    sync.retry_s = 0.5

    async def scenario() -> None:
        task = asyncio.ensure_future(sync.run())
        try:
            await asyncio.sleep(1.0)
            assert not sync.ready.is_set() and not task.done()  # failing, and trying again
            with EmbeddedBroker(port=port) as b:
                ensure_topics(b.bootstrap, topic_specs(s))
                await asyncio.wait_for(sync.ready.wait(), 60)
                await asyncio.get_running_loop().run_in_executor(
                    c.detect, pipe.process, [Msg(TOPIC, 0, 0, _usage("k-late", "34.1.2.3", 3))])
                await _until(lambda: sync.counts["sent"] >= 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    c.io.shutdown()
    c.detect.shutdown()
