"""The horizontal GBDT driver: institutions hold rows of the same columns, and only summed vectors travel.

Every step is a method of :class:`HorizontalParty` (what one institution computes from its own rows)
or of the shared state that each institution rebuilds from the same sums (:class:`QuantileSketch`,
:class:`TreeBuilder`). :func:`fit_horizontal` runs them in one process, with any ``combine``: the
plaintext sum, or :class:`~fedx.trees.summation.EncryptedSum`. A federation runs the same calls, with
each ``combine`` a message round:

1. bin edges: summed moments, then summed bracket counts until the quantile sketch converges;
2. base score: summed target and exposure totals;
3. each tree, each level: summed g/h histograms of the requested nodes; every institution applies the
   same splits to its own rows (the row partition of a node never leaves its institution).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .binning import BinEdges, QuantileSketch, SortedColumns, local_moments
from .engine import HistogramLayout, Split, TreeBuilder, node_histograms, quantize
from .model import GBDTModel, Tree
from .objectives import get_objective
from .params import GBDTParams
from .summation import Combine, plain_sum

log = logging.getLogger(__name__)


class HorizontalParty:
    """One institution's side of the horizontal protocol: its rows, bins, margins and row partition.

    Parameters
    ----------
    name : str
        The institution, for messages and for its own row-sampling seed.
    X : np.ndarray
        ``(n, F)`` features, NaN where missing.
    y : np.ndarray
        Target (0/1, or counts for Poisson).
    params : GBDTParams
        The run's settings.
    offset : np.ndarray, optional
        Per-row offset of the margin (log exposure for Poisson).
    """

    def __init__(self, name: str, X: np.ndarray, y: np.ndarray, params: GBDTParams,
                 offset: np.ndarray | None = None) -> None:
        self.name = name
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self.X.ndim != 2 or self.X.shape[0] != self.y.shape[0]:
            raise DataError(f"{name}: features of shape {self.X.shape} and a target of {self.y.shape[0]} rows")
        if np.isinf(self.X).any():
            raise DataError(f"{name}: the features hold infinite values")
        self.params = params
        self.objective = get_objective(params.objective)
        self.objective.check_target(self.y, name)
        self.offset = np.zeros(len(self.y)) if offset is None else np.asarray(offset, dtype=np.float64).reshape(-1)
        self.bins: np.ndarray | None = None
        self.margin: np.ndarray | None = None
        self._sorted: SortedColumns | None = None
        self._missing_bin = np.zeros(0, dtype=np.int64)
        self._g = self._h = self._node = self._flat = None

    # ------------------------------------------------------------------ setup
    def moments(self) -> np.ndarray:
        """Stage 0 of the sketch: count, sum and sum of squares of each feature."""
        return local_moments(self.X)

    def sketch_counts(self, sketch: QuantileSketch) -> np.ndarray:
        """This institution's counts of the sketch's open brackets."""
        if self._sorted is None:
            self._sorted = SortedColumns(self.X)
        return self._sorted.counts(sketch.brackets())

    def totals(self) -> np.ndarray:
        """``[sum of y, sum of exposure]`` (exposure is 1 per row without an offset), for the base score."""
        return np.array([self.y.sum(), np.exp(self.offset).sum()])

    def start(self, edges: BinEdges, base_margin: float) -> None:
        """Bin the rows with the shared edges and set every margin to the base margin plus the offset."""
        self.bins = edges.bin(self.X)
        self._missing_bin = edges.n_bins - 1
        self.margin = base_margin + self.offset

    # ------------------------------------------------------------------ one tree
    def start_tree(self, tree_index: int, layout: HistogramLayout) -> None:
        """Gradients and hessians of this tree (rounded to the grid), rows drawn, every row at the root."""
        assert self.bins is not None and self.margin is not None
        g, h = self.objective.gradients(self.y, self.margin)
        bits = self.params.quantum_bits
        g, h = quantize(g, bits), quantize(h, bits)
        if self.params.subsample < 1.0:
            rng = np.random.default_rng([self.params.seed, tree_index, *self.name.encode()])
            keep = rng.random(len(g)) < self.params.subsample
            g, h = np.where(keep, g, 0.0), np.where(keep, h, 0.0)
        self._g, self._h = g, h
        self._node = np.zeros(len(g), dtype=np.int64)
        self._flat = layout.flat_bins(self.bins)
        self._layout = layout

    def histograms(self, nodes: list[int]) -> np.ndarray:
        """The flat g/h histograms of this institution's rows in ``nodes`` (the engine's request)."""
        assert self._node is not None
        lookup = np.full(int(self._node.max()) + 1 if self._node.size else 1, -1, dtype=np.int64)
        for i, n in enumerate(nodes):
            if n < lookup.size:
                lookup[n] = i
        slot = lookup[self._node]
        return node_histograms(self._flat, self._g, self._h, slot, len(nodes), self._layout.size).ravel()

    def apply(self, splits: list[Split]) -> None:
        """Move this institution's rows of each split node to its children."""
        if not splits:
            return
        assert self.bins is not None and self._node is not None
        size = max(max(s.node for s in splits), int(self._node.max())) + 1
        feature = np.full(size, -1, dtype=np.int64)
        cut = np.zeros(size, dtype=np.int64)
        dleft = np.zeros(size, dtype=bool)
        left = np.zeros(size, dtype=np.int64)
        right = np.zeros(size, dtype=np.int64)
        for s in splits:
            feature[s.node], cut[s.node], dleft[s.node], left[s.node], right[s.node] = (
                s.feature, s.bin, s.default_left, s.left, s.right)
        rows = np.flatnonzero(feature[self._node] >= 0)
        node = self._node[rows]
        b = self.bins[rows, feature[node]].astype(np.int64)
        missing = b == self._missing_bin[feature[node]]
        go_left = np.where(missing, dleft[node], b <= cut[node])
        self._node[rows] = np.where(go_left, left[node], right[node])

    def resume(self, trees: list[Tree]) -> None:
        """Add the leaf values of trees grown earlier (a checkpoint) to this institution's margins.

        A tree routes raw values exactly as the institutions routed their bins (``x < cut_k`` is
        ``bin <= k``), and the values are added in the same order, so the margins are those of the
        uninterrupted run, bit for bit.
        """
        assert self.margin is not None
        for tree in trees:
            self.margin = self.margin + tree.predict(self.X)

    def end_tree(self, tree: Tree) -> None:
        """Add the tree's leaf values to this institution's margins (every row sits in a leaf now)."""
        assert self.margin is not None and self._node is not None
        self.margin = self.margin + tree.value[self._node]


@dataclass
class FitReport:
    """What a horizontal fit measured: seconds of each phase, rounds, and the sketch stages."""

    seconds: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    sketch_stages: int = 0
    levels_per_tree: list[int] = field(default_factory=list)


def federated_edges(parties: Mapping[str, HorizontalParty], max_bins: int, combine: Combine = plain_sum
                    ) -> tuple[BinEdges, int]:
    """The bin edges from the federated quantile sketch; also the number of counting stages."""
    first = next(iter(parties.values()))
    sketch = QuantileSketch(first.X.shape[1], max_bins, combine([p.moments() for p in parties.values()], exact=False,
                                                                what="gbdt-sketch-moments"))
    while not sketch.done:
        sketch.advance(combine([p.sketch_counts(sketch) for p in parties.values()],
                               what=f"gbdt-sketch-{sketch.stages + 1}"))
    return sketch.edges(), sketch.stages


def tree_features(params: GBDTParams, n_features: int, tree_index: int) -> np.ndarray:
    """The column sample of a tree (the same at every institution: seeded by the run and the tree)."""
    if params.colsample >= 1.0:
        return np.arange(n_features)
    k = max(1, round(params.colsample * n_features))
    rng = np.random.default_rng([params.seed, tree_index, 0xC01])
    return np.sort(rng.choice(n_features, size=k, replace=False))


def fit_horizontal(parties: Mapping[str, HorizontalParty], params: GBDTParams, feature_names: list[str],
                   *, combine: Combine = plain_sum, edges: BinEdges | None = None,
                   progress: Callable[[int, int], None] | None = None, report: FitReport | None = None,
                   start: GBDTModel | None = None, on_tree: Callable[[GBDTModel], None] | None = None
                   ) -> GBDTModel:
    """Boost ``params.trees`` trees over the institutions' rows, summing only vectors with ``combine``.

    Parameters
    ----------
    parties : mapping of str to HorizontalParty
        The institutions.
    params : GBDTParams
        The settings.
    feature_names : list of str
        Column names, in the order of every party's ``X``.
    combine : callable
        Sums the institutions' vectors of one round (:func:`plain_sum` or an ``EncryptedSum``).
    edges : BinEdges, optional
        Use these bin edges instead of running the federated sketch (tests that compare with pooled runs).
    progress : callable, optional
        Called as ``progress(tree, level)`` after every level.
    report : FitReport, optional
        Filled with timings and round counts.
    start : GBDTModel, optional
        Continue boosting this model (a checkpoint): its edges and base margin are kept, and each
        institution adds its trees to its own margins before the next tree (no message is needed).
    on_tree : callable, optional
        Called with the model so far after every tree (to checkpoint it).

    Returns
    -------
    GBDTModel
    """
    if not parties:
        raise DataError("fit_horizontal: no institution given")
    widths = {name: p.X.shape[1] for name, p in parties.items()}
    if len(set(widths.values())) != 1 or next(iter(widths.values())) != len(feature_names):
        raise DataError(f"fit_horizontal: every institution needs the {len(feature_names)} feature columns; "
                        f"found {widths}")
    report = report if report is not None else FitReport()
    t0 = time.perf_counter()
    if start is not None:
        if start.edges is None:
            raise DataError("fit_horizontal: the model to continue keeps no bin edges")
        edges = start.edges
    elif edges is None:
        edges, report.sketch_stages = federated_edges(parties, params.max_bins, combine)
        report.rounds += report.sketch_stages + 1
    report.seconds["sketch"] = time.perf_counter() - t0
    objective = get_objective(params.objective)
    if start is not None:
        base_margin = start.base_margin
    else:
        if params.base_score is not None:
            score = params.base_score
        else:
            y_sum, exposure_sum = combine([p.totals() for p in parties.values()], exact=False, what="gbdt-totals")
            report.rounds += 1
            score = objective.base_score(float(y_sum), float(exposure_sum))
        base_margin = objective.base_margin(score)
    for p in parties.values():
        p.start(edges, base_margin)
    all_bins = edges.n_bins
    trees: list[Tree] = []
    if start is not None:
        trees = list(start.trees)
        for p in parties.values():
            p.resume(trees)
    t1 = time.perf_counter()
    for t in range(len(trees), params.trees):
        features = tree_features(params, edges.n_features, t)
        layout = HistogramLayout(features=features, n_bins=all_bins[features])
        for p in parties.values():
            p.start_tree(t, layout)
        builder = TreeBuilder(layout, params)
        level = 0
        while not builder.done:
            nodes = builder.request()
            total = combine([p.histograms(nodes) for p in parties.values()], what=f"gbdt-level-{level + 1}")
            splits = builder.grow(total.reshape(len(nodes), layout.size, 2))
            for p in parties.values():
                p.apply(splits)
            level += 1
            report.rounds += 1
            if progress is not None:
                progress(t, level)
        tree = Tree.from_arrays(builder.arrays, edges)
        for p in parties.values():
            p.end_tree(tree)
        trees.append(tree)
        report.levels_per_tree.append(level)
        if on_tree is not None:
            on_tree(GBDTModel(trees, base_margin, params, feature_names, edges))
    report.seconds["trees"] = time.perf_counter() - t1
    log.info("fit_horizontal: %d trees, %d rounds, %.1f s", len(trees), report.rounds, time.perf_counter() - t0)
    return GBDTModel(trees, base_margin, params, feature_names, edges)


def fit_pooled(X: np.ndarray, y: np.ndarray, params: GBDTParams, feature_names: list[str], edges: BinEdges,
               offset: np.ndarray | None = None) -> GBDTModel:
    """The same engine on one table (the centralized baseline, and the reference of the exactness tests)."""
    return fit_horizontal({"pooled": HorizontalParty("pooled", X, y, params, offset)}, params, feature_names,
                          edges=edges)
