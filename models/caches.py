"""The hot path's module-level caches let go, once an hour of event time, of what idle keys left.

The decoder's shared text values (`events._SHARED`) and key theft's caller caches (`_IDENT`,
`_NETS`, `_NET_CACHE`) are bounded (100k–500k entries) and start again only when full: until
then they hold every caller seen, ≈ 0.4 KB a key at 100k keys with a few callers each, most of
them keys idle for hours (their state packed, models/spill.py). So each hour (`hourly`, from key
theft's sweep) the caller caches start again — an active caller is looked up afresh once, a few
µs — and the shared text keeps only values something else still holds (a key id in a detector's
state, a model name): an address only these caches held goes. Detection does not change: every
one of these is a cache (tests/core/test_cache_transparency.py).

A cache of fewer than `DROP_MIN` entries is kept (since session 27): it holds ≲ 0.5 MB, and
dropping it costs a re-lookup of each of its callers still active, which a backlog, running
through an hour of event time in seconds, paid every few seconds (≈ 2 % of its CPU).

>>> from keywatch.models import events
>>> held = "".join(["model-", "x"]); events._SHARED.update({held: held, "10.9.8.7": "10.9.8.7"})
>>> drop_unused(minimum=0); held in events._SHARED, "10.9.8.7" in events._SHARED
(True, False)
"""

from __future__ import annotations

import sys

from keywatch.models import events, keytheft_identity, netnovelty

# A shared value held by nothing else has, in `drop_unused`'s list comprehension, these
# references: its dict entry's key and value, the list copy, the loop variable, the call's argument.
_CACHE_REFS = 5
DROP_MIN = 1_000  # entries: a smaller cache is kept (an entry ≈ 0.1–0.5 KB)
_last_hour = -1


def hourly(hour: int) -> bool:
    """Call with the hour of event time; drops once per new hour (not the process's first)."""
    global _last_hour
    if hour <= _last_hour:
        return False
    first, _last_hour = _last_hour < 0, hour
    if not first:
        drop_unused()
    return not first


def drop_unused(minimum: int | None = None) -> None:
    """The caller caches of `minimum` (`DROP_MIN`) entries or more start again; such shared text
    keeps the values held elsewhere. In place: other modules hold these dicts, and the decoder
    may add to `_SHARED` meanwhile (a value added between the copy and the refill is only not
    shared)."""
    least = DROP_MIN if minimum is None else minimum
    for cache in (keytheft_identity._IDENT, keytheft_identity._NETS, netnovelty._NET_CACHE):
        if len(cache) >= least:
            cache.clear()
    shared = events._SHARED
    if len(shared) < least:
        return
    keep = [v for v in list(shared) if sys.getrefcount(v) > _CACHE_REFS]
    shared.clear()  # frees the table too: a dict never shrinks as entries are deleted
    shared.update(zip(keep, keep))
