"""Shared pieces of the provider normalisers: typed errors, deterministic ids, safe field access.

Every normaliser turns one parsed provider document (a usage page, a CloudTrail file, one log
line, …) into canonical event dicts (contract §1). A record it cannot use is not an exception
for the caller: the normaliser yields a `Rejected` (reason code, message, the offending record),
which ingest turns into a dead letter. Field accessors here raise `NormaliseError` so that a
malformed record is always a *typed* rejection, never a `TypeError` from deep inside.

Token convention (all sources): `input_tokens` is the total prompt size *including* cached
tokens; `cached_input_tokens` is the part read from a cache (OpenAI's own semantics; Anthropic
and Bedrock report the parts separately and are summed here).

>>> event_id("oai", "completions", 1730419200, "key_1")
'oai_ce641d39377f27f8d534639b6397cbda'
>>> ts_from_epoch_s(1730419200)
'2024-11-01T00:00:00.000Z'
>>> opt_count({"n": None}, "n"), opt_count({}, "n"), opt_count({"n": "12"}, "n")
(0, 0, 12)
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Iterator, Union

import orjson

from keywatch.models.events import MAX_COUNT, format_ts, parse_ts
from keywatch.stream.decode import fingerprint, looks_like_secret

DEFAULT_FP_KEY = b"keywatch-default-fingerprint-key"


class NormaliseError(ValueError):
    """A record the normaliser cannot turn into a canonical event. `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record that became no event: goes to the dead letters with `reason`."""

    reason: str  # e.g. "normalise:missing_field"
    error: str
    payload: bytes


Output = Union[dict, Rejected]


def event_id(prefix: str, *parts: Any) -> str:
    """Stable id from a source record's identity, so re-ingesting an export deduplicates."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return f"{prefix}_{hashlib.sha256(raw.encode()).hexdigest()[:32]}"


def as_dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise NormaliseError("bad_shape", f"{what} is {type(value).__name__}, expected an object")
    return value


def as_list(value: Any, what: str, *, allow_none: bool = False) -> list:
    if value is None and allow_none:
        return []
    if not isinstance(value, list):
        raise NormaliseError("bad_shape", f"{what} is {type(value).__name__}, expected an array")
    return value


def opt_str(d: dict, key: str, *, max_len: int = 256) -> str | None:
    """A string field, or None when missing/null/empty. Numbers are accepted as text ids."""
    v = d.get(key)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise NormaliseError("bad_value", f"{key} is {type(v).__name__}, expected a string")
    s = str(v)
    if len(s) > max_len:
        raise NormaliseError("bad_value", f"{key} is longer than {max_len} characters")
    return s


def req_str(d: dict, key: str, *, max_len: int = 256) -> str:
    s = opt_str(d, key, max_len=max_len)
    if s is None:
        raise NormaliseError("missing_field", f"missing {key}")
    return s


def opt_count(d: dict, key: str) -> int:
    """A non-negative integer count; missing/null → 0 (providers omit zero counters)."""
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool):
        raise NormaliseError("bad_value", f"{key} is a boolean")
    if isinstance(v, str):  # OTLP encodes int64 as strings
        try:
            v = int(v)
        except ValueError:
            raise NormaliseError("bad_value", f"{key} {v[:20]!r} is not an integer") from None
    if isinstance(v, float):
        if not v.is_integer():
            raise NormaliseError("bad_value", f"{key} {v!r} is not an integer")
        v = int(v)
    if not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
        raise NormaliseError("bad_value", f"{key} {v!r} is not a count in 0..{MAX_COUNT}")
    return v


def money(value: Any, what: str, *, scale: Decimal = Decimal(1)) -> float:
    """A number or decimal string (Anthropic sends cents as strings) → float, divided by `scale`."""
    if isinstance(value, bool) or value is None:
        raise NormaliseError("bad_value", f"{what} is missing or not a number")
    try:
        d = Decimal(str(value)) if isinstance(value, (str, int, float)) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or abs(d) > Decimal(10**11):
        raise NormaliseError("bad_value", f"{what} {str(value)[:30]!r} is not a finite amount")
    return float(d / scale)


def ts_from_epoch_s(value: Any, what: str = "start_time") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NormaliseError("bad_value" if value is not None else "missing_field", f"{what} is not epoch seconds")
    return _check_ts(int(value * 1000), what)


def ts_from_nanos(value: Any, what: str) -> str:
    try:
        ns = int(value)
    except (TypeError, ValueError):
        raise NormaliseError("bad_value", f"{what} {str(value)[:30]!r} is not epoch nanoseconds") from None
    return _check_ts(ns // 1_000_000, what)


def ts_from_text(value: Any, what: str) -> str:
    """An RFC 3339 (or naive ISO, assumed UTC, as LiteLLM writes) time → contract string."""
    if not isinstance(value, str):
        raise NormaliseError("missing_field" if value is None else "bad_value", f"{what} is not a time string")
    text = value.strip().replace(" ", "T", 1)
    if "T" in text and not (text.endswith(("Z", "z")) or "+" in text[10:] or "-" in text[10:]):
        text += "Z"
    try:
        return format_ts(parse_ts(text))
    except ValueError as exc:
        raise NormaliseError("bad_value", f"{what}: {exc}") from None


def _check_ts(ms: int, what: str) -> str:
    try:
        return format_ts(parse_ts(ms))
    except (ValueError, OverflowError, OSError) as exc:
        raise NormaliseError("bad_value", f"{what}: {exc}") from None


def ip_or_none(value: Any) -> str | None:
    """An IP address, or None: CloudTrail puts service names (`bedrock.amazonaws.com`) here."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def country_or_none(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def safe_key_id(raw: str, fp_key: bytes) -> str:
    """A key id as given, or a keyed hash when the source only has the raw secret."""
    return fingerprint(raw, fp_key) if looks_like_secret(raw) else raw


def clip(value: Any, n: int) -> str | None:
    return value[:n] if isinstance(value, str) and value else None


def drop_none(d: dict) -> dict:
    """Omit absent optional fields (the decoder fills defaults; output stays compact)."""
    return {k: v for k, v in d.items() if v is not None}


def run_records(records: Iterable[Any], fn: Callable[[Any], Iterable[dict]]) -> Iterator[Output]:
    """Apply `fn` per record; a bad record becomes a `Rejected`, the rest still flow."""
    for rec in records:
        try:
            yield from list(fn(rec))
        except NormaliseError as exc:
            yield reject(exc, rec)
        except (TypeError, ValueError, AttributeError, KeyError, ArithmeticError) as exc:
            # A shape the accessors did not anticipate: still a dead letter, never a crash,
            # but with its own reason so that it shows up as a normaliser gap.
            yield Rejected("normalise:unexpected", f"{type(exc).__name__}: {exc}"[:500], _payload(rec))


def run_doc(doc: Any, split: Callable[[Any], Iterable[Any]], fn: Callable[[Any], Iterable[dict]]) -> Iterator[Output]:
    """Split a document into records (a malformed document is one `Rejected`), then `run_records`."""
    try:
        records = list(split(doc))
    except NormaliseError as exc:
        yield reject(exc, doc)
        return
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        yield Rejected("normalise:bad_shape", f"{type(exc).__name__}: {exc}"[:500], _payload(doc))
        return
    yield from run_records(records, fn)


def reject(exc: NormaliseError, rec: Any) -> Rejected:
    return Rejected(f"normalise:{exc.reason}", str(exc)[:500], _payload(rec))


def _payload(rec: Any) -> bytes:
    try:
        return orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS)[:4096]
    except (TypeError, orjson.JSONEncodeError):
        return repr(rec)[:4096].encode("utf-8", "replace")
