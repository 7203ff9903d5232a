"""Produce canonical events to the input topic: batched JSON-array messages, a key's events on one partition.

Every event of a `key_id` goes to the partition Kafka's default partitioner gives that key
(murmur2, as the Java client), so one worker holds that key's detector state, whether events
are sent one per message (keyed, ``batch_size=1``: one JSON object) or batched. A batched
message holds up to `batch_size` events *of one partition*, in input order, not of one key:
grouped per key, a quiet key's 100 events span hours of a backlog, its message then sits in
its partition after messages that reach later, and the partition leaves event-time order. Its
cores would count those events in a later minute, at places that depend on where the worker's
batches are cut (the same input gave 55 and 5 key-level cost spikes). Grouped per partition,
each partition keeps the input's order, so a time-ordered input stays time-ordered in every
partition.
Used by `keywatch demo`, `keywatch bench`, the tests and the `ingest`/`poll` commands.

Example (needs a broker)::

    from keywatch.stream.produce import produce_events
    n = produce_events("127.0.0.1:9092", "keywatch.events", events, batch_size=100)

>>> [partition_of(k, 3) for k in (b"a", b"b", b"c")]
[1, 2, 1]
>>> evs = [{"key_id": k, "n": i} for i, k in enumerate("abcab")]
>>> [(p, [e["n"] for e in g]) for p, g in partition_messages(evs, 2, partitions=3)]
[(1, [0, 2]), (2, [1, 4]), (1, [3])]
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import orjson
from kafka.partitioner.default import murmur2


def placement_key(key_id: Any, project: Any, source: Any, key_map: dict[str, str] | None = None) -> bytes | None:
    """The key that places an event: its `key_id`, else (project-level events such as billing)
    its project, so those stay together. A gateway's event (`source` "gateway") goes by the
    provider key its gateway key maps to (`KEYWATCH_GATEWAY_KEY_MAP_FILE`): gateway bypass
    compares both sides of a key, so they must meet in one partition core.

    >>> placement_key("gw-1", "p", "gateway", {"gw-1": "key_A"}), placement_key(None, "p", "billing")
    (b'key_A', b'p')
    """
    k = key_id
    if k is not None and key_map and source == "gateway":
        k = key_map.get(k, k)
    if k is None:
        k = project
    return str(k).encode() if k is not None else None


def message_key(event: dict[str, Any], key_map: dict[str, str] | None = None) -> bytes | None:
    """`placement_key` of a canonical event as a dict: where an event goes on its own, without what
    a `Placement` (the producers' way) learns from the events before it (tests place by it)."""
    if not isinstance(event, dict):
        return None
    return placement_key(event.get("key_id"), event.get("project"), event.get("source"), key_map)


class Placement:
    """`placement_key`, plus the key each principal was last seen with, for events naming only it.

    Key theft joins a principal's control-plane actions to the key it uses: CloudTrail names only
    the principal for console and role sessions, so an audit event may carry no `key_id`
    (models/killchain.py, `links`). One worker's partition cores share those links; several
    workers do not, so such an event must reach the worker of its principal's key, or that
    worker raises its kill chain again, on the principal (2 of 12 `hard_tamper` cases with two
    workers: a second critical alert for one incident).
    As the detector does, a placement learns (provider, principal) → key from the events it
    places that carry both, and places an event without a key by its principal's latest key —
    else by its project, as `placement_key` does.

    `by_project` (`KEYWATCH_PLACEMENT=project`): every key goes by the first project it was seen
    with (sticky, so an event without a project follows its key), and an event naming only a
    principal by its key's project. A project's keys then share one partition, so several
    workers each see whole projects: key theft's cross-key state (what a new key borrows from its
    project), project budgets and project-level spikes are exact (provider- and model-level
    series stay per worker share), at the price of a project's whole load on one partition.
    Bounded: each map forgets everything past `max_entries`.

    >>> pl = Placement()
    >>> pl.key(None, "p1", None, "arn:u/app", "aws")  # not seen yet: by project
    b'p1'
    >>> pl.key("AKIA1", "p1", None, "arn:u/app", "aws"), pl.key(None, "p1", None, "arn:u/app", "aws")
    (b'AKIA1', b'AKIA1')
    >>> pp = Placement(by_project=True)
    >>> pp.key("AKIA1", "p1", None, "arn:u/app", "aws"), pp.key("AKIA1", None, None), pp.key(None, None, None, "arn:u/app", "aws")
    (b'p1', b'p1', b'p1')
    """

    def __init__(self, key_map: dict[str, str] | None = None, by_project: bool = False, max_entries: int = 100_000) -> None:
        self.key_map = key_map or None
        self.by_project = by_project
        self.max_entries = max_entries
        self.principal_key: dict[tuple[Any, str], bytes] = {}
        self.key_project: dict[bytes, bytes] = {}  # by_project: a key's first project

    @classmethod
    def from_settings(cls, settings) -> "Placement":
        return cls(gateway_key_map(settings), by_project=settings.placement == "project")

    def _learn(self, known: dict, k, v) -> None:
        if len(known) >= self.max_entries and k not in known:
            known.clear()
        known[k] = v

    def key(self, key_id: Any, project: Any, source: Any, principal: Any = None, provider: Any = None) -> bytes | None:
        if key_id is None and principal is not None:  # by the key its principal was last seen with
            k = self.principal_key.get((provider, principal))
            if k is not None:
                return self.key_project.get(k, k) if self.by_project else k
        if key_id is None:
            return placement_key(None, project, source, self.key_map)
        k = placement_key(key_id, project, source, self.key_map)
        if principal is not None:
            self._learn(self.principal_key, (provider, principal), k)
        if not self.by_project:
            return k
        p = self.key_project.get(k)
        if p is None and project is not None:
            p = str(project).encode()
            self._learn(self.key_project, k, p)
        return p if p is not None else k

    def of(self, event: dict[str, Any]) -> bytes | None:
        """`key` of a canonical event as a dict."""
        if not isinstance(event, dict):
            return None
        g = event.get
        return self.key(g("key_id"), g("project"), g("source"), g("principal"), g("provider"))


def partition_of(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions` (no key: that of
    b"", so keyless events stay together too, where the partitioner would scatter them)."""
    return (murmur2(key or b"") & 0x7FFFFFFF) % partitions


def partition_messages(events: Iterable[dict[str, Any]], batch_size: int, partitions: int,
                       key_map: dict[str, str] | None = None, placement: Placement | None = None) -> Iterator[tuple[int, list[dict]]]:
    """(partition, events) per message: up to `batch_size` events of one partition, in input order.
    `placement` (else a new one with `key_map`) places them and learns principals' keys."""
    pending: dict[int, list[dict]] = {}
    place = (placement or Placement(key_map)).of
    for ev in events:
        p = partition_of(place(ev), partitions)
        buf = pending.setdefault(p, [])
        buf.append(ev)
        if len(buf) >= batch_size:
            yield p, pending.pop(p)
    for p, buf in pending.items():
        if buf:
            yield p, buf


class EventProducer:
    """A thin synchronous producer (kafka-python). Call `close()` (or use `with`) to flush.
    `key_map`: gateway key → provider key_id (`gateway_key_map(settings)`), for placement; or a
    whole `placement` (`Placement.from_settings`, which also honours `KEYWATCH_PLACEMENT`)."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5, max_request_size: int = 16 * 1048576,
                 key_map: dict[str, str] | None = None, placement: Placement | None = None) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        # one for the producer's life: principals' keys (and keys' projects) carry over
        self.placement = placement or Placement(key_map)
        self.messages = 0
        self.events = 0
        self._partitions: int | None = None
        self._p = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), client_id="keywatch-producer", acks="all",
            linger_ms=linger_ms, max_request_size=max_request_size, retries=5,
        )

    def send_raw(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        self._p.send(self.topic, value=value, key=key, partition=partition)
        self.messages += 1

    def partitions(self) -> int:
        """The topic's partition count (asked of the broker once; the topic must exist)."""
        if self._partitions is None:
            parts = self._p.partitions_for(self.topic)
            if not parts:
                raise RuntimeError(f"topic {self.topic!r} has no partitions on the broker (create it first; the worker creates its topics when it starts)")
            self._partitions = len(parts)
        return self._partitions

    def send_events(self, events: Iterable[dict[str, Any]], batch_size: int = 100) -> int:
        """Send events, `batch_size` per message (see the module's docstring); return the count."""
        n = 0
        if batch_size == 1:  # one JSON object per message, keyed: the default partitioner places it
            for ev in events:
                key = self.placement.of(ev)  # keyless: with the batched ones, not scattered
                self.send_raw(orjson.dumps(ev), key, None if key is not None else partition_of(None, self.partitions()))
                n += 1
        else:
            for p, group in partition_messages(events, batch_size, self.partitions(), placement=self.placement):
                self.send_raw(orjson.dumps(group), None, p)
                n += len(group)
        self.events += n
        return n

    def flush(self, timeout: float = 60.0) -> None:
        self._p.flush(timeout=timeout)

    def close(self) -> None:
        self._p.flush()
        self._p.close()

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gateway_key_map(settings) -> dict[str, str]:
    """The gateway key map a producer places gateway events by (empty without one)."""
    from keywatch.models.gatewaybypass import load_key_map

    return load_key_map(settings.gateway_key_map_file)


def produce_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], batch_size: int = 100,
                   key_map: dict[str, str] | None = None, placement: Placement | None = None) -> int:
    """Produce events (batched per partition) and wait until the broker acknowledged them; return the count."""
    with EventProducer(bootstrap, topic, key_map=key_map, placement=placement) as p:
        return p.send_events(events, batch_size)


def produce_raw(bootstrap: str, topic: str, messages: Iterable[bytes | tuple[bytes | None, bytes]]) -> int:
    """Produce raw message values (or (key, value) pairs) as they are, e.g. malformed input."""
    with EventProducer(bootstrap, topic) as p:
        for m in messages:
            key, value = m if isinstance(m, tuple) else (None, m)
            p.send_raw(value, key)
        return p.messages


def paced(events: Iterable[dict[str, Any]], rate: float, chunk: int = 50) -> Iterator[list[dict[str, Any]]]:
    """Chunks of events released at about `rate` events/s (for a live demo)."""
    started, sent, buf = time.monotonic(), 0, []
    for ev in events:
        buf.append(ev)
        if len(buf) >= chunk:
            sent += len(buf)
            yield buf
            buf = []
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if buf:
        yield buf
