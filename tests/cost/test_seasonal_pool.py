"""`SeasonalBank` holds a row's hour-of-week profile by weekday, in a pool of day tables
(models/forecast_store.py): the same numbers as seven tables a row, less memory for young rows."""

from __future__ import annotations

import pickle

import numpy as np

from keywatch.models.forecast import HOW_OFFSET, SeasonalBank

DAY = 1440


def _dense_state(bank: SeasonalBank, r: int) -> tuple:
    prof, cnt = bank.row_profile(r)
    return prof.tobytes(), cnt.tobytes(), float(bank.lvl_mu[r]), float(bank.lvl_dev[r]), int(bank.age[r])


def _run(bank: SeasonalBank, minutes: range, rng, rows: list[int], learn_every: int = 1) -> list:
    out = []
    for t in minutes:
        x = rng.gamma(2.0, 0.5, bank.n) * (rng.random(bank.n) < 0.6)
        learn = None if t % learn_every else (rng.random(bank.n) < 0.8)
        out.append(bank.step(t, x, learn=learn))
    return out


def test_a_row_takes_a_day_table_per_weekday_it_learns_on_and_gives_them_back():
    b = SeasonalBank()
    r = b.add()
    for t in range(3 * 60):  # three hours of one weekday
        b.step(t, np.array([1.0]))
    assert int((b.wslot[:, r] > 0).sum()) == 1 and b.wn == 2
    for t in range(3 * 60, 2 * DAY + 60):  # into the third weekday
        b.step(t, np.array([1.0]))
    assert int((b.wslot[:, r] > 0).sum()) == 3 and b.wn == 4
    b.remove(r)
    assert not b.wslot[:, r].any() and sorted(b.wfree) == [1, 2, 3]
    r2 = b.add()  # the freed row and its tables are reused, zeroed
    b.step(2 * DAY + 60, np.array([5.0]))
    assert r2 == r and b.wn == 4 and len(b.wfree) == 2
    prof, cnt = b.row_profile(r2)
    assert int(cnt.sum()) == 2 and np.count_nonzero(prof[1:]) == 1  # only this minute's bins learnt


def test_rows_not_learning_take_no_table_and_read_zeros():
    b = SeasonalBank()
    rows = [b.add() for _ in range(3)]
    b.step(0, np.array([1.0, 2.0, 3.0]), learn=np.array([True, False, True]))
    assert (b.wslot[:, rows] > 0).sum(axis=0).tolist() == [1, 0, 1]
    exp, _ = b.forecast(1, rows)
    assert np.allclose(exp, [1.0, 0.0, 3.0]) and exp[1] == 0.0


def test_a_young_row_holds_a_quarter_of_a_dense_one():
    b = SeasonalBank(capacity=1)
    for _ in range(4096):
        b.add()
    b.step(0, np.ones(b.n))
    per_row = b.nbytes() / b.cap
    # Seven day tables, the day profile and the row's numbers, dense: 1,728 + 65 bytes.
    assert per_row < 600, per_row


def test_snapshots_round_trip_in_the_dense_format_and_steps_go_on_alike():
    rng = np.random.default_rng(3)
    b = SeasonalBank(warmup_units=30)
    rows = [b.add() for _ in range(5)]
    _run(b, range(0, 3 * DAY + 77), rng, rows, learn_every=7)
    b.remove(rows[2])
    st = b.__getstate__()
    assert {"how_mu", "how_n", "hod_mu"} <= set(st["_packed"]) and "week" not in st and "wslot" not in st
    dtype, shape, _ = st["_packed"]["how_mu"]
    assert shape == (168,) and np.dtype(dtype) == np.float32  # the format of the bank before the pool
    twin = pickle.loads(pickle.dumps(b))
    for r in rows:
        assert _dense_state(twin, r) == _dense_state(b, r)
    assert twin.wn <= b.wn and twin.free == b.free
    a1, a2 = np.random.default_rng(9), np.random.default_rng(9)
    out1, out2 = _run(b, range(3 * DAY + 77, 5 * DAY), a1, rows), _run(twin, range(3 * DAY + 77, 5 * DAY), a2, rows)
    assert all((x == y).all() for o1, o2 in zip(out1, out2) for x, y in zip(o1, o2))
    for r in rows:
        assert _dense_state(twin, r) == _dense_state(b, r)


def test_a_dense_snapshot_loads_into_the_pool():
    """A snapshot of the bank before the pool: arrays by name, rows × bins."""
    rng = np.random.default_rng(5)
    b = SeasonalBank()
    rows = [b.add() for _ in range(4)]
    _run(b, range(0, 2 * DAY + 30), rng, rows)
    st = b.__getstate__()
    import zlib

    how_mu = np.frombuffer(zlib.decompress(st["_packed"]["how_mu"][2]), np.float32).reshape(-1, 7, 24)
    learnt = sorted({(t // 60 + HOW_OFFSET) % 168 // 24 for t in range(2 * DAY + 30)})
    assert len(learnt) == 3 and np.count_nonzero(how_mu[:, learnt]) > 0
    assert not np.delete(how_mu, learnt, axis=1).any()
    loaded = SeasonalBank.__new__(SeasonalBank)
    loaded.__setstate__(st)
    assert int((loaded.wslot[:, rows] > 0).sum()) == 4 * 3  # three weekdays learnt, no table for the others
    for r in rows:
        assert _dense_state(loaded, r) == _dense_state(b, r)
    t = 2 * DAY + 30
    assert (loaded.forecast_many([t, t + 600, t + DAY], rows) == b.forecast_many([t, t + 600, t + DAY], rows)).all()
