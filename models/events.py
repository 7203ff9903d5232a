"""Canonical telemetry events (contract §1), validated by msgspec at decode time.

Every event is normalised on decode: ``ts`` becomes integer epoch milliseconds (`ts_ms`),
secret-looking key ids are replaced by a keyed fingerprint by the decoder, and range checks
(negative or absurd token counts, NaN, bad IPs, bad country codes) raise
`msgspec.ValidationError`, which the decoder turns into a dead letter.

>>> import msgspec
>>> ev = msgspec.json.decode(
...     b'{"kind":"usage","event_id":"e1","ts":"2026-11-25T16:00:00.123Z","provider":"openai",'
...     b'"key_id":"key_1","model":"gpt-4o","input_tokens":10}', type=Event)
>>> ev.ts_ms, ev.requests, ev.output_tokens
(1795622400123, 1, 0)
"""

from __future__ import annotations

from datetime import datetime
from math import isnan
from string import ascii_uppercase
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from keywatch.models.netnovelty import _NET_CACHE, net_parts

# Absolute bounds on event time: anything outside is not a real telemetry timestamp.
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_COUNT = 10**12  # tokens or requests in one event beyond this are absurd

EventId = Annotated[str, Meta(min_length=1, max_length=128)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
OptName = Union[Annotated[str, Meta(max_length=256)], None]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Requests = Annotated[int, Meta(ge=1, le=MAX_COUNT)]
Money = Annotated[float, Meta(ge=0, le=1e9)]
Timestamp = Union[int, str]
# ISO 3166 alpha-2 shape: two capital letters. The length is msgspec's check; the letters are
# looked up in `_COUNTRY_CODES` by `__post_init__` — a msgspec `pattern` calls Python's `re`
# for every value: decoding the bench's messages took 2.3 µs per event with it, 1.76 without.
Country = Union[Annotated[str, Meta(min_length=2, max_length=2)], None]
_COUNTRY_CODES = frozenset(a + b for a in ascii_uppercase for b in ascii_uppercase)


def parse_ts(value: int | str) -> int:
    """RFC 3339 string or epoch milliseconds → epoch milliseconds, within absolute bounds.

    >>> parse_ts("2026-11-25T16:00:00Z"), parse_ts(1795622400000)
    (1795622400000, 1795622400000)
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        ms = value
    else:
        text = value.strip()
        if len(text) > 40 or "T" not in text.upper():
            raise ValueError(f"ts {value[:40]!r} is not RFC 3339")
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"ts {value[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise ValueError(f"ts {value[:40]!r} has no time zone offset")
        ms = int(round(dt.timestamp() * 1000))
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(f"ts {value!r} is outside 2000-01-01..2100-01-01")
    return ms


def format_ts(ms: int) -> str:
    """Epoch milliseconds → RFC 3339 UTC with milliseconds (the contract's string form).

    >>> format_ts(1795622400123)
    '2026-11-25T16:00:00.123Z'
    """
    secs, rem = divmod(int(ms), 1000)
    return datetime.utcfromtimestamp(secs).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem:03d}Z"


def _check_ip(value: str | None) -> None:
    # Parsed once per distinct address: the parts are what key theft uses (models/netnovelty.py).
    if value is not None and value not in _NET_CACHE and net_parts(value) is None:
        raise ValueError(f"source_ip {value[:64]!r} is not an IPv4/IPv6 address")


def _bad_country(value: str) -> None:
    raise ValueError(f"country {value!r} is not an ISO 3166 alpha-2 code (two capital letters)")


# gc=False: events hold only scalars, so they can never be part of a reference cycle; not
# tracking them keeps the cyclic GC from walking every decoded event (halves GC time in a replay).
class _Base(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    event_id: EventId
    ts: Timestamp
    provider: Name
    key_id: Union[Annotated[str, Meta(min_length=1, max_length=256)], None] = None
    principal: OptName = None
    project: OptName = None
    # Extensions (optional, ignored by older consumers): where the record came from
    # (`gateway`, `provider_usage`, `cloudtrail`, `invocation_log`, …) and the provider's
    # request id, used to join sources.
    source: OptName = None
    request_id: OptName = None
    # How the caller authenticated, where the source says (`bedrock_api_key` for a Bedrock
    # long-term API key used as a bearer token, `access_key`, `session`, …).
    credential_type: OptName = None
    ts_ms: int = 0  # set in __post_init__; not part of the input

    def __post_init__(self) -> None:
        ts = self.ts
        # Fast path for the common form (integer epoch ms in range); everything else is checked in full.
        self.ts_ms = ts if ts.__class__ is int and MIN_TS_MS <= ts < MAX_TS_MS else parse_ts(ts)


class UsageEvent(_Base, tag="usage", tag_field="kind"):
    model: Name = ""  # required: checked in __post_init__ for a clear message
    operation: OptName = None
    requests: Requests = 1
    input_tokens: Count = 0
    output_tokens: Count = 0
    cached_input_tokens: Count = 0
    cost_usd: Union[Money, None] = None
    source_ip: Union[Annotated[str, Meta(max_length=64)], None] = None
    user_agent: Union[Annotated[str, Meta(max_length=1024)], None] = None
    region: OptName = None
    country: Country = None
    status: Union[Annotated[int, Meta(ge=0, le=999)], None] = None
    error_code: OptName = None
    latency_ms: Union[Annotated[float, Meta(ge=0, le=86_400_000)], None] = None
    # Set by enrichment (price table), not by producers.
    price_source: OptName = None
    # Set by the ClickHouse sink from its batch's offsets (where the row came from), whatever a
    # producer sent: typed `Any` so that a producer's own field of that name is ignored, as any
    # unknown field is, rather than turning its event into a dead letter.
    kafka_partition: Any = -1
    kafka_offset: Any = -1

    def __post_init__(self) -> None:
        # `_Base.__post_init__` inlined (hot: once per decoded event); same checks, same order.
        ts = self.ts
        self.ts_ms = ts if ts.__class__ is int and MIN_TS_MS <= ts < MAX_TS_MS else parse_ts(ts)
        if not self.model:
            raise ValueError("usage event needs `model`")
        if self.key_id is None:
            raise ValueError("usage event needs `key_id`")
        cost = self.cost_usd
        if cost is not None and isnan(cost):
            raise ValueError("cost_usd is NaN")
        ip = self.source_ip
        if ip is not None and ip not in _NET_CACHE:
            _check_ip(ip)
        country = self.country
        if country is not None and country not in _COUNTRY_CODES:
            _bad_country(country)

    @property
    def is_error(self) -> bool:
        return self.error_code is not None or (self.status is not None and self.status >= 400)


class AuditEvent(_Base, tag="audit", tag_field="kind"):
    action: Name = ""
    source_ip: Union[Annotated[str, Meta(max_length=64)], None] = None
    user_agent: Union[Annotated[str, Meta(max_length=1024)], None] = None
    region: OptName = None
    error_code: OptName = None
    country: Country = None

    def __post_init__(self) -> None:
        ts = self.ts  # `_Base.__post_init__` inlined, as in `UsageEvent`
        self.ts_ms = ts if ts.__class__ is int and MIN_TS_MS <= ts < MAX_TS_MS else parse_ts(ts)
        if not self.action:
            raise ValueError("audit event needs `action`")
        _check_ip(self.source_ip)
        country = self.country
        if country is not None and country not in _COUNTRY_CODES:
            _bad_country(country)


class BillingEvent(_Base, tag="billing", tag_field="kind"):
    amount_usd: Union[Annotated[float, Meta(ge=-1e9, le=1e9)], None] = None  # credits may be negative
    period_end: Union[Timestamp, None] = None
    scope: OptName = None
    line_item: OptName = None
    period_end_ms: Union[int, None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.amount_usd is None or isnan(self.amount_usd):
            raise ValueError("billing event needs a numeric `amount_usd`")
        if self.period_end is not None:
            self.period_end_ms = parse_ts(self.period_end)
            if self.period_end_ms < self.ts_ms:
                raise ValueError("billing period_end is before ts (period start)")


Event = Union[UsageEvent, AuditEvent, BillingEvent]


# Detection keys its state by events' text fields (provider, key, project, model, caller).
# Decoding makes a new string object per field per event, its hash not yet computed: each dict
# lookup by a tuple of them hashed and compared them afresh, in memory the batch had left cold.
# One object per distinct value keeps its hash, stays in cache, and is held once by the state
# keyed by it (session 16: detection's CPU per event −35 % in a one-off in-process run).
_SHARED: dict = {}
SHARED_MAX = 500_000  # distinct values; past it the table starts again (only sharing is lost)


def share_text(events: list) -> None:
    """Give usage and audit events' equal text fields one string object per distinct value.
    Values do not change. The decoder calls it after scrubbing secrets, so none is ever kept here.

    >>> a, b = (msgspec.json.decode(b'{"kind":"usage","event_id":"e%d","ts":1795622400000,"provider":"openai",'
    ...                            b'"key_id":"k1","model":"gpt-4o","user_agent":"sdk/1.0"}' % i, type=Event) for i in (1, 2))
    >>> a.key_id is b.key_id, a.user_agent is b.user_agent
    (False, False)
    >>> share_text([a, b]); a.key_id is b.key_id, a.user_agent is b.user_agent, a.model is b.model, b.key_id
    (True, True, True, 'k1')
    """
    shared = _SHARED
    if len(shared) > SHARED_MAX:
        shared.clear()
    one = shared.setdefault
    for e in events:
        if e.__class__ is UsageEvent:
            p, k, proj, m = e.provider, e.key_id, e.project, e.model
            e.provider, e.key_id, e.project, e.model = one(p, p), one(k, k), one(proj, proj), one(m, m)
            src, ip, ua, cc, reg = e.source, e.source_ip, e.user_agent, e.country, e.region
            e.source, e.source_ip, e.user_agent, e.country, e.region = one(src, src), one(ip, ip), one(ua, ua), one(cc, cc), one(reg, reg)
        elif e.__class__ is AuditEvent:  # key theft's audit trail: the same caller fields, and the principal
            p, k, proj, who = e.provider, e.key_id, e.project, e.principal
            e.provider, e.key_id, e.project, e.principal = one(p, p), one(k, k), one(proj, proj), one(who, who)
            ip, ua, cc, reg = e.source_ip, e.user_agent, e.country, e.region
            e.source_ip, e.user_agent, e.country, e.region = one(ip, ip), one(ua, ua), one(cc, cc), one(reg, reg)


KINDS: tuple[Literal["usage", "audit", "billing"], ...] = ("usage", "audit", "billing")


def to_dict(event: Event) -> dict:
    """The event as a contract-shaped dict (``kind`` included, internal fields dropped)."""
    d = msgspec.to_builtins(event)
    for internal in ("ts_ms", "period_end_ms", "kafka_partition", "kafka_offset"):
        d.pop(internal, None)
    return d
