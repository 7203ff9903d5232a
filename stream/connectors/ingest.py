"""Provider files → validated canonical events and dead letters (the engine of `keywatch ingest`).

A file (or stdin; gzip detected by its magic bytes) is read as JSON Lines when its first line is
a complete JSON value, otherwise as one JSON document (a pretty-printed API page or CloudTrail
file). Each document goes through the format's normaliser; each canonical dict it produces is
then validated by the same `EventDecoder` as the worker, so what ingest emits is exactly what
the worker would accept. Everything else becomes a `DeadLetter` with a reason.

>>> ing = Ingester("litellm", EventDecoder())
>>> ok, bad = ing.feed_document({"api_key": "h1", "startTime": "2025-06-01T12:00:00Z", "model": "m"}, "f", 1)
>>> [(e.key_id, e.source) for e in ok], bad
([('h1', 'gateway')], [])
>>> ok, bad = ing.feed_document({"startTime": "2025-06-01T12:00:00Z"}, "f", 2)
>>> [(d.reason, d.offset) for d in bad]
[('normalise:no_key', 2)]
"""

from __future__ import annotations

import gzip
import io
import sys
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson

from keywatch.models.events import Event, to_dict
from keywatch.stream.connectors import anthropic, bedrock, cloudtrail, litellm, openai, otlp
from keywatch.stream.connectors.common import Rejected
from keywatch.stream.connectors.join import RequestJoin
from keywatch.stream.decode import DeadLetter, EventDecoder, Origin, Reason, scrub_bytes, scrub_text

Normaliser = Callable[..., Iterator[Any]]
FORMATS: dict[str, Normaliser | None] = {
    "canonical": None,  # already contract-shaped: straight to the decoder
    "openai-usage": openai.normalise_usage,
    "openai-costs": openai.normalise_costs,
    "openai-audit": openai.normalise_audit,
    "anthropic-usage": anthropic.normalise_usage,
    "anthropic-cost": anthropic.normalise_cost,
    "bedrock-invocation": bedrock.normalise,
    "cloudtrail": cloudtrail.normalise,
    "litellm": litellm.normalise,
    "otlp": otlp.normalise,
}
# Formats whose usage records are joined on request id (invocation log ⋈ CloudTrail).
JOINED_FORMATS = frozenset({"bedrock-invocation", "cloudtrail"})
# What a damaged gzip stream raises part-way through reading.
CORRUPT_INPUT = (gzip.BadGzipFile, EOFError, zlib.error)
_CHUNK = 1000  # dicts validated per decoder call (well under max_events_per_message)


def open_input(path: str | Path) -> BinaryIO:
    """A binary stream of the file (or stdin for `-`), transparently gunzipped."""
    raw: BinaryIO = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    buf = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    if buf.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buf)  # type: ignore[return-value]
    return buf


def documents(fh: BinaryIO, name: str) -> Iterator[tuple[int, Any, bytes | None]]:
    """(line number, parsed document, raw bytes if it did not parse) for each document."""
    lines = iter(fh)
    first_no, first = 0, b""
    for first_no, first in enumerate(lines, 1):
        if first.strip():
            break
    else:
        return
    try:
        yield first_no, orjson.loads(first), None
    except orjson.JSONDecodeError:
        # Not one value per line: the whole file is one (pretty-printed) document.
        rest = first + b"".join(lines)
        try:
            yield first_no, orjson.loads(rest), None
        except orjson.JSONDecodeError:
            yield first_no, None, rest
        return
    for n, line in enumerate(lines, first_no + 1):
        if line.strip():
            try:
                yield n, orjson.loads(line), None
            except orjson.JSONDecodeError:
                yield n, None, line.rstrip(b"\r\n")


class Ingester:
    """Normalise + validate documents of one format; counts what it did. One per run."""

    def __init__(self, fmt: str, decoder: EventDecoder, *, join: RequestJoin | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.decoder = decoder
        self.normaliser = FORMATS[fmt]
        self.join = join
        self.records = 0
        self.events = 0
        self.dead = 0
        self.dead_by_reason: dict[str, int] = {}

    def feed_file(self, path: str | Path) -> Iterator[tuple[list[Event], list[DeadLetter]]]:
        name = str(path)
        lineno = 0
        try:
            with open_input(path) as fh:
                if self.normaliser is None:  # canonical: each line is a message, as in replay
                    for lineno, line in enumerate(fh, 1):
                        if line.strip():
                            self.records += 1
                            yield self._count(*self.decoder.decode(line.rstrip(b"\r\n"), Origin(name, -1, lineno)))
                    return
                for lineno, doc, raw in documents(fh, name):
                    if raw is not None:
                        self.records += 1
                        yield self._count([], [self._dead(Reason.NOT_JSON, "not JSON", raw, name, lineno)])
                    else:
                        yield self.feed_document(doc, name, lineno)
        except CORRUPT_INPUT as exc:  # a damaged .gz: what was read stands; the rest is one dead letter
            self.records += 1
            yield self._count([], [self._dead(Reason.CORRUPT_FILE, f"cannot decompress after line {lineno}: {exc}", b"", name, lineno)])

    def feed_document(self, doc: Any, name: str = "", lineno: int = -1) -> tuple[list[Event], list[DeadLetter]]:
        """One parsed provider document → (events, dead letters)."""
        assert self.normaliser is not None
        dicts: list[dict] = []
        dead: list[DeadLetter] = []
        for out in self.normaliser(doc, fp_key=self.decoder.fingerprint_key):
            self.records += 1
            if isinstance(out, Rejected):
                dead.append(self._dead(out.reason, out.error, out.payload, name, lineno))
            elif self.join is not None and self.fmt in JOINED_FORMATS:
                dicts.extend(self.join.add(out))
            else:
                dicts.append(out)
        if self.join is not None:
            dicts.extend(self.join.expire())
        events, bad = self.validate(dicts, name, lineno)
        return self._count(events, dead + bad)

    def finish(self, name: str = "") -> tuple[list[Event], list[DeadLetter]]:
        """Release what the join still holds (emitted un-joined, never lost)."""
        if self.join is None:
            return [], []
        return self._count(*self.validate(self.join.flush(), name, -1))

    def validate(self, dicts: list[dict], name: str, lineno: int) -> tuple[list[Event], list[DeadLetter]]:
        events: list[Event] = []
        dead: list[DeadLetter] = []
        for i in range(0, len(dicts), _CHUNK):
            ok, bad = self.decoder.decode(orjson.dumps(dicts[i:i + _CHUNK]), Origin(name, -1, lineno))
            events.extend(ok)
            dead.extend(bad)
        return events, dead

    def _count(self, events: list[Event], dead: list[DeadLetter]) -> tuple[list[Event], list[DeadLetter]]:
        self.events += len(events)
        for d in dead:
            self.dead += 1
            self.dead_by_reason[d.reason] = self.dead_by_reason.get(d.reason, 0) + 1
        return events, dead

    def _dead(self, reason: str, error: str, payload: bytes, name: str, lineno: int) -> DeadLetter:
        bound, key = self.decoder.payload_bound, self.decoder.fingerprint_key
        # Raw provider records can carry credentials (headers, request bodies): scrub like the decoder.
        return DeadLetter(reason=reason, error=scrub_text(error[:1000], key), topic=name, partition=-1, offset=lineno,
                          index=-1, payload=scrub_bytes(payload[:bound + 512], key)[:bound], payload_size=len(payload),
                          received_at_ms=int(time.time() * 1000))


def normalise_to_dicts(fmt: str, doc: Any, decoder: EventDecoder | None = None) -> tuple[list[dict], list[DeadLetter]]:
    """Convenience for tests and pollers: validated events back as contract dicts."""
    ing = Ingester(fmt, decoder or EventDecoder())
    events, dead = ing.feed_document(doc)
    return [to_dict(e) for e in events], dead


def dead_letter_json(d: DeadLetter) -> bytes:
    """One dead letter as a JSON Lines record (same shape as `keywatch replay` writes)."""
    return orjson.dumps({
        "reason": d.reason, "error": d.error, "file": d.topic, "line": d.offset, "index": d.index,
        "payload": d.payload.decode("utf-8", "replace"), "payload_size": d.payload_size,
    }) + b"\n"
