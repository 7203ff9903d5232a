"""River's HalfSpaceTrees, walked fast and built without importing River.

`WindowModel` (calibration) scores and learns one key-minute at a time with River's
half-space trees. River walks its trees node object by node object, and importing it pulls in
SciPy (≈ 0.8 s per process). Here:

- `LazyHST` stands in for a fresh `river.anomaly.HalfSpaceTrees`: the same parameters, the same
  `random.Random(seed)` draws in the same order (`padded_trees` is River's `make_padded_tree`),
  so the same trees. `to_river` turns it into River's object when state is pickled (snapshots
  keep River's format; River is imported only then).
- `FlatTrees` mirrors the trees (River's own or these) in flat lists and walks them with the
  same arithmetic as `river.anomaly.hst._walk_score` / `_walk_learn`.

>>> hst = LazyHST(n_trees=2, height=3, window_size=4, seed=7)
>>> hst.build(("b", "a"))
>>> [n.feature for n in hst.trees[0].iter_dfs() if hasattr(n, "children")][:3]
['a', 'b', 'a']
>>> flat = FlatTrees(hst, ("a", "b"))
>>> for x in [(0.1, 0.2)] * 4: flat.learn(x)
>>> flat.pivot(); round(flat.score((0.1, 0.2), learn=False), 3), round(flat.score((0.9, 0.9), learn=False), 3)  # River: (0.0, 0.933)
(0.0, 0.933)
"""

from __future__ import annotations

import random
from bisect import bisect_right as _bisect_right


class _Branch:
    __slots__ = ("children", "feature", "threshold", "l_mass", "r_mass")

    def __init__(self, left, right, feature: str, threshold: float) -> None:
        self.children = (left, right)
        self.feature, self.threshold = feature, threshold
        self.l_mass = self.r_mass = 0

    def iter_dfs(self):
        yield self
        for c in self.children:
            yield from c.iter_dfs()


class _Leaf:
    __slots__ = ("l_mass", "r_mass")

    def __init__(self) -> None:
        self.l_mass = self.r_mass = 0

    def iter_dfs(self):
        yield self


def padded_trees(limits: dict, height: int, padding: float, rng: random.Random):
    """`river.tree.padded.make_padded_tree`: the same draws in the same order."""
    if height == 0:
        return _Leaf()
    on = rng.choices(population=list(limits.keys()), weights=[limits[i][1] - limits[i][0] for i in limits])[0]
    a, b = limits[on][0], limits[on][1]
    at = rng.uniform(a + padding * (b - a), b - padding * (b - a))
    tmp = limits[on]
    limits[on] = (tmp[0], at)
    left = padded_trees(limits, height - 1, padding, rng)
    limits[on] = tmp
    limits[on] = (at, tmp[1])
    right = padded_trees(limits, height - 1, padding, rng)
    limits[on] = tmp
    return _Branch(left, right, on, at)


class LazyHST:
    """What `WindowModel` uses of a `river.anomaly.HalfSpaceTrees` (every feature in [0, 1])."""

    def __init__(self, n_trees: int, height: int, window_size: int, seed: int | None) -> None:
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        self.rng = random.Random(seed)
        self.trees: list = []
        self.counter = 0
        self._first_window = True

    @property
    def _max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    def build(self, features) -> None:
        """River builds its trees on the first `learn_one(x)`, over `sorted(x)`."""
        self.trees = [padded_trees({f: (0.0, 1.0) for f in sorted(features)}, self.height, 0.15, self.rng)
                      for _ in range(self.n_trees)]

    def to_river(self, features, flat: FlatTrees | None):
        """River's object in the same state (`flat`: the masses, when the trees are built)."""
        from river import anomaly
        from river.tree.padded import make_padded_tree

        hst = anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height, window_size=self.window_size,
                                     seed=self.seed, limits={f: (0.0, 1.0) for f in features})
        if self.trees:  # as `learn_one` builds them
            hst.trees = [make_padded_tree(limits={i: hst.limits[i] for i in sorted(features)}, height=hst.height,
                                          padding=0.15, rng=hst.rng, r_mass=0, l_mass=0) for _ in range(hst.n_trees)]
            hst._tree_nodes = [list(t.iter_dfs()) for t in hst.trees]
            mine = [(n.feature, n.threshold) for t in self.trees for n in t.iter_dfs() if hasattr(n, "children")]
            if mine != [(n.feature, n.threshold) for t in hst.trees for n in t.iter_dfs() if hasattr(n, "children")]:
                raise RuntimeError("half-space trees differ from River's")
            if flat is not None:
                FlatTrees(hst, features).take(flat)
        hst.counter, hst._first_window = self.counter, self._first_window
        return hst


class FlatTrees:
    """Half-space trees as flat lists, numbered breadth-first per tree (a node's two children
    are adjacent). `nav[i]` = (feature index, threshold, left child). River's `_walk_score` adds
    r_mass · 2^depth per node down to the first node under the size limit (`0.1 · window_size`),
    or to the leaf; `_walk_learn` adds 1 to l_mass along the whole path. A node's
    l_mass is the sum of its children's (every walk goes to a leaf), so only the leaves are
    counted here and the rest is summed when the window pivots or state is saved (`sync`).

    A path ends at one leaf, so its score is known per leaf (`leaf_score`, summed in River's
    order when the masses pivot). Which way `x` goes at every node depends only on where each
    feature falls among that feature's thresholds (`bisect_right`; NaN, never below a threshold,
    falls after them all), so the leaves are cached by those positions: most windows look like
    earlier ones."""

    __slots__ = ("nodes", "roots", "kids", "depth", "split", "nav", "lm", "rm", "height", "size_limit", "max_score",
                 "cuts", "leaves", "leaf_score")
    MAX_PATHS = 50_000

    def __init__(self, hst, features) -> None:
        self.nodes, self.roots, self.kids, self.depth = [], [], [], []
        for root in hst.trees:
            self.roots.append(len(self.nodes))
            level, d = [root], 0
            while level:
                first_child = len(self.nodes) + len(level)
                for node in level:
                    branch = hasattr(node, "children")
                    self.nodes.append(node)
                    self.depth.append(d)
                    self.kids.append(first_child if branch else -1)
                    first_child += 2 if branch else 0
                level, d = [c for node in level for c in getattr(node, "children", ())], d + 1
        self.height = hst.height
        self.size_limit = 0.1 * hst.window_size
        self.max_score = hst._max_score
        full = [n.l_mass for n in self.nodes]
        if full != self._summed(full) or any(d != self.height for d, k in zip(self.depth, self.kids) if k < 0):
            raise ValueError("not complete trees with root-to-leaf masses")
        self.lm = [m if k < 0 else 0 for m, k in zip(full, self.kids)]
        self.rm = [n.r_mass for n in self.nodes]
        features = list(features)
        self.split = [(features.index(n.feature), n.threshold) if k >= 0 else (-1, 0.0) for n, k in zip(self.nodes, self.kids)]
        self.nav = [(f, t, k) for (f, t), k in zip(self.split, self.kids)]
        self.cuts = [sorted({t for f, t in self.split if f == i}) for i in range(len(features))]
        self.leaves: dict[tuple, tuple] = {}  # feature positions → the leaf reached in each tree
        self._weigh()

    def _weigh(self) -> None:
        """`_walk_score` per path, top-down (parents come before their children): s = 0.0, then
        += r_mass · 2^depth per node, ending after a node under the size limit."""
        rm, depth, limit = self.rm, self.depth, self.size_limit
        acc, ended = [0.0] * len(rm), [False] * len(rm)
        for n in self.roots:
            r = rm[n]
            acc[n], ended[n] = 0.0 + r * (1 << depth[n]), r < limit
        for n, k in enumerate(self.kids):
            if k >= 0:
                a = acc[n]
                if ended[n]:
                    acc[k] = acc[k + 1] = a
                    ended[k] = ended[k + 1] = True
                else:
                    r = rm[k]
                    acc[k], ended[k] = a + r * (1 << depth[k]), r < limit
                    r = rm[k + 1]
                    acc[k + 1], ended[k + 1] = a + r * (1 << depth[k + 1]), r < limit
        self.leaf_score = acc

    def _summed(self, lm: list) -> list:
        """The masses of all nodes from the leaves' (a node's children are numbered after it)."""
        full = list(lm)
        kids = self.kids
        for i in range(len(full) - 1, -1, -1):
            k = kids[i]
            if k >= 0:
                full[i] = full[k] + full[k + 1]
        return full

    def pivot(self) -> None:
        """River's window pivot: the window's masses become the reference, learning starts over."""
        self.rm = self._summed(self.lm)
        self.lm = [0] * len(self.rm)
        self._weigh()

    def _walk(self, xv: tuple, key: tuple) -> tuple:
        """The leaf `xv` reaches in each tree, cached under its feature positions `key`."""
        nav, height = self.nav, self.height
        leaves = []
        for n in self.roots:
            for _ in range(height):
                f, t, k = nav[n]
                n = k if xv[f] < t else k + 1
            leaves.append(n)
        if len(self.leaves) >= self.MAX_PATHS:
            self.leaves.clear()
        hit = self.leaves[key] = tuple(leaves)
        return hit

    def score(self, xv: tuple, learn: bool) -> float:
        """River's `score_one(x)`, then `learn_one(x)`'s mass updates when `learn`."""
        key = tuple(map(_bisect_right, self.cuts, xv))
        leaves = self.leaves.get(key) or self._walk(xv, key)
        leaf_score = self.leaf_score
        score = 0.0
        for n in leaves:  # River's order: tree by tree
            score += leaf_score[n]
        if learn:
            lm = self.lm
            for n in leaves:
                lm[n] += 1
        return 1 - score / self.max_score

    def learn(self, xv: tuple) -> None:
        key = tuple(map(_bisect_right, self.cuts, xv))
        lm = self.lm
        for n in self.leaves.get(key) or self._walk(xv, key):
            lm[n] += 1

    def sync(self) -> None:
        """Write the masses back into the tree nodes (before pickling)."""
        for node, lm, rm in zip(self.nodes, self._summed(self.lm), self.rm):
            node.l_mass = lm
            node.r_mass = rm

    def take(self, other: FlatTrees) -> None:
        """Write `other`'s masses (the same trees) into these nodes."""
        for node, lm, rm in zip(self.nodes, other._summed(other.lm), other.rm):
            node.l_mass = lm
            node.r_mass = rm
