"""Key theft's project populations shared between workers (pure: no Kafka; the worker's
transport is stream/popshare.py).

A new key is judged against its project's population (`PopBaseline`): the networks, countries,
clients and models the project's other keys use, and how much the project has learned. Workers
of one group each hold only their partitions' keys, so each learned only its share of a
project, and a new key's ordinary caller looked new to it: with four workers the scenario suite
caught 10/12 new-key attacks (9/12 of the hard variant) with 1.1 false alerts per 1,000
key-days, where one process catches all with none. `PopulationShare.collect` turns what this
worker's populations learned since its last call into `PopulationDelta`s; `merge` learns
other workers' deltas, so every worker's populations learn from every key of the project.

What a delta carries: the caller items the population learned (value and last-seen hour, as
`pop_learn` stores them), the requests learned since the last delta (added up by the
receivers; a merge is not sent on again), the first time seen and the per-key rate.

>>> from keywatch.models.features import PopBaseline
>>> from keywatch.models.keytheft_identity import _ident_items, pop_learn
>>> a, b = {"p": PopBaseline()}, {}
>>> sa, sb = PopulationShare("a"), PopulationShare("b")
>>> pop_learn(a["p"], _ident_items("34.1.2.3", "US", "openai-python/1.50.0", None, "gpt-4o")[2], 3_600_000, 5)
>>> [d] = sa.collect(a); d.pop, d.learned, sorted({attr for attr, _, _ in d.items})
('p', 5, ['countries', 'models', 'n16', 'n24', 'ua_fam'])
>>> sb.merge(b, d); b["p"].learned, b["p"].first_ts, (34 << 8 | 1) in b["p"].ids.values("n16")
(5, 3600000, True)
>>> [(d.learned, len(d.items)) for d in sb.collect(b)]  # b's first call: items again, requests not
[(0, 5)]
>>> sb.collect(b), sa.collect(a)  # then nothing: what b merged is not sent back
([], [])
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from keywatch.models.features import PopBaseline
from keywatch.models.keyids import MASK, attr_of, tag

# The identity sets a population learns (`pop_learn`: not single addresses, not client versions).
SHARED_SETS = ("n24", "n16", "countries", "ua_fam", "models", "regions")
Attr = Literal["n24", "n16", "countries", "ua_fam", "models", "regions"]
# Set values are 32-bit hashes, networks (IPv6 folded to 32 bits) and hours, kept in 4-byte
# arrays (models/netnovelty.py `SeenSet`): a larger one is a bad delta, not a failed merge.
U32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]


class PopulationDelta(msgspec.Struct, frozen=True):
    """What one worker's population `pop` learned since its last delta (the topic's message)."""

    pop: Annotated[str, Meta(min_length=1, max_length=512)]
    learned: Annotated[int, Meta(ge=0)]
    first_ts: Annotated[int, Meta(ge=0)]
    key_rpm: Annotated[float, Meta(ge=0, le=1e9)]
    items: list[tuple[Attr, U32, U32]]  # (set, value, last-seen hour)
    origin: str = ""  # the sending worker (`PopulationShare.origin`): its own deltas are skipped
    group: str = ""  # its consumer group: another group's deltas (another deployment) are skipped


encode_delta = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(PopulationDelta)


def decode_delta(raw: bytes) -> PopulationDelta:
    """A message of the populations topic; raises `msgspec.ValidationError`/`DecodeError` if bad.

    >>> decode_delta(b'{"pop":"p","learned":1,"first_ts":0,"key_rpm":0,"items":[["tls",1,2]]}')
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: Invalid enum value 'tls' - at `$.items[0][0]`
    """
    return _decoder.decode(raw)


class PopulationShare:
    """One worker's side of the sharing. What it has told and been told is kept in each
    population (`PopBaseline.told`, restored with it from a snapshot; `.out`, not snapshotted)."""

    def __init__(self, origin: str, group: str = "") -> None:
        self.origin, self.group = origin, group

    def wants(self, d: PopulationDelta) -> bool:
        """Another worker's delta, of this worker's group."""
        return d.origin != self.origin and d.group == self.group

    def collect(self, pops: dict[str, PopBaseline]) -> list[PopulationDelta]:
        """Deltas of every population that learned since the last call, and from now on record
        what each learns (`PopBaseline.out`). A population not recorded yet (new, or restored
        from a snapshot) sends all it holds: items are idempotent, and `told` keeps requests
        from being sent twice."""
        out = []
        for name, pop in pops.items():
            box = pop.out
            delta = pop.learned - pop.told
            if box is None:
                pop.out = {}
                items = _all_items(pop)
                if not items and not delta:
                    continue
            elif box or delta:
                items = _recorded_items(box)
                box.clear()
            else:
                continue
            pop.told = pop.learned
            out.append(PopulationDelta(pop=name, learned=max(0, delta), first_ts=pop.first_ts,
                                       key_rpm=pop.key_rpm, items=items, origin=self.origin, group=self.group))
        return out

    def merge(self, pops: dict[str, PopBaseline], d: PopulationDelta) -> None:
        """Learn another worker's delta (the caller skips those it does not `want`)."""
        pop = pops.get(d.pop)
        if pop is None:
            pop = pops[d.pop] = PopBaseline()
        pop.learned += d.learned
        pop.told += d.learned  # known to the others already: not sent on
        if d.first_ts and (not pop.first_ts or d.first_ts < pop.first_ts):
            pop.first_ts = d.first_ts
        if not pop.key_rpm:
            pop.key_rpm = d.key_rpm
        merge = pop.ids.merge  # an older item never evicts a newer
        for attr, v, hour in d.items:
            merge(tag(attr, v), hour)


def _recorded_items(box: dict[tuple, int]) -> list[tuple[str, int, int]]:
    latest: dict[tuple[str, int], int] = {}
    for items, hour in box.items():
        for t in items:  # tagged values (models/keyids.py)
            attr, v = attr_of(t), t & MASK
            if attr != "ips" and attr != "ua_ver" and latest.get((attr, v), -1) < hour:
                latest[(attr, v)] = hour
    return [(attr, v, hour) for (attr, v), hour in latest.items()]


def _all_items(pop: PopBaseline) -> list[tuple[str, int, int]]:
    ids = pop.ids
    return [(attr, v, h) for attr in SHARED_SETS for v, h in zip(ids.values(attr), ids.hours(attr))]
