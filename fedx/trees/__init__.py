"""Gradient-boosted trees from summed histograms: one numpy engine, drivers for each data partition.

- :mod:`~fedx.trees.engine`: level-wise split finding from summed g/h histograms (:class:`TreeBuilder`).
- :mod:`~fedx.trees.binning`: bin edges from a federated quantile sketch (:class:`QuantileSketch`).
- :mod:`~fedx.trees.horizontal`: institutions with rows of the same columns (:func:`fit_horizontal`).
- :mod:`~fedx.trees.model`: the fitted :class:`GBDTModel` (scikit-learn surface, JSON save and load).

>>> params = GBDTParams(trees=400, max_depth=6, learning_rate=0.05, max_bins=256)       # doctest: +SKIP
>>> parties = {name: HorizontalParty(name, X, y, params) for name, (X, y) in banks.items()}   # doctest: +SKIP
>>> model = fit_horizontal(parties, params, feature_names, combine=EncryptedSum(keys, 20))  # doctest: +SKIP
"""

from __future__ import annotations

from .binning import (
    BinEdges,
    QuantileSketch,
    SortedColumns,
    local_moments,
)
from .engine import HistogramLayout, Split, TreeBuilder, node_histograms, quantize
from .horizontal import (
    FitReport,
    HorizontalParty,
    federated_edges,
    fit_horizontal,
    fit_pooled,
    tree_features,
)
from .model import GBDTModel, Tree
from .objectives import LossObjective, get_objective
from .params import MAX_BINS, OBJECTIVES, GBDTParams
from .summation import Combine, EncryptedSum, PlainSum, plain_sum

__all__ = [
    "MAX_BINS", "OBJECTIVES", "BinEdges", "Combine", "EncryptedSum", "FitReport", "GBDTModel", "GBDTParams",
    "HistogramLayout", "HorizontalParty", "LossObjective", "QuantileSketch", "SortedColumns", "Split", "Tree",
    "TreeBuilder", "federated_edges", "fit_horizontal", "fit_pooled", "get_objective", "local_moments",
    "node_histograms", "PlainSum", "plain_sum", "quantize", "tree_features",
]
