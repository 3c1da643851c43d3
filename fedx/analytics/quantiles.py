"""Quantiles by federated histogram refinement: the search state of one quantile and its update.

The quantile of probability p over n values is numpy's ``inverted_cdf`` definition: the k-th smallest
value, with ``k = ceil(n p)`` computed exactly as numpy computes it. A search holds a bracket ``[lo, hi)``.
Each stage, every institution counts its values below ``lo``, in :data:`SEARCH_BINS` equal bins of the
bracket, and at or above ``hi``; from the summed counts, the bracket becomes the bin that holds the k-th
value, or, when the k-th value lies outside, the span of :data:`SEARCH_BINS` brackets beyond that side.
The search stops when the bin is no wider than the precision, and reports a value interpolated by rank
inside it: the true quantile lies in the same bin, so the error is below the bin width.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import DataError

#: Bins a bracket is divided into at each stage.
SEARCH_BINS = 100
#: The first bracket, when none is declared, is the mean +/- this many standard deviations.
RANGE_STDS = 4.0
#: Default precision, as a share of the first bracket's width.
DEFAULT_RESOLUTION = 1e-4
#: Bins narrower than this share of their magnitude are not split further (float resolution).
FLOAT_RESOLUTION = 2.0**-40

Status = Literal["open", "done", "suppressed", "empty"]


@dataclass(frozen=True)
class Target:
    """The search for one quantile (plain data: it travels in the stage dict).

    Attributes
    ----------
    block : str or None
        The group the quantile is computed in (None for all rows).
    column : str
        The numeric column.
    p : float
        The probability.
    lo, hi : float or None
        The current bracket; None until the first one is known.
    precision : float or None
        Stop when the bracket is no wider than this; None until the first bracket is known.
    rank : int or None
        The 1-based rank of the quantile among the column's values, once their count is known.
    status : {"open", "done", "suppressed", "empty"}
        Searching, found, withheld by the policy, or undefined (no values).
    value, width : float or None
        The reported quantile and the width of its final bin.
    """

    block: str | None
    column: str
    p: float
    lo: float | None = None
    hi: float | None = None
    precision: float | None = None
    rank: int | None = None
    status: Status = "open"
    value: float | None = None
    width: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        """Inverse of :func:`dataclasses.asdict`."""
        return cls(**d)

    @property
    def counting(self) -> bool:
        """Whether institutions count values in this target's bracket at the current stage."""
        return self.status == "open" and self.lo is not None

    def start(self, lo: float, hi: float, precision: float | None) -> Target:
        """This target with its first bracket; the precision defaults to :data:`DEFAULT_RESOLUTION` of it."""
        return dataclasses.replace(self, lo=lo, hi=hi,
                                   precision=precision if precision is not None else (hi - lo) * DEFAULT_RESOLUTION)

    def advance(self, counts: np.ndarray) -> Target:
        """The next state, from the summed counts ``[below, bin_0 .. bin_{K-1}, above]`` of the bracket."""
        assert self.lo is not None and self.hi is not None and self.rank is not None and self.precision is not None
        cum = np.cumsum(counts)
        if cum[-1] < self.rank:
            raise DataError(f"quantile search of {self.column}: the stage counts {cum[-1]:.0f} values, fewer than "
                            f"the rank {self.rank} found at stage 1; the data changed between stages")
        cell = int(np.searchsorted(cum, self.rank, side="left"))
        span = self.hi - self.lo
        if cell == 0:
            return dataclasses.replace(self, lo=self.lo - span * SEARCH_BINS, hi=self.lo)
        if cell == SEARCH_BINS + 1:
            return dataclasses.replace(self, lo=self.hi, hi=self.hi + span * SEARCH_BINS)
        edges = search_edges(self.lo, self.hi)
        a, b = float(edges[cell - 1]), float(edges[cell])
        width = b - a
        if width <= self.precision * (1 + 1e-9) or width <= FLOAT_RESOLUTION * max(abs(a), abs(b)):
            below, inside = float(cum[cell - 1]), float(counts[cell])
            value = a + (self.rank - below - 0.5) / inside * width
            return dataclasses.replace(self, lo=a, hi=b, status="done", value=value, width=width)
        return dataclasses.replace(self, lo=a, hi=b)


def search_edges(lo: float, hi: float) -> np.ndarray:
    """The :data:`SEARCH_BINS` + 1 edges of a bracket."""
    return np.linspace(lo, hi, SEARCH_BINS + 1)


def inverted_cdf_rank(n: int, p: float) -> int:
    """The 1-based rank of numpy's ``inverted_cdf`` quantile of probability ``p`` among ``n`` values."""
    index = n * p - 1.0  # numpy's virtual index, in the same float arithmetic
    below = math.floor(index)
    return max(below if index == below else below + 1, 0) + 1


def derived_range(mean: float, std: float) -> tuple[float, float]:
    """The first bracket of a search without a declared range: mean +/- :data:`RANGE_STDS` std.

    Rounded to 10 significant digits, so that institutions whose decrypted sums differ in the last bits
    (CKKS) still derive the same bracket; a zero std gets a small positive half-width.
    """
    half = max(RANGE_STDS * std, 1e-9 * max(1.0, abs(mean)))
    return _round10(mean - half), _round10(mean + half)


def _round10(x: float) -> float:
    return float(f"{x:.10g}")
