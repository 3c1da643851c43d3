"""The histogram GBDT engine: split finding from summed g/h histograms, one tree level at a time.

The engine never sees a row. For the open nodes of a level it asks for the histograms of some of them
(:meth:`TreeBuilder.request`); the institutions each build theirs from their own rows
(:func:`node_histograms`), the histograms are summed (in plaintext or under HE), and
:meth:`TreeBuilder.grow` returns the level's splits. A tree of depth D costs D such rounds.

Histogram subtraction: of two siblings only the one with the smaller hessian sum is asked for; the other
is its parent's histogram minus it. This is valid in a federation, because a summed histogram is linear
in the rows: ``sum_i (parent_i - child_i) = sum_i parent_i - sum_i child_i``, and every institution
derives the same choice from the same decrypted sums. Gradients and hessians are rounded per row to
multiples of ``2**-quantum_bits``, so every sum (in any order, and the subtraction) is exact in float64;
the federated trees are then bit-identical to the trees grown on the pooled rows.

Determinism: splits are ranked by gain; among equal gains the first in a fixed candidate order wins
(``np.argmax`` keeps the first maximum): the lowest feature, then missing values right by increasing bin,
then missing values left by decreasing bin, which is the order in which XGBoost's ``hist`` prefers them.

Missing values are handled as XGBoost does: every feature has a bin for them, and each split learns the
default direction that gains most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FederationError
from .params import GBDTParams

#: Splits must gain more than this (XGBoost's ``kRtEps``).
MIN_GAIN = 1e-6


def quantize(values: np.ndarray, bits: int) -> np.ndarray:
    """Round to the nearest multiple of ``2**-bits`` (exact in float64)."""
    return np.ldexp(np.rint(np.ldexp(values, bits)), -bits)


@dataclass(frozen=True)
class HistogramLayout:
    """Where each feature's bins lie in a flat histogram (the missing-value bin last in each feature).

    Attributes
    ----------
    features : np.ndarray
        The feature indices the histogram covers (a tree's column sample), increasing.
    n_bins : np.ndarray
        Bins of each covered feature, the missing bin included.
    """

    features: np.ndarray
    n_bins: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        """Start of each covered feature's bins, and the total at the end."""
        return np.concatenate([[0], np.cumsum(self.n_bins)]).astype(np.int64)

    @property
    def size(self) -> int:
        """Bins in the flat histogram."""
        return int(self.n_bins.sum())

    def flat_bins(self, bins: np.ndarray) -> np.ndarray:
        """Flat histogram index of each row's bin of each covered feature, ``(n, len(features))`` int64."""
        return bins[:, self.features].astype(np.int64) + self.offsets[:-1]


def node_histograms(flat_bins: np.ndarray, g: np.ndarray, h: np.ndarray, slot: np.ndarray, n_slots: int,
                    size: int) -> np.ndarray:
    """The g/h histograms of the rows of some nodes, shape ``(n_slots, size, 2)``.

    Parameters
    ----------
    flat_bins : np.ndarray
        ``(n, F)`` flat bin indices (:meth:`HistogramLayout.flat_bins`).
    g, h : np.ndarray
        Each row's gradient and hessian.
    slot : np.ndarray
        The histogram each row counts in (``0 .. n_slots - 1``), or -1 for rows of no requested node.
    """
    rows = np.flatnonzero(slot >= 0)
    out = np.zeros((n_slots, size, 2))
    if rows.size == 0:
        return out
    idx = (slot[rows, None].astype(np.int64) * size + flat_bins[rows]).ravel()
    n_features = flat_bins.shape[1]
    out[:, :, 0] = np.bincount(idx, weights=np.repeat(g[rows], n_features), minlength=n_slots * size).reshape(
        n_slots, size)
    out[:, :, 1] = np.bincount(idx, weights=np.repeat(h[rows], n_features), minlength=n_slots * size).reshape(
        n_slots, size)
    return out


@dataclass(frozen=True)
class Split:
    """A node's split: rows with bin ``<= bin`` of ``feature`` go to ``left``, missing ones as ``default_left``."""

    node: int
    feature: int
    bin: int
    default_left: bool
    gain: float
    left: int
    right: int


@dataclass
class _Node:
    depth: int
    G: float
    H: float
    hist: np.ndarray | None = None


@dataclass
class TreeArrays:
    """A grown tree as arrays indexed by node id (root 0; children follow their parents).

    ``feature`` is -1 at a leaf; ``value`` holds the leaf values (learning rate applied), 0 elsewhere.
    """

    feature: list[int] = field(default_factory=list)
    bin: list[int] = field(default_factory=list)
    default_left: list[bool] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    cover: list[float] = field(default_factory=list)

    def add(self, cover: float) -> int:
        self.feature.append(-1)
        self.bin.append(-1)
        self.default_left.append(True)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(0.0)
        self.gain.append(0.0)
        self.cover.append(cover)
        return len(self.feature) - 1


class TreeBuilder:
    """Grows one tree level-wise from summed histograms (the same state at every institution).

    Parameters
    ----------
    layout : HistogramLayout
        The bins the histograms cover (this tree's column sample).
    params : GBDTParams
        Depth, regularization and learning rate.
    """

    def __init__(self, layout: HistogramLayout, params: GBDTParams) -> None:
        self.layout = layout
        self.params = params
        self.arrays = TreeArrays()
        self._nodes: dict[int, _Node] = {}
        self._open: list[int] = []          # nodes of the current level, in id order
        self._request: list[int] = []       # nodes whose histograms the institutions send
        self._derived: dict[int, tuple[int, int]] = {}   # node -> (parent, sibling): parent - sibling
        root = self.arrays.add(0.0)
        self._nodes[root] = _Node(depth=0, G=0.0, H=0.0)
        self._open = [root]
        self._request = [root]
        self._root_pending = True
        self._cand = self._candidates()

    @property
    def done(self) -> bool:
        """Whether the tree is complete (no open node left)."""
        return not self._open

    def request(self) -> list[int]:
        """The nodes whose summed histograms :meth:`grow` needs next, in this order."""
        return list(self._request)

    def grow(self, hists: np.ndarray) -> list[Split]:
        """Split the open level from the summed histograms of :meth:`request` (shape ``(k, size, 2)``).

        Returns the level's splits (nodes that do not split become leaves). Afterwards :meth:`request`
        names the next level's histograms.
        """
        hists = np.asarray(hists, dtype=np.float64)
        want = (len(self._request), self.layout.size, 2)
        if hists.shape != want:
            raise FederationError(f"tree level: expected summed histograms of shape {want}, got {hists.shape}")
        for node, hist in zip(self._request, hists):
            self._nodes[node].hist = hist
        for node, (parent, sibling) in self._derived.items():
            self._nodes[node].hist = self._nodes[parent].hist - self._nodes[sibling].hist  # type: ignore[operator]
        if self._root_pending:
            first = self._nodes[0].hist[: self.layout.n_bins[0]]  # type: ignore[index]
            self._nodes[0].G, self._nodes[0].H = float(first[:, 0].sum()), float(first[:, 1].sum())
            self.arrays.cover[0] = self._nodes[0].H
            self._root_pending = False
        for node, (parent, _) in self._derived.items():
            self._nodes[parent].hist = None
        splits = self._best_splits(self._open)
        by_node = {s.node: s for s in splits}
        next_open: list[int] = []
        request: list[int] = []
        derived: dict[int, tuple[int, int]] = {}
        p = self.params
        for node in self._open:
            n = self._nodes[node]
            s = by_node.get(node)
            if s is None:
                self._make_leaf(node)
                n.hist = None
                continue
            a = self.arrays
            a.feature[node], a.bin[node], a.default_left[node], a.gain[node] = s.feature, s.bin, s.default_left, s.gain
            a.left[node], a.right[node] = s.left, s.right
            for child in (s.left, s.right):
                if self._nodes[child].depth >= p.max_depth:
                    self._make_leaf(child)
            if self._nodes[s.left].depth < p.max_depth:
                next_open += [s.left, s.right]
                small, big = ((s.left, s.right) if self._nodes[s.left].H <= self._nodes[s.right].H
                              else (s.right, s.left))
                request.append(small)
                derived[big] = (node, small)
        parents = {parent for parent, _ in derived.values()}
        for node in self._open:
            if node not in parents:
                self._nodes[node].hist = None
        self._open, self._request, self._derived = next_open, sorted(request), derived
        return splits

    def _make_leaf(self, node: int) -> None:
        n = self._nodes[node]
        p = self.params
        weight = 0.0 if n.H < p.min_child_weight or n.H <= 0 else -n.G / (n.H + p.reg_lambda)
        self.arrays.value[node] = weight * p.learning_rate

    def _candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every split of every covered feature, in XGBoost's order of preference among equal gains.

        Per feature (lowest first): missing values right with bins ``<= b`` left for ``b = 0 .. m-1``
        (``b = m-1``: every present value left, missing right), then missing values left for
        ``b = m-2 .. -1`` (``b = -1``: only the missing values left); ``m`` is the number of value bins.
        Returns the flat position whose cumulative sum is the left side (-1: nothing), the covered
        feature's index, the bin, whether missing values go left, and the feature's missing-bin position.
        """
        offsets = self.layout.offsets
        pos, feat, bins, left, miss = [], [], [], [], []
        for i, nb in enumerate(self.layout.n_bins):
            m = int(nb) - 1
            b = np.concatenate([np.arange(m), np.arange(m - 2, -2, -1)])
            pos.append(np.where(b >= 0, offsets[i] + b, -1))
            feat.append(np.full(b.size, i))
            bins.append(b)
            left.append(np.arange(b.size) >= m)
            miss.append(np.full(b.size, offsets[i] + m))
        cat = np.concatenate
        return (cat(pos).astype(np.int64), cat(feat).astype(np.int64), cat(bins).astype(np.int64),
                cat(left).astype(bool), cat(miss).astype(np.int64))

    def _best_splits(self, nodes: list[int]) -> list[Split]:
        p = self.params
        pos, feat, bins, miss_left, miss = self._cand
        if not nodes or pos.size == 0:
            return []
        hist = np.stack([self._nodes[n].hist for n in nodes])          # (k, size, 2)
        G = np.array([self._nodes[n].G for n in nodes])[:, None]
        H = np.array([self._nodes[n].H for n in nodes])[:, None]
        cum = np.cumsum(hist, axis=1)
        starts = self.layout.offsets[:-1][feat]                        # first bin of each candidate's feature
        before = np.where((starts > 0)[None, :, None], cum[:, np.maximum(starts - 1, 0)], 0.0)
        left = np.where((pos >= 0)[None, :, None], cum[:, np.maximum(pos, 0)] - before, 0.0)
        left = left + np.where(miss_left[None, :, None], hist[:, miss], 0.0)
        lam, mcw = p.reg_lambda, p.min_child_weight
        lg, lh = left[..., 0], left[..., 1]
        rg, rh = G - lg, H - lh
        gain = lg * lg / (lh + lam) + rg * rg / (rh + lam) - (G * G / (H + lam))
        ok = (lh >= mcw) & (rh >= mcw) & (lh > 0) & (rh > 0)
        both = np.where(ok, gain, -np.inf)
        best = np.argmax(both, axis=1)
        splits = []
        for i, node in enumerate(nodes):
            c = int(best[i])
            g = float(both[i, c])
            if not (g > MIN_GAIN and g >= p.gamma):
                continue
            lg_, lh_ = float(lg[i, c]), float(lh[i, c])
            depth = self._nodes[node].depth + 1
            ln = self.arrays.add(lh_)
            self._nodes[ln] = _Node(depth=depth, G=lg_, H=lh_)
            rn = self.arrays.add(float(H[i, 0]) - lh_)
            self._nodes[rn] = _Node(depth=depth, G=float(G[i, 0]) - lg_, H=float(H[i, 0]) - lh_)
            splits.append(Split(node=node, feature=int(self.layout.features[feat[c]]), bin=int(bins[c]),
                                default_left=bool(miss_left[c]), gain=g, left=ln, right=rn))
        return splits
