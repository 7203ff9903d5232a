"""Idle keys' key-theft state, packed: what a snapshot stores, not ≈ 2.4 KB of objects.

Most tracked keys are idle at any time (a key stays tracked for `KEYWATCH_KEY_IDLE_EXPIRE_S`,
7 days, after its last call), and a key's `KeyState` as objects is ≈ 2.4 KB: two slotted
objects of ≈ 40 Python numbers, its hourly arrays, its identity sets and active networks.
Pickled and compressed it is ≈ 0.4 KB. So at the 10-minute sweep, a key idle for
`KEYWATCH_KEY_COLD_AFTER_S` (an hour) is packed (`pack`), and unpacked (`unpack`) at its next
event, before that event is processed: ≈ 80 and ≈ 50 µs in a replay, once per idle spell.

Detection does not change. Only keys with nothing transient are packed: no open evidence, and
no cached caller (the sweep drops those of an earlier hour; `KeyState.fresh`, `last_items` are
all a pickle leaves out). Every other field pickles exactly (packed records of float64 and
int64, arrays, an insertion-ordered dict), and nothing but the detector's own dicts refers to a
key's state. The blob starts with the baseline's `last_ts`: the detector's `SpillDict`
(models/spill.py), which keeps the blobs on disk, keeps that in memory, so the sweep can expire
a packed key after `KEYWATCH_KEY_IDLE_EXPIRE_S` without reading the others.

>>> from keywatch.models.features import KeyBaseline
>>> from keywatch.models.keytheft_state import KeyState
>>> st = KeyState(KeyBaseline("openai", "p"))
>>> st.count(1_000, 1.0, 0.25, False, False); st.base.last_ts = 1_000
>>> blob = pack(st)
>>> packed_last_ts(blob), unpack(blob).k60, len(blob) < 300
(1000, 0.25, True)
>>> idle_enough(st, now=1_000 + 3_600_000, after_ms=3_600_000), idle_enough(st, now=2_000, after_ms=3_600_000)
(True, False)
"""

from __future__ import annotations

import pickle
import zlib

from keywatch.models.keytheft_state import KeyState
from keywatch.models.keytheft_zdict import CURRENT, DICTIONARIES

_HEAD = 8  # the baseline's last_ts, little-endian int64
_FDICT = 0x20  # RFC 1950: the stream's second byte has this bit when it needs a preset dictionary


def pack(st: KeyState) -> bytes:
    """`st` as bytes: its baseline's `last_ts`, then the pickle compressed with the preset
    dictionary (models/keytheft_zdict.py; level 1: 3 % larger than level 6, and faster)."""
    z = zlib.compressobj(1, zdict=CURRENT)
    return st.base.last_ts.to_bytes(_HEAD, "little", signed=True) + z.compress(pickle.dumps(st, protocol=5)) + z.flush()


def unpack(blob: bytes) -> KeyState:
    data = memoryview(blob)[_HEAD:]
    if data[1] & _FDICT:  # the stream names its dictionary by Adler-32 (bytes 2–5)
        dict_id = int.from_bytes(data[2:6], "big")
        zdict = DICTIONARIES.get(dict_id)
        if zdict is None:
            raise ValueError(f"packed key state needs preset dictionary {dict_id}, "
                             "which this version does not have (models/keytheft_zdict.py)")
        z = zlib.decompressobj(zdict=zdict)
        raw = z.decompress(data) + z.flush()
    else:  # packed before there was a dictionary (older snapshots)
        raw = zlib.decompress(data)
    return pickle.loads(raw)  # noqa: S301 - our own, made by `pack`


def packed_last_ts(blob: bytes) -> int:
    return int.from_bytes(blob[:_HEAD], "little", signed=True)


def idle_enough(st: KeyState, now: int, after_ms: int) -> bool:
    """May `st` be packed at `now`: idle `after_ms` (by its last event and its baseline's), with
    no open evidence and no cached caller, so a pickle round trip gives the same state."""
    last = st.t_last if st.t_last > st.base.last_ts else st.base.last_ts
    return (0 < after_ms <= now - last and st.ev is None and st.fresh is None and not st.last_items)


def expired(heads, now: int, expire_ms: int) -> tuple[int, list]:
    """(the least `last_ts` > 0 of the packed keys that stay, the keys idle over `expire_ms`):
    what the sweep's test of an unpacked key (`now - base.last_ts > expire_ms`) picks. `heads`:
    (key, `packed_last_ts`) pairs (`SpillDict.heads`: kept in memory, the blobs not read)."""
    due, low = [], 1 << 62
    for k, t in heads:
        if t and now - t > expire_ms:
            due.append(k)
        elif 0 < t < low:
            low = t
    return low, due
