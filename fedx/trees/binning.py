"""Bin edges of every feature, and the federated quantile sketch that finds them without pooling rows.

A feature's cut points ``c_0 < c_1 < ... < c_{m-1}`` give it ``m + 1`` bins: bin ``k`` holds the values
with exactly ``k`` cut points at or below them (``x < c_0`` is bin 0), and a missing value (NaN) has a bin
of its own after them. A split "at bin k" sends ``x < c_k`` left, so a model keeps raw thresholds.

The cut points come from quantiles at probabilities ``1/B, ..., (B-1)/B``, found by the federated
histogram refinement of :mod:`fedx.analytics.quantiles` (the same :class:`~fedx.analytics.quantiles.Target`
search that ``fedx stats`` runs): the institutions sum their moments once, then at each stage their counts
of values in the open brackets; every institution advances the same searches from the same sums. A
quantile's cut is the upper end of its final bracket, so that every value of a discrete feature gets a bin
of its own and quantiles that fall on the same value give one cut; bins left unused by such piles are spent on further
searches in the rest of the feature's range (:class:`QuantileSketch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analytics.quantiles import (
    SEARCH_BINS,
    Target,
    derived_range,
    inverted_cdf_rank,
    search_edges,
)
from ..errors import DataError, FederationError
from .params import MAX_BINS

#: A sketch that has not converged after this many counting stages is stopped with an error.
MAX_STAGES = 64


@dataclass(frozen=True)
class BinEdges:
    """The cut points of every feature (each strictly increasing; at most ``MAX_BINS - 1`` of them).

    Attributes
    ----------
    cuts : tuple of np.ndarray
        Cut points of each feature, float64.
    """

    cuts: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        for f, c in enumerate(self.cuts):
            if c.ndim != 1 or len(c) > MAX_BINS - 1 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
                raise DataError(f"bin edges of feature {f}: expected at most {MAX_BINS - 1} finite, strictly "
                                f"increasing cut points")

    @property
    def n_features(self) -> int:
        """Number of features."""
        return len(self.cuts)

    @property
    def n_bins(self) -> np.ndarray:
        """Bins of each feature, the missing-value bin included (``len(cuts) + 2``)."""
        return np.array([len(c) + 2 for c in self.cuts], dtype=np.int64)

    def bin(self, X: np.ndarray) -> np.ndarray:
        """Bin index of every value, shape ``(n, F)`` uint16; NaN goes to the feature's last (missing) bin."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"expected a matrix of {self.n_features} feature columns, got shape {X.shape}")
        out = np.empty(X.shape, dtype=np.uint16)
        for f, c in enumerate(self.cuts):
            col = X[:, f]
            idx = np.searchsorted(c, col, side="right")
            idx[np.isnan(col)] = len(c) + 1
            out[:, f] = idx
        return out

    def threshold(self, feature: int, bin_index: int) -> float:
        """The raw threshold of a split at ``bin_index``: values below it go left.

        ``-inf`` for ``bin_index = -1`` (no present value goes left), ``+inf`` for the last value bin.
        """
        cuts = self.cuts[feature]
        if bin_index < 0:
            return -np.inf
        return float(cuts[bin_index]) if bin_index < len(cuts) else np.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"cuts": [c.tolist() for c in self.cuts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinEdges:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(np.asarray(c, dtype=np.float64).reshape(-1) for c in d["cuts"]))

    @classmethod
    def from_quantiles(cls, X: np.ndarray, max_bins: int) -> BinEdges:
        """Edges from the exact quantiles of one table: the same rule as the federated sketch, on pooled rows.

        For tests and baselines only (a federation uses :class:`QuantileSketch`): the cut of a quantile is
        the smallest value above it, so that every distinct value below it falls left.
        """
        X = np.asarray(X, dtype=np.float64)
        probs = sketch_probabilities(max_bins)
        cuts = []
        for f in range(X.shape[1]):
            col = np.sort(X[:, f][~np.isnan(X[:, f])])
            if col.size == 0:
                cuts.append(np.zeros(0))
                continue
            ranks = np.array([inverted_cdf_rank(col.size, p) for p in probs])
            values = np.unique(col[ranks - 1])
            above = np.searchsorted(col, values, side="right")
            cuts.append(np.unique(np.where(above < col.size, col[np.minimum(above, col.size - 1)],
                                           np.nextafter(values, np.inf))))
        return cls(tuple(cuts))


def sketch_probabilities(max_bins: int) -> np.ndarray:
    """The probabilities whose quantiles cut a feature into at most ``max_bins`` bins: ``k / max_bins``."""
    return np.arange(1, max_bins) / max_bins


def local_moments(X: np.ndarray) -> np.ndarray:
    """Count, sum and sum of squares of each feature's present values, flat ``(3F,)`` (summed over institutions)."""
    X = np.asarray(X, dtype=np.float64)
    present = ~np.isnan(X)
    Z = np.where(present, X, 0.0)
    return np.concatenate([present.sum(axis=0).astype(np.float64), Z.sum(axis=0), (Z * Z).sum(axis=0)])


class SortedColumns:
    """One institution's feature columns, each sorted once, NaN dropped: counts per bracket by binary search."""

    def __init__(self, X: np.ndarray) -> None:
        X = np.asarray(X, dtype=np.float64)
        self.columns = [np.sort(X[:, f][~np.isnan(X[:, f])]) for f in range(X.shape[1])]

    def counts(self, brackets: Sequence[tuple[int, float, float]]) -> np.ndarray:
        """``[below, bin_0 .. bin_{K-1}, at or above]`` of each bracket (feature, lo, hi), concatenated."""
        out = np.empty((len(brackets), SEARCH_BINS + 2))
        for i, (f, lo, hi) in enumerate(brackets):
            col = self.columns[f]
            below = np.searchsorted(col, search_edges(lo, hi), side="left")
            out[i] = np.diff(np.concatenate([[0], below, [col.size]]))
        return out.ravel()


class QuantileSketch:
    """The federated search for the cut points of every feature (the same state at every institution).

    Round 1 searches the quantiles at ``k / max_bins``. A feature whose values pile up on a few points
    (a count, a flag, a risk score that is mostly 0) gets fewer distinct cuts than bins; each later round
    spends the unused bins on new searches at ranks spread evenly over the ranks that no cut's final bracket
    covers yet (the tails around the piles), until every bin is used, a round finds no new cut, or
    ``max_rounds`` is reached. So a feature with at most ``max_bins - 1`` distinct values ends with a cut
    above each of them, as XGBoost's own sketch gives it.

    >>> sketch = QuantileSketch(n_features, max_bins, total_of(local_moments(X_i)))    # doctest: +SKIP
    >>> while not sketch.done:                                                           # doctest: +SKIP
    ...     sketch.advance(total_of(SortedColumns(X_i).counts(sketch.brackets())))
    >>> edges = sketch.edges()                                                           # doctest: +SKIP
    """

    def __init__(self, n_features: int, max_bins: int, moments: np.ndarray, max_rounds: int = 4) -> None:
        m = np.asarray(moments, dtype=np.float64).reshape(3, n_features)
        counts = np.rint(m[0])
        if np.any(np.abs(m[0] - counts) > 0.25):
            raise FederationError("quantile sketch: the summed counts of values are not whole numbers")
        self.n_features = n_features
        self.max_bins = max_bins
        self.max_rounds = max_rounds
        self.stages = 0
        self.rounds = 1
        self._n = counts.astype(np.int64)
        self._range: list[tuple[float, float] | None] = []
        self.targets: list[Target] = []
        self._covered: list[tuple[int, int] | None] = []
        self._active = np.ones(n_features, dtype=bool)
        self._found: dict[int, int] = {}   # distinct cuts of each feature when its last round started
        for f in range(n_features):
            n = int(self._n[f])
            if n == 0:
                self._range.append(None)
                self._active[f] = False
                continue
            mean = m[1, f] / n
            std = float(np.sqrt(max(m[2, f] / n - mean * mean, 0.0)))
            self._range.append(_first_bracket(mean, std))
            self._add(f, [inverted_cdf_rank(n, float(p)) for p in sketch_probabilities(max_bins)])

    def _add(self, feature: int, ranks: Sequence[int]) -> None:
        lo, hi = self._range[feature]  # type: ignore[misc]
        for r in ranks:
            t = Target(block=None, column=str(feature), p=float(r) / float(self._n[feature]), rank=int(r))
            self.targets.append(t.start(lo, hi, None))
            self._covered.append(None)

    @property
    def done(self) -> bool:
        """Whether every search has converged and no further round is due."""
        return not any(t.counting for t in self.targets)

    def brackets(self) -> list[tuple[int, float, float]]:
        """The distinct open brackets (feature, lo, hi) to count at this stage, in a fixed order."""
        keys = dict.fromkeys((int(t.column), float(t.lo), float(t.hi)) for t in self.targets  # type: ignore[arg-type]
                             if t.counting)
        return list(keys)

    def advance(self, total: np.ndarray) -> None:
        """Advance every open search from the summed counts of :meth:`brackets` (and start the next round)."""
        brackets = self.brackets()
        counts = np.asarray(total, dtype=np.float64).reshape(len(brackets), SEARCH_BINS + 2)
        whole = np.rint(counts)
        if np.any(np.abs(counts - whole) > 0.25):
            raise FederationError("quantile sketch: the summed bracket counts are not whole numbers")
        by_key = {k: whole[i] for i, k in enumerate(brackets)}
        for i, t in enumerate(self.targets):
            if not t.counting:
                continue
            c = by_key[(int(t.column), float(t.lo), float(t.hi))]  # type: ignore[arg-type]
            new = t.advance(c)
            if new.status == "done":
                cum = np.cumsum(c)
                cell = int(np.searchsorted(cum, t.rank, side="left"))
                self._covered[i] = (int(cum[cell - 1]), int(cum[cell]))
            self.targets[i] = new
        self.stages += 1
        if self.done and self.rounds < self.max_rounds:
            self._refine()
        if not self.done and self.stages >= MAX_STAGES:
            raise FederationError(f"quantile sketch: not converged after {MAX_STAGES} stages")

    def _refine(self) -> None:
        """Start the next round: unused bins go to the ranks that no final bracket covers yet."""
        self.rounds += 1
        for f in np.flatnonzero(self._active):
            mine = [i for i, t in enumerate(self.targets) if int(t.column) == f and t.status == "done"]
            distinct = {float(self.targets[i].hi) for i in mine}  # type: ignore[arg-type]
            budget = self.max_bins - 1 - len(distinct)
            if budget <= 0 or self._found.get(int(f)) == len(distinct):
                self._active[f] = False
                continue
            self._found[int(f)] = len(distinct)
            spans = sorted({self._covered[i] for i in mine if self._covered[i] is not None})  # (below, upto]
            gaps, start = [], 0
            for below, upto in spans:
                if below > start:
                    gaps.append((start, below))
                start = max(start, upto)
            if start < self._n[f]:
                gaps.append((start, int(self._n[f])))
            total = sum(b - a for a, b in gaps)
            if total == 0:
                self._active[f] = False
                continue
            ranks: list[int] = []
            for a, b in gaps:
                k = min(b - a, max(1, int(budget * (b - a) / total)))
                ranks += sorted({a + 1 + int((j + 0.5) * (b - a) / k) for j in range(k)})
            self._add(int(f), [r for r in ranks[:budget] if r <= self._n[f]])

    def edges(self) -> BinEdges:
        """The cut points: the upper end of each quantile's final bracket, deduplicated."""
        if not self.done:
            raise FederationError("quantile sketch: edges asked for before every search converged")
        cuts: list[list[float]] = [[] for _ in range(self.n_features)]
        for t in self.targets:
            if t.status == "done":
                cuts[int(t.column)].append(float(t.hi))  # type: ignore[arg-type]
        return BinEdges(tuple(np.unique(np.asarray(c, dtype=np.float64)) for c in cuts))


def _first_bracket(mean: float, std: float) -> tuple[float, float]:
    """The first bracket of a feature's searches: mean +/- 4 std, rounded to 6 significant digits.

    :func:`~fedx.analytics.quantiles.derived_range` rounds to 10 digits; the moments of a feature summed under
    HE differ from the plaintext ones by about 1e-10 relative (bfv-compact's 2^-24 fixed point, CKKS noise),
    so a coarser rounding keeps every run, encrypted or not, on the same brackets (and so the same cuts).
    """
    lo, hi = derived_range(mean, std)
    coarse = float(f"{lo:.6g}"), float(f"{hi:.6g}")
    return coarse if coarse[0] < coarse[1] else (lo, hi)
