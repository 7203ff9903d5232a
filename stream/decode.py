"""The one choke point for bad input: raw bytes → validated events, or typed dead letters.

A message (a Kafka value, or one line of a JSON Lines file) holds one event object or a JSON
array of them. Whole good messages take the fast path (one msgspec decode); a message with a
bad element is split so that each bad element becomes its own `DeadLetter` and the good ones
still flow. Nothing here knows about Kafka: the caller passes where the bytes came from.

>>> d = EventDecoder()
>>> ok, bad = d.decode(b'[{"kind":"usage","event_id":"a","ts":1795622400000,"provider":"openai",'
...                    b'"key_id":"k1","model":"gpt-4o"}, {"kind":"usage"}]', Origin("t", 0, 7))
>>> [e.event_id for e in ok], [(b.reason, b.offset, b.index) for b in bad]
(['a'], [('validation', 7, 1)])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import repeat
from typing import Union

import msgspec

from keywatch.models.events import Event, share_text
from keywatch.stream.scrub import SECRET_IN_TEXT, may_hold_secret, fingerprint, looks_like_secret, scrub_bytes, scrub_text

__all__ = ["DeadLetter", "EventDecoder", "Origin", "Reason", "fingerprint", "looks_like_secret", "scrub_bytes", "scrub_text"]

_PLAIN_IDS_MAX = 200_000  # bound on `EventDecoder._plain_ids`; past it, unseen ids are just checked
_BRACE = repeat(b"{")  # for a C-level `map` loop over the lines of a block


class Reason:
    """Dead-letter reason codes (stable strings: dashboards and metrics group by them)."""

    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    VALIDATION = "validation"
    TOO_MANY_EVENTS = "too_many_events"
    FUTURE_TS = "future_ts"
    EMPTY = "empty"
    TOO_DEEP = "too_deep"
    CORRUPT_FILE = "corrupt_file"  # a compressed file that stops decompressing part-way


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from: a topic/partition/offset, or a file name and line number."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    index: int  # element index inside a JSON array message; -1 for the whole message
    payload: bytes  # truncated to the configured bound
    payload_size: int
    received_at_ms: int


class EventDecoder:
    """Validates messages into events. Cheap to build; holds msgspec decoders and limits."""

    def __init__(
        self,
        max_message_bytes: int = 1_048_576,
        max_events_per_message: int = 10_000,
        payload_bound: int = 4096,
        fingerprint_key: bytes = b"keywatch-default-fingerprint-key",
        max_future_skew_ms: int | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_events_per_message = max_events_per_message
        self.payload_bound = payload_bound
        self.fingerprint_key = fingerprint_key
        self.max_future_skew_ms = max_future_skew_ms
        self._whole = msgspec.json.Decoder(Union[Event, list[Event]])
        self._one = msgspec.json.Decoder(Event)
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])
        self._many = msgspec.json.Decoder(list[Event])
        # Key ids already seen not to look like a secret (ids repeat: one regex each, not per event).
        self._plain_ids: set[str] = set()
        self.scrubbed = 0  # messages whose events may have been changed by secret scrubbing

    @classmethod
    def from_settings(cls, settings, *, streaming: bool) -> "EventDecoder":
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_events_per_message=settings.max_events_per_message,
            payload_bound=settings.dlq_payload_max_bytes,
            fingerprint_key=settings.key_hash_secret.get_secret_value().encode(),
            # Wall-clock skew only means something for a live stream, not for a replay.
            max_future_skew_ms=int(settings.max_future_skew_s * 1000) if streaming else None,
        )

    def decode(self, data: bytes, origin: Origin = Origin()) -> tuple[list[Event], list[DeadLetter]]:
        size = len(data)
        if size > self.max_message_bytes:
            return [], [self._dead(Reason.OVERSIZED, f"message is {size} bytes; limit {self.max_message_bytes}", data, origin)]
        if not data.strip():
            return [], [self._dead(Reason.EMPTY, "empty message", data, origin)]
        try:
            decoded = self._whole.decode(data)
        except msgspec.ValidationError:
            try:
                return self._split(data, origin)
            except RecursionError:
                return [], [self._dead(Reason.TOO_DEEP, "JSON nesting too deep", data, origin)]
            except UnicodeDecodeError as exc:
                return [], [self._dead(Reason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}", data, origin)]
        except msgspec.DecodeError as exc:
            return [], [self._undecodable(data, exc, origin)]
        except RecursionError:
            return [], [self._dead(Reason.TOO_DEEP, "JSON nesting too deep", data, origin)]
        except UnicodeDecodeError as exc:  # msgspec raises this (not DecodeError) for bad UTF-8 in a string
            return [], [self._dead(Reason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}", data, origin)]
        events = decoded if isinstance(decoded, list) else [decoded]
        if len(events) > self.max_events_per_message:
            return [], [self._dead(Reason.TOO_MANY_EVENTS, f"{len(events)} events in one message; limit {self.max_events_per_message}", data, origin)]
        return self._finish(events, data, origin)

    def decode_block(self, lines: list[bytes]) -> list[Event] | None:
        """Many one-object lines (replay) in one JSON parse instead of one per line, or None when
        any line needs the per-line path — not a plain object, too big, invalid, or a dead
        letter — so that the caller decodes line by line and every error keeps its line.

        >>> d = EventDecoder()
        >>> ok = b'{"kind":"usage","event_id":"e1","ts":1795622400000,"provider":"openai","key_id":"k","model":"m"}'
        >>> [e.event_id for e in d.decode_block([ok, ok.replace(b"e1", b"e2")])]
        ['e1', 'e2']
        >>> d.decode_block([ok, b'{"kind":"usage"}']) is None  # invalid: decode per line
        True
        """
        if not lines or max(map(len, lines)) > self.max_message_bytes or not all(map(bytes.startswith, lines, _BRACE)):
            return None
        data = b"[" + b",".join(lines) + b"]"
        try:
            events = self._many.decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return None
        if len(events) != len(lines):  # a line with two objects in it: not one message per line
            return None
        ok, dead = self._finish(events, data, Origin())
        return None if dead else ok

    def _split(self, data: bytes, origin: Origin) -> tuple[list[Event], list[DeadLetter]]:
        """Slow path: find which element(s) failed and keep the rest."""
        try:
            raws = self._raw_list.decode(data)
        except msgspec.DecodeError:
            raws = None
        if raws is None:  # a single object that failed validation
            try:
                self._one.decode(data)
            except msgspec.DecodeError as exc:
                return [], [self._dead(Reason.VALIDATION, str(exc), data, origin)]
            return [], [self._dead(Reason.VALIDATION, "does not match the event schema", data, origin)]
        if len(raws) > self.max_events_per_message:
            return [], [self._dead(Reason.TOO_MANY_EVENTS, f"{len(raws)} events in one message; limit {self.max_events_per_message}", data, origin)]
        events: list[Event] = []
        dead: list[DeadLetter] = []
        for i, raw in enumerate(raws):
            try:
                events.append(self._one.decode(raw))
            except msgspec.DecodeError as exc:
                dead.append(self._dead(Reason.VALIDATION, f"element {i}: {exc}", bytes(raw), origin, i))
            except UnicodeDecodeError as exc:
                dead.append(self._dead(Reason.INVALID_UTF8, f"element {i}: invalid UTF-8 at byte {exc.start}", bytes(raw), origin, i))
        ok, more_dead = self._finish(events, data, origin)
        return ok, dead + more_dead

    def _finish(self, events: list[Event], data: bytes, origin: Origin) -> tuple[list[Event], list[DeadLetter]]:
        dead: list[DeadLetter] = []
        limit = now = None
        if self.max_future_skew_ms is not None:
            now = int(time.time() * 1000)
            limit = now + self.max_future_skew_ms
        kept = events
        if limit is not None and events and max([e.ts_ms for e in events]) > limit:
            kept = []
            for i, e in enumerate(events):
                if e.ts_ms > limit:
                    dead.append(self._dead(Reason.FUTURE_TS, f"event {e.event_id!r} ts is {(e.ts_ms - now) // 1000}s ahead of the clock (limit {self.max_future_skew_ms // 1000}s)", msgspec.json.encode(e), origin, i))
                else:
                    kept.append(e)
        key, plain = self.fingerprint_key, self._plain_ids
        new = {e.key_id for e in kept}.difference(plain)  # distinct ids not known plain: one check each
        new.discard(None)
        secret = {k for k in new if looks_like_secret(k)}
        plain.update(list(new - secret)[: max(0, _PLAIN_IDS_MAX - len(plain))])
        if secret:  # a raw secret where an id belongs: never store it; identify it by keyed hash
            self.scrubbed += 1
            for e in kept:
                if e.key_id in secret:
                    e.key_id = fingerprint(e.key_id, key)
        # A secret inside any other text field (a user agent carrying a bearer token, an error
        # code echoing a key): one scan of the raw message decides whether fields need a look.
        if may_hold_secret(data):
            self.scrubbed += 1  # (maybe: fields may have changed, and grown past their schema bounds)
            for e in kept:
                for name in e.__struct_fields__:
                    v = getattr(e, name)
                    if v.__class__ is str and SECRET_IN_TEXT.search(v):
                        setattr(e, name, scrub_text(v, key))
        share_text(kept)  # after scrubbing: a secret is never kept in the shared strings
        return kept, dead

    def _undecodable(self, data: bytes, exc: Exception, origin: Origin) -> DeadLetter:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as ue:
            return self._dead(Reason.INVALID_UTF8, f"invalid UTF-8 at byte {ue.start}", data, origin)
        return self._dead(Reason.NOT_JSON, str(exc), data, origin)

    def _dead(self, reason: str, error: str, data: bytes, origin: Origin, index: int = -1) -> DeadLetter:
        # Scrub a little beyond the bound first, so a secret cut by the bound is still found.
        payload = scrub_bytes(data[: self.payload_bound + 512], self.fingerprint_key)[: self.payload_bound]
        if looks_like_secret(payload.decode("utf-8", "replace").strip()):
            payload = b"<redacted: looked like a secret>"
        return DeadLetter(
            reason=reason, error=scrub_text(error[:1000], self.fingerprint_key), topic=origin.topic, partition=origin.partition,
            offset=origin.offset, index=index, payload=payload, payload_size=len(data),
            received_at_ms=int(time.time() * 1000),
        )
