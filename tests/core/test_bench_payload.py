"""`python -m keywatch.bench_payload`: what a key's state holds as numbers, against its objects' bytes."""

import numpy as np

from keywatch.bench_memory import walk_sizes
from keywatch.bench_payload import payload_report
from keywatch.models.forecast import SeasonalBank


def test_payload_is_the_models_numbers_and_less_than_the_objects():
    out = payload_report(new_keys=300, busy_keys=300, minutes=20)
    for name, state in out.items():
        assert 0 < state["payload_bytes_per_key"] < state["allocated_bytes_per_key"], (name, state)
        assert 0 < state["pickled_bytes_per_key"] < state["allocated_bytes_per_key"], (name, state)
        for comp, c in state["components"].items():
            assert c["payload"] <= c["allocated"], (name, comp, c)
    new, busy, alone = out["new"], out["busy"], out["busy_alone_in_project"]
    # Root cause keeps a busy key's spend for each of its minutes (20 here): a float64 each at least.
    assert busy["components"]["CostSpikeDetector.rc"]["payload"] >= 8 * 20, busy
    # Alone in its project, a key carries the project's spend series and their scorer too.
    assert alone["payload_bytes_per_key"] > busy["payload_bytes_per_key"], out
    assert new["components"]["KeyTheftDetector.keys"]["payload"] > 0, new


def test_a_row_bank_counts_its_rows_in_use_not_its_spare_rows():
    bank = SeasonalBank(capacity=8)
    rows = [bank.add() for _ in range(5)]
    assert bank.cap == 8
    per_row = [a for a in vars(bank).values() if isinstance(a, np.ndarray) and a.base is None and 8 in (a.shape[0], a.shape[-1])]
    row_bytes = sum(a.nbytes for a in per_row)
    five = walk_sizes(bank)[1]
    bank.free.extend(rows[:4])  # four rows handed back: one of 8 in use
    one = walk_sizes(bank)[1]
    # 4 of 8 rows handed back: half the arrays' bytes less (the free list's four ints, ≤ 32 B, aside)
    assert abs((five - one) - row_bytes * 4 / 8) <= 32 + len(per_row), (five, one, row_bytes)
