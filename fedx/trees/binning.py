"""Bin edges of every feature, and the federated quantile sketch that finds them without pooling rows.

A feature's cut points ``c_0 < c_1 < ... < c_{m-1}`` give it ``m + 1`` bins: bin ``k`` holds the values
with exactly ``k`` cut points at or below them (``x < c_0`` is bin 0), and a missing value (NaN) has a bin
of its own after them. A split "at bin k" sends ``x < c_k`` left, so a model keeps raw thresholds.

The cut points are rank quantiles of the pooled values, placed as XGBoost's ``hist`` sketch places them
(weights 1, no hessian): ``max_bins - 1`` ranks evenly spaced over the rows strictly between the minimum
and the maximum, each cut at the value of its rank (that value opens a bin), and ranks that fall on the
same value give one cut. The federated search (:class:`QuantileSketch`) finds them with the histogram
refinement of :mod:`fedx.analytics.quantiles` (the :class:`~fedx.analytics.quantiles.Target` search that
``fedx stats`` runs): the institutions sum their moments once, then at each stage their counts of values in
the open brackets; every institution advances the same searches from the same sums. A cut is the lower
end of its rank's final bracket: below the value of that rank by less than the bracket's width (the
precision, 1e-4 of the first bracket, unless float resolution stops the search first), and no other value
lies between the two unless it falls in the same final bracket. Values further apart than that are split
exactly as the pooled rule splits them (:meth:`BinEdges.from_quantiles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analytics.quantiles import (
    DEFAULT_RESOLUTION,
    SEARCH_BINS,
    Target,
    derived_range,
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

        For tests and baselines only (a federation uses :class:`QuantileSketch`). With ``c_min`` and
        ``c_max`` the rows at a feature's minimum and maximum and ``n`` its present values, the ranks are
        ``floor(c_min + k (n - c_min - c_max) / max_bins) + 1`` for ``k = 1 .. max_bins - 1``; each cut is
        the value of its rank (so that value opens a bin), repeated values give one cut, and the maximum
        opens a bin of its own when fewer than ``max_bins - 1`` cuts are found (XGBoost's ``hist`` rule).
        """
        X = np.asarray(X, dtype=np.float64)
        cuts = []
        for f in range(X.shape[1]):
            values, count = np.unique(X[:, f][~np.isnan(X[:, f])], return_counts=True)
            if values.size < 2:
                cuts.append(np.zeros(0))
                continue
            upto = np.cumsum(count)
            c_min, rest = int(count[0]), int(upto[-1] - count[0] - count[-1])
            ranks = np.array(sorted({(c_min * max_bins + k * rest) // max_bins + 1 for k in range(1, max_bins)})
                             if rest > 0 else [], dtype=np.int64)
            c = np.unique(values[np.searchsorted(upto, ranks, side="left")])
            cuts.append(c if len(c) >= max_bins - 1 else np.append(c, values[-1]))
        return cls(tuple(cuts))


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

    Two rounds of searches, each a few counting stages (one message round each), after the summed moments
    (the rule of XGBoost's ``hist`` sketch, with counts only):

    1. the least and the greatest value of each feature (ranks 1 and n): their final brackets, and the
       rows in each (``c_min``, ``c_max``: the rows at the minimum and at the maximum, for a feature whose
       values are more than the precision apart);
    2. the ranks ``r_k = floor(c_min + k (n - c_min - c_max) / max_bins) + 1`` for ``k = 1 .. max_bins - 1``:
       evenly spaced over the rows strictly between the minimum and the maximum, each searched from the
       bracket of round 1 that holds every value.

    A cut is the lower end of its rank's final bracket (clamped above the minimum's bracket), so the value
    of rank ``r_k`` opens a bin, as XGBoost's cut at that value does; ranks that fall on the same value give
    one cut, so a feature whose values pile up (a count, a flag, a risk score that is mostly 0) keeps fewer
    cuts than bins, and a pile at the minimum or at the maximum takes no rank at all. The maximum opens a
    bin of its own when fewer than ``max_bins - 1`` cuts were found.

    >>> sketch = QuantileSketch(n_features, max_bins, total_of(local_moments(X_i)))    # doctest: +SKIP
    >>> while not sketch.done:                                                           # doctest: +SKIP
    ...     sketch.advance(total_of(SortedColumns(X_i).counts(sketch.brackets())))
    >>> edges = sketch.edges()                                                           # doctest: +SKIP
    """

    def __init__(self, n_features: int, max_bins: int, moments: np.ndarray) -> None:
        m = np.asarray(moments, dtype=np.float64).reshape(3, n_features)
        counts = np.rint(m[0])
        if np.any(np.abs(m[0] - counts) > 0.25):
            raise FederationError("quantile sketch: the summed counts of values are not whole numbers")
        self.n_features = n_features
        self.max_bins = max_bins
        self.stages = 0
        self.rounds = 1
        self._n = counts.astype(np.int64)
        self._precision: list[float] = []
        self.targets: list[Target] = []
        self._kind: list[str] = []                          # "min", "max" (round 1) or "rank" (round 2)
        self._cell: list[tuple[int, int] | None] = []       # ranks (below, upto] of a done target's final bracket
        for f in range(n_features):
            n = int(self._n[f])
            if n == 0:
                self._precision.append(0.0)
                continue
            mean = m[1, f] / n
            std = float(np.sqrt(max(m[2, f] / n - mean * mean, 0.0)))
            lo, hi = _first_bracket(mean, std)
            self._precision.append((hi - lo) * DEFAULT_RESOLUTION)
            self._add(f, "min", 1, lo, hi)
            self._add(f, "max", n, lo, hi)

    def _add(self, feature: int, kind: str, rank: int, lo: float, hi: float) -> None:
        t = Target(block=None, column=str(feature), p=float(rank) / float(self._n[feature]), rank=int(rank))
        self.targets.append(t.start(lo, hi, self._precision[feature]))
        self._kind.append(kind)
        self._cell.append(None)

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
        """Advance every open search from the summed counts of :meth:`brackets` (and start round 2)."""
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
                self._cell[i] = (int(cum[cell - 1]), int(cum[cell]))
            self.targets[i] = new
        self.stages += 1
        if self.done and self.rounds == 1:
            self._start_ranks()
        if not self.done and self.stages >= MAX_STAGES:
            raise FederationError(f"quantile sketch: not converged after {MAX_STAGES} stages")

    def _ends(self, feature: int) -> tuple[Target, tuple[int, int], Target, tuple[int, int]] | None:
        """The final searches of the minimum and the maximum of a feature, with their rank spans."""
        lo_i = hi_i = None
        for i, t in enumerate(self.targets):
            if int(t.column) == feature and self._kind[i] in ("min", "max"):
                if self._kind[i] == "min":
                    lo_i = i
                else:
                    hi_i = i
        if lo_i is None or hi_i is None:
            return None
        return self.targets[lo_i], self._cell[lo_i], self.targets[hi_i], self._cell[hi_i]  # type: ignore[return-value]

    def _start_ranks(self) -> None:
        """Round 2: the ranks evenly spaced between the minimum's rows and the maximum's."""
        self.rounds = 2
        B = self.max_bins
        for f in range(self.n_features):
            ends = self._ends(f)
            if ends is None:
                continue
            t_min, (_, c_min), t_max, (below_max, _) = ends
            rest = below_max - c_min                         # rows strictly between the two end brackets
            if float(t_max.lo) <= float(t_min.lo) or rest <= 0:   # type: ignore[arg-type]
                continue
            ranks = sorted({(c_min * B + k * rest) // B + 1 for k in range(1, B)})   # in (c_min, below_max]
            for r in ranks:
                self._add(f, "rank", r, float(t_min.lo), float(t_max.hi))  # type: ignore[arg-type]

    def edges(self) -> BinEdges:
        """The cut points: the lower end of each rank's final bracket, deduplicated, then the maximum's."""
        if not self.done:
            raise FederationError("quantile sketch: edges asked for before every search converged")
        cuts: list[np.ndarray] = []
        for f in range(self.n_features):
            ends = self._ends(f)
            if ends is None or float(ends[2].lo) <= float(ends[0].lo):  # type: ignore[arg-type]
                cuts.append(np.zeros(0))
                continue
            floor = float(ends[0].hi)  # type: ignore[arg-type]
            mine = [max(float(t.lo), floor) for i, t in enumerate(self.targets)  # type: ignore[arg-type]
                    if int(t.column) == f and self._kind[i] == "rank" and t.status == "done"]
            c = np.unique(np.asarray(mine, dtype=np.float64))
            if len(c) < self.max_bins - 1:
                c = np.unique(np.append(c, max(float(ends[2].lo), floor)))  # type: ignore[arg-type]
            cuts.append(c)
        return BinEdges(tuple(cuts))


def _first_bracket(mean: float, std: float) -> tuple[float, float]:
    """The first bracket of a feature's searches: mean +/- 4 std, rounded to 6 significant digits.

    :func:`~fedx.analytics.quantiles.derived_range` rounds to 10 digits; the moments of a feature summed under
    HE differ from the plaintext ones by about 1e-10 relative (bfv-compact's 2^-24 fixed point, CKKS noise),
    so a coarser rounding keeps every run, encrypted or not, on the same brackets (and so the same cuts).
    """
    lo, hi = derived_range(mean, std)
    coarse = float(f"{lo:.6g}"), float(f"{hi:.6g}")
    return coarse if coarse[0] < coarse[1] else (lo, hi)
