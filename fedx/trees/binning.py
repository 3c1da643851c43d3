"""Bin edges of every feature, and the federated quantile sketch that finds them without pooling rows.

A feature's cut points ``c_0 < c_1 < ... < c_{m-1}`` give it ``m + 1`` bins: bin ``k`` holds the values
with exactly ``k`` cut points at or below them (``x < c_0`` is bin 0), and a missing value (NaN) has a bin
of its own after them. A split "at bin k" sends ``x < c_k`` left, so a model keeps raw thresholds.

The cut points are rank quantiles of the pooled values, placed as XGBoost's ``hist`` sketch places them
(weights 1, no hessian): ``max_bins - 1`` ranks evenly spaced over the rows, leaving out a pile at the
minimum or at the maximum, each cut at the value of its rank (that value opens a bin), and ranks that fall
on the same value give one cut. The federated search (:class:`QuantileSketch`) finds them with the histogram
refinement of :mod:`fedx.analytics.quantiles` (the :class:`~fedx.analytics.quantiles.Target` search that
``fedx stats`` runs): the institutions sum their moments once, then at each stage their counts of values in
the open brackets; every institution advances the same searches from the same sums. A cut is the lower
end of its rank's final bracket: below the value of that rank by less than the bracket's width (the
precision, 1e-6 of the first bracket, unless float resolution stops the search first), and no other value
lies between the two unless it falls in the same final bracket. Values further apart than that are split
exactly as the pooled rule splits them (:meth:`BinEdges.from_quantiles`).
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
    search_edges,
)
from ..errors import DataError, FederationError
from .params import MAX_BINS

#: A sketch that has not converged after this many counting stages is stopped with an error.
MAX_STAGES = 64
#: A search stops when its bracket is no wider than this share of the feature's first bracket (mean +/- 4
#: std): finer than :data:`~fedx.analytics.quantiles.DEFAULT_RESOLUTION`, so that values 1e-5 standard
#: deviations apart (the risk scores just above a pile at 0) still get cuts of their own.
SKETCH_RESOLUTION = 1e-6


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

        For tests and baselines only (a federation uses :class:`QuantileSketch`). With ``n`` present values,
        ``c_min`` is the rows at the minimum when they hold rank ``floor(n / max_bins) + 1`` (a pile), else 0,
        and ``c_max`` the rows at the maximum when they hold rank ``floor((max_bins - 1) n / max_bins) + 1``,
        else 0. The ranks are ``c_min + floor(k (n - c_min - c_max) / max_bins) + 1`` for
        ``k = 1 .. max_bins - 1``; each cut is the value of its rank (so that value opens a bin), repeated
        values give one cut, and a pile at the maximum opens a bin of its own when fewer than
        ``max_bins - 1`` cuts are found.
        """
        X = np.asarray(X, dtype=np.float64)
        cuts = []
        for f in range(X.shape[1]):
            values, count = np.unique(X[:, f][~np.isnan(X[:, f])], return_counts=True)
            if values.size < 2:
                cuts.append(np.zeros(0))
                continue
            upto = np.cumsum(count)
            n = int(upto[-1])
            c_min = int(count[0]) if count[0] >= n // max_bins + 1 else 0
            c_max = int(count[-1]) if n - count[-1] < ((max_bins - 1) * n) // max_bins + 1 else 0
            ranks = np.array(_spread(c_min, n - c_min - c_max, max_bins), dtype=np.int64)
            c = np.unique(values[np.searchsorted(upto, ranks, side="left")])
            cuts.append(np.append(c, values[-1]) if c_max and len(c) < max_bins - 1 else c)
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

    At most two rounds of searches, each a few counting stages (one message round each), after the summed
    moments:

    1. the ranks ``floor(k n / max_bins) + 1`` (``k = 1 .. max_bins - 1``) of each feature, from the bracket
       mean +/- 4 std. When the first of them falls in a bracket with no value below it, the feature's
       minimum holds a pile of at least ``n / max_bins`` rows: ``c_min`` is the rows of that bracket (0
       otherwise); likewise ``c_max`` from the last rank and a bracket with no value above it. A feature
       with no pile at either end keeps these searches;
    2. for a feature with a pile at an end, the ranks ``c_min + floor(k (n - c_min - c_max) / max_bins) + 1``,
       evenly spaced over the rows between the piles, each searched from the piles' brackets (or the first
       bracket on a side without a pile).

    A cut is the lower end of its rank's final bracket (raised to the upper end of the minimum's pile), so the
    value of that rank opens a bin, as XGBoost's cut at that value does; ranks that fall on the same value give
    one cut, so a feature whose values pile up (a count, a flag, a risk score that is mostly 0) keeps fewer
    cuts than bins. A pile at the maximum opens a bin of its own when fewer than ``max_bins - 1`` cuts were
    found. No search is for the least or the greatest value as such (a federated minimum or maximum would
    reveal an extreme record): an end of the range is located only where a pile of at least
    ``n / max_bins`` rows is, or where the rows beyond a pile are so few that the ranks reach every one
    of them (fewer than ``max_bins``), as any quantile of so few rows does.

    >>> sketch = QuantileSketch(n_features, max_bins, total_of(local_moments(X_i)))    # doctest: +SKIP
    >>> while not sketch.done:                                                           # doctest: +SKIP
    ...     sketch.advance(total_of(SortedColumns(X_i).counts(sketch.brackets())))
    >>> edges = sketch.edges()                                                           # doctest: +SKIP
    """

    def __init__(self, n_features: int, max_bins: int, moments: np.ndarray,
                 resolution: float = SKETCH_RESOLUTION) -> None:
        m = np.asarray(moments, dtype=np.float64).reshape(3, n_features)
        counts = np.rint(m[0])
        if np.any(np.abs(m[0] - counts) > 0.25):
            raise FederationError("quantile sketch: the summed counts of values are not whole numbers")
        self.n_features = n_features
        self.max_bins = max_bins
        self.stages = 0
        self.rounds = 1
        self._n = counts.astype(np.int64)
        self._first: list[tuple[float, float] | None] = []
        self._precision: list[float] = []
        self.targets: list[Target] = []
        self._round: list[int] = []                          # the round of each target
        self._cell: list[tuple[int, int] | None] = []       # ranks (below, upto] of a done target's final bracket
        # per feature: the round whose searches give the cuts, the minimum's pile (c_min, lo, hi) and the
        # maximum's (c_max, lo, hi), when there is one
        self._final = [1] * n_features
        self._low: list[tuple[int, float, float] | None] = [None] * n_features
        self._high: list[tuple[int, float, float] | None] = [None] * n_features
        for f in range(n_features):
            n = int(self._n[f])
            if n == 0:
                self._first.append(None)
                self._precision.append(0.0)
                continue
            mean = m[1, f] / n
            std = float(np.sqrt(max(m[2, f] / n - mean * mean, 0.0)))
            lo, hi = _first_bracket(mean, std)
            self._first.append((lo, hi))
            self._precision.append((hi - lo) * resolution)
            for r in _spread(0, n, max_bins):
                self._add(f, 1, r, lo, hi)

    def _add(self, feature: int, round_: int, rank: int, lo: float, hi: float) -> None:
        t = Target(block=None, column=str(feature), p=float(rank) / float(self._n[feature]), rank=int(rank))
        self.targets.append(t.start(lo, hi, self._precision[feature]))
        self._round.append(round_)
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
            self._start_inner()
        if not self.done and self.stages >= MAX_STAGES:
            raise FederationError(f"quantile sketch: not converged after {MAX_STAGES} stages")

    def _mine(self, feature: int, round_: int) -> list[int]:
        return [i for i, t in enumerate(self.targets) if int(t.column) == feature and self._round[i] == round_
                and t.status == "done"]

    def _start_inner(self) -> None:
        """Round 2, for the features with a pile at an end: the ranks evenly spaced between the piles."""
        self.rounds = 2
        B = self.max_bins
        for f in range(self.n_features):
            mine = self._mine(f, 1)
            if not mine:
                continue
            n = int(self._n[f])
            first, last = min(mine, key=lambda i: self.targets[i].rank), max(mine, key=lambda i: self.targets[i].rank)
            (below, upto), (below_top, upto_top) = self._cell[first], self._cell[last]  # type: ignore[misc]
            if below == 0:
                self._low[f] = (upto, float(self.targets[first].lo), float(self.targets[first].hi))  # type: ignore[arg-type]
            if upto_top == n:
                self._high[f] = (n - below_top, float(self.targets[last].lo), float(self.targets[last].hi))  # type: ignore[arg-type]
            low, high = self._low[f], self._high[f]
            if low is None and high is None:
                continue
            self._final[f] = 2
            c_min, c_max = (low[0] if low else 0), (high[0] if high else 0)
            if c_min + c_max >= n:                           # two piles hold every row (or one: a constant)
                continue
            first_lo, first_hi = self._first[f]  # type: ignore[misc]
            lo, hi = (low[1] if low else first_lo), (high[2] if high else first_hi)
            for r in _spread(c_min, n - c_min - c_max, B):
                self._add(f, 2, r, lo, hi)

    def edges(self) -> BinEdges:
        """The cut points: the lower end of each final bracket, deduplicated (and a pile at the maximum's)."""
        if not self.done:
            raise FederationError("quantile sketch: edges asked for before every search converged")
        cuts: list[np.ndarray] = []
        for f in range(self.n_features):
            low, high = self._low[f], self._high[f]
            floor = low[2] if low else -np.inf
            mine = [max(float(self.targets[i].lo), floor) for i in self._mine(f, self._final[f])]  # type: ignore[arg-type]
            c = np.unique(np.asarray(mine, dtype=np.float64))
            if high is not None and len(c) < self.max_bins - 1 and high[1] > floor and (low is None or high[1] > low[1]):
                c = np.unique(np.append(c, high[1]))
            cuts.append(c)
        return BinEdges(tuple(cuts))


def _spread(start: int, count: int, max_bins: int) -> list[int]:
    """The ranks ``start + floor(k count / max_bins) + 1`` for ``k = 1 .. max_bins - 1``, deduplicated."""
    if count <= 0:
        return []
    return sorted({start + (k * count) // max_bins + 1 for k in range(1, max_bins)})


def _first_bracket(mean: float, std: float) -> tuple[float, float]:
    """The first bracket of a feature's searches: mean +/- 4 std, rounded to 6 significant digits.

    :func:`~fedx.analytics.quantiles.derived_range` rounds to 10 digits; the moments of a feature summed under
    HE differ from the plaintext ones by about 1e-10 relative (bfv-compact's 2^-24 fixed point, CKKS noise),
    so a coarser rounding keeps every run, encrypted or not, on the same brackets (and so the same cuts).
    """
    lo, hi = derived_range(mean, std)
    coarse = float(f"{lo:.6g}"), float(f"{hi:.6g}")
    return coarse if coarse[0] < coarse[1] else (lo, hi)
