"""The fitted GBDT: raw-threshold trees, prediction with the scikit-learn surface, JSON save and load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .binning import BinEdges
from .engine import TreeArrays
from .objectives import get_objective
from .params import GBDTParams

FORMAT = "fedx-gbdt"
VERSION = 1


@dataclass(frozen=True)
class Tree:
    """One tree, as arrays indexed by node id; ``feature == -1`` marks a leaf.

    A row goes left at a split node when its value of ``feature`` is below ``threshold`` (bin ``<= bin``),
    and as ``default_left`` says when the value is missing.
    """

    feature: np.ndarray
    bin: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    gain: np.ndarray
    cover: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: TreeArrays, edges: BinEdges) -> Tree:
        """The tree grown by a :class:`~fedx.trees.engine.TreeBuilder`, with raw thresholds from ``edges``."""
        feature = np.asarray(arrays.feature, dtype=np.int64)
        bins = np.asarray(arrays.bin, dtype=np.int64)
        threshold = np.array([edges.threshold(int(f), int(b)) if f >= 0 else np.nan for f, b in zip(feature, bins)])
        return cls(feature=feature, bin=bins, threshold=threshold,
                   default_left=np.asarray(arrays.default_left, dtype=bool),
                   left=np.asarray(arrays.left, dtype=np.int64), right=np.asarray(arrays.right, dtype=np.int64),
                   value=np.asarray(arrays.value, dtype=np.float64), gain=np.asarray(arrays.gain, dtype=np.float64),
                   cover=np.asarray(arrays.cover, dtype=np.float64))

    @property
    def depth(self) -> int:
        """Longest root-to-leaf path (0 for a single leaf)."""
        depth = np.zeros(len(self.feature), dtype=np.int64)
        for node in range(len(self.feature)):  # children always follow their parent
            if self.feature[node] >= 0:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max())

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """The leaf each row of raw ``X`` falls in."""
        node = np.zeros(X.shape[0], dtype=np.int64)
        rows = np.arange(X.shape[0])
        for _ in range(self.depth):
            f = self.feature[node]
            inner = f >= 0
            x = X[rows, np.where(inner, f, 0)]
            go_left = np.where(np.isnan(x), self.default_left[node], x < self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return node

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The leaf value of each row."""
        return self.value[self.leaves(X)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for strict JSON (floats round-trip exactly; a leaf's threshold is null, infinite ones "inf")."""
        return {"feature": self.feature.tolist(), "bin": self.bin.tolist(),
                "threshold": [_number(t) for t in self.threshold],
                "default_left": self.default_left.tolist(), "left": self.left.tolist(),
                "right": self.right.tolist(), "value": self.value.tolist(), "gain": self.gain.tolist(),
                "cover": self.cover.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        """Inverse of :meth:`to_dict`."""
        ints = {k: np.asarray(d[k], dtype=np.int64) for k in ("feature", "bin", "left", "right")}
        return cls(threshold=np.array([_unnumber(t) for t in d["threshold"]], dtype=np.float64),
                   default_left=np.asarray(d["default_left"], dtype=bool),
                   value=np.asarray(d["value"], dtype=np.float64), gain=np.asarray(d["gain"], dtype=np.float64),
                   cover=np.asarray(d["cover"], dtype=np.float64), **ints)


class GBDTModel:
    """A fitted gradient-boosted tree model with the scikit-learn surface.

    Parameters
    ----------
    trees : sequence of Tree
        The boosted trees.
    base_margin : float
        The starting margin (logit or log of the base score).
    params : GBDTParams
        The settings it was trained with (the objective among them).
    feature_names : sequence of str
        Names of the feature columns, in order.
    edges : BinEdges, optional
        The bin edges it was trained on (kept for inspection and for further boosting).
    """

    def __init__(self, trees: Sequence[Tree], base_margin: float, params: GBDTParams,
                 feature_names: Sequence[str], edges: BinEdges | None = None) -> None:
        self.trees = list(trees)
        self.base_margin = float(base_margin)
        self.params = params
        self.objective = get_objective(params.objective)
        self.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.edges = edges
        self.classes_ = np.array([0, 1]) if params.objective == "binary:logistic" else None

    # ------------------------------------------------------------------ prediction

    def _matrix(self, X: Any) -> np.ndarray:
        if hasattr(X, "columns"):  # a DataFrame: take the model's columns by name
            missing = [c for c in self.feature_names_in_ if c not in X.columns]
            if missing:
                raise DataError(f"GBDT predict: the table lacks feature column(s) {missing[:5]}")
            X = X[list(self.feature_names_in_)].to_numpy(dtype=np.float64, na_value=np.nan)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataError(f"GBDT predict: expected {self.n_features_in_} feature columns, got shape {X.shape}")
        return X

    def predict_raw(self, X: Any, offset: np.ndarray | None = None, n_trees: int | None = None) -> np.ndarray:
        """The margin of each row: base margin, offset (log exposure) and the first ``n_trees`` trees."""
        X = self._matrix(X)
        margin = np.full(X.shape[0], self.base_margin)
        if offset is not None:
            margin = margin + np.asarray(offset, dtype=np.float64)
        for tree in self.trees[:n_trees]:
            margin += tree.predict(X)
        return margin

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, 2)`` (binary:logistic only)."""
        if self.classes_ is None:
            raise DataError(f"predict_proba needs a classifier; this model's objective is {self.params.objective}")
        p = self.objective.transform(self.predict_raw(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any, offset: np.ndarray | None = None) -> np.ndarray:
        """Labels (probability >= 0.5) for binary:logistic; expected counts for count:poisson."""
        if self.classes_ is not None:
            return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)]
        return self.objective.transform(self.predict_raw(X, offset))

    # ------------------------------------------------------------------ importance

    def feature_importances(self, kind: str = "gain") -> dict[str, float]:
        """Total split gain (``gain``) or number of splits (``split``) of each feature, by name."""
        if kind not in ("gain", "split"):
            raise DataError(f"feature_importances: kind must be 'gain' or 'split', got {kind!r}")
        total = np.zeros(self.n_features_in_)
        for tree in self.trees:
            inner = tree.feature >= 0
            np.add.at(total, tree.feature[inner], tree.gain[inner] if kind == "gain" else 1.0)
        return {str(n): float(v) for n, v in zip(self.feature_names_in_, total)}

    @property
    def feature_importances_(self) -> np.ndarray:
        """Gain importance normalized to sum to 1, in column order (as scikit-learn estimators give it)."""
        gain = np.array(list(self.feature_importances("gain").values()))
        return gain / gain.sum() if gain.sum() > 0 else gain

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (no pickle), from which :meth:`from_dict` rebuilds the model exactly."""
        return {"format": FORMAT, "version": VERSION, "params": self.params.to_dict(),
                "base_margin": self.base_margin, "feature_names": [str(n) for n in self.feature_names_in_],
                "edges": self.edges.to_dict() if self.edges is not None else None,
                "trees": [t.to_dict() for t in self.trees]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GBDTModel:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        DataError
            Not a fedx GBDT description, or one of another version.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"not a fedx GBDT model: expected format {FORMAT!r}")
        if d.get("version") != VERSION:
            raise DataError(f"fedx GBDT model version {d.get('version')!r}; this fedx reads version {VERSION}")
        try:
            edges = BinEdges.from_dict(d["edges"]) if d.get("edges") is not None else None
            return cls([Tree.from_dict(t) for t in d["trees"]], d["base_margin"],
                       GBDTParams.from_dict(d["params"]), d["feature_names"], edges)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed fedx GBDT model: {exc}") from None


def _number(t: float) -> float | str | None:
    if np.isnan(t):
        return None
    return ("inf" if t > 0 else "-inf") if np.isinf(t) else float(t)


def _unnumber(t: float | str | None) -> float:
    if t is None:
        return np.nan
    return float(t)
