"""A key's networks of its last calls (`KeyState.recent16`): a flat tuple (network, last seen,
…), for the concurrency signal (networks active in the last 5 minutes) and the window model's
feature. A tuple in first-seen order, as the dict it replaced kept them: 88 bytes for one
network, where the dict took 256 (session 25). Snapshots hold the dict (`flat16` reads it).
"""

from __future__ import annotations


def touch16(r: tuple, n16: int, ts: int) -> tuple:
    """`KeyState.recent16` once network `n16` is seen at `ts`. A flat tuple (n16, last seen, …)
    in first-seen order, as the dict it replaced kept them (88 bytes for one network, where the
    dict took 256): a network seen again keeps its place, past 16 the least recent goes (the
    first of equals, as `min` over that dict gave).

    >>> r = touch16(touch16(touch16((), 7, 100), 9, 200), 7, 300); r
    (7, 300, 9, 200)
    >>> r = ()
    >>> for n in range(17): r = touch16(r, n, 1000 + n % 2)
    >>> r[:4], len(r)
    ((1, 1001, 2, 1000), 32)
    """
    if len(r) == 2 and r[0] == n16:  # one network, this one: the usual case
        return (n16, ts)
    for i in range(0, len(r), 2):
        if r[i] == n16:
            return r[:i + 1] + (ts,) + r[i + 2:]
    r += (n16, ts)
    if len(r) > 32:
        seen = r[1::2]
        j = 2 * seen.index(min(seen))
        r = r[:j] + r[j + 2:]
    return r


def flat16(recent: dict | None) -> tuple:
    """`recent16` from the dict snapshots hold it as (network → last seen, in its order)."""
    return tuple(x for item in recent.items() for x in item) if recent else ()
