"""A key's networks of the last calls (`KeyState.recent16`) as a flat tuple: the same networks,
order, evictions and counts as the dict it replaced, and snapshots hold that dict."""

from __future__ import annotations

import pickle
import random

from keywatch.models.features import KeyBaseline
from keywatch.models.keytheft_nets import touch16
from keywatch.models.keytheft_state import KeyState


def _dict_touch(r: dict, n16: int, ts: int) -> None:
    """What `touch_net` did to the dict."""
    r[n16] = ts
    if len(r) > 16:
        del r[min(r, key=r.__getitem__)]


def test_the_tuple_follows_the_dict_call_for_call():
    rnd = random.Random(11)
    ref, r, ts = {}, (), 1_000_000
    for i in range(20_000):
        ts += rnd.choice((0, 0, 1, 500, 60_000))  # equal times too: evictions must pick the same one
        n16 = rnd.randrange(3) if i % 3 else rnd.randrange(40)
        _dict_touch(ref, n16, ts)
        r = touch16(r, n16, ts)
        assert r == tuple(x for item in ref.items() for x in item)
        if i % 97 == 0:
            st = KeyState(KeyBaseline("openai", "p"))
            st.recent16 = r
            lim = ts - 300_000
            assert st.nets_active(ts) == len([t for t in ref.values() if t >= lim])


def test_snapshots_hold_the_dict_and_load_it_back():
    st = KeyState(KeyBaseline("openai", "p"))
    for n16, ts in ((5, 1_000), (9, 2_000), (5, 3_000)):
        st.touch_net(n16, ts)
    assert st.recent16 == (5, 3_000, 9, 2_000) and st.nets_active(3_000) == 2
    state = st.__getstate__()
    assert state[2] == {5: 3_000, 9: 2_000}  # the format older code reads
    back = pickle.loads(pickle.dumps(st))
    assert back.recent16 == st.recent16
    older = KeyState.__new__(KeyState)  # the oldest format: (None, {slot: value})
    older.__setstate__((None, {"base": st.base, "recent16": {5: 3_000, 9: 2_000}, "ev": None}))
    assert older.recent16 == (5, 3_000, 9, 2_000)
    empty = pickle.loads(pickle.dumps(KeyState(KeyBaseline("openai", "p"))))
    assert empty.recent16 == () and empty.__getstate__()[2] is None
