"""`RowBank`: per-series state as rows of numpy arrays, handed out and taken back.

Shared by `SeasonalBank` (forecast.py) and `UnivariateBank` (univariate_bank.py): a freed row
goes on a free list and is reused first; when every row is taken the arrays grow (double, and
by a quarter past 4096 rows). Subclasses keep `n` (rows ever handed out), `cap` and `free`, and
implement `_alloc(cap)` with `_grow`.

>>> import numpy as np
>>> class Bank(RowBank):
...     def __init__(self): self.n, self.free = 0, []; self._alloc(1)
...     def _alloc(self, cap): self._grow("x", (cap, 2), np.float64, -1.0); self.cap = cap
>>> b = Bank(); rows = [b._take_row() for _ in range(3)]
>>> rows, b.cap, b.x.shape, float(b.x[2, 0])
([0, 1, 2], 4, (4, 2), -1.0)
>>> b.free.append(1); b._take_row()
1
"""

from __future__ import annotations

import numpy as np


class RowBank:
    n: int
    cap: int
    free: list[int]

    def _alloc(self, cap: int) -> None:
        raise NotImplementedError

    def _grow(self, name: str, shape: tuple[int, ...], dtype=np.float64, fill: float = 0) -> None:
        """Array `name` with `shape` (first axis: rows), its existing rows copied over."""
        new = np.full(shape, fill, dtype)
        old = getattr(self, name, None)
        if old is not None:
            new[: len(old)] = old
        setattr(self, name, new)

    def _take_row(self) -> int:
        """A free row number (its contents are the caller's to reset)."""
        if self.free:
            return self.free.pop()
        if self.n == self.cap:
            # Past a few thousand rows a bank grows by a quarter, not twice: spare rows are ≈ 1.8
            # KB each in a `SeasonalBank` (a doubled bank of 100k key rows held 31k spare, 56 MB),
            # and the more frequent copies are rare all the same (≈ 40 to reach 100k rows).
            self._alloc(self.cap * 2 if self.cap < 4096 else self.cap + self.cap // 4)
        r, self.n = self.n, self.n + 1
        return r
