"""Produce canonical events to the input topic: batched JSON-array messages keyed by `key_id`.

Keying by `key_id` puts every event of a key on one partition, so one worker holds that key's
detector state. With ``batch_size=1`` each event is its own message (one JSON object).
Used by `keywatch demo`, `keywatch bench`, the tests and the `ingest`/`poll` commands.

Example (needs a broker)::

    from keywatch.stream.produce import produce_events
    n = produce_events("127.0.0.1:9092", "keywatch.events", events, batch_size=100)

>>> [(k, len(v)) for k, v in group_messages([{"key_id": "a"}, {"key_id": "b"}, {"key_id": "a"}], 2)]
[(b'a', 2), (b'b', 1)]
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import orjson


def _key(event: dict[str, Any]) -> bytes | None:
    k = event.get("key_id") if isinstance(event, dict) else None
    if k is None:  # project-level events (billing) go by project so they stay together
        k = event.get("project") if isinstance(event, dict) else None
    return str(k).encode() if k is not None else None


def group_messages(events: Iterable[dict[str, Any]], batch_size: int) -> Iterator[tuple[bytes | None, list[dict]]]:
    """(key, events) per message: up to `batch_size` events of one key, in input order per key."""
    pending: dict[bytes | None, list[dict]] = {}
    for ev in events:
        k = _key(ev)
        buf = pending.setdefault(k, [])
        buf.append(ev)
        if len(buf) >= batch_size:
            yield k, pending.pop(k)
    for k, buf in pending.items():
        if buf:
            yield k, buf


class EventProducer:
    """A thin synchronous producer (kafka-python). Call `close()` (or use `with`) to flush."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5, max_request_size: int = 16 * 1048576) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.messages = 0
        self.events = 0
        self._p = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), client_id="keywatch-producer", acks="all",
            linger_ms=linger_ms, max_request_size=max_request_size, retries=5,
        )

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        self._p.send(self.topic, value=value, key=key)
        self.messages += 1

    def send_events(self, events: Iterable[dict[str, Any]], batch_size: int = 100) -> int:
        n = 0
        for key, group in group_messages(events, batch_size):
            value = orjson.dumps(group[0] if batch_size == 1 else group)
            self.send_raw(value, key)
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


def produce_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], batch_size: int = 100) -> int:
    """Produce events (batched per key) and wait until the broker acknowledged them; return the count."""
    with EventProducer(bootstrap, topic) as p:
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
