"""The pieces of a stage vector: what each segment sums, and how an institution computes it.

A stage vector is the concatenation of segments, in the order :meth:`StatsPlan.layout` gives. Each
segment is one additive statistic of the rows of one block (all rows, or one group):

========== ===================================================== =========
kind       values                                                role
========== ===================================================== =========
rows       number of rows                                        cell
count      number of present values of a column                  cell
sums       sum and sum of squares of those values                sum
hist       below the first edge, each bin, above the last edge   cell
freq       each level, then missing                              cell
xtab       each (row level, column level) pair, row-major        cell
corr_n     number of complete cases of the correlation columns   cell
corr_sums  sum of each column, then x_i x_j for i <= j          sum
search     below, each bin of a quantile bracket, at/above      internal
nonce      random integers in [0, 2^20), only with noise         nonce
========== ===================================================== =========

Cells are released (after the policy), sums feed released moments, internal counts are decrypted by
institutions and never released, and the nonce makes the noise seed unknown to the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import SchemaError
from .columns import bin_counts, category_labels, numeric_values
from .quantiles import SEARCH_BINS, search_edges

Kind = Literal["rows", "count", "sums", "hist", "freq", "xtab", "corr_n", "corr_sums", "search", "nonce"]
Role = Literal["cell", "sum", "internal", "nonce"]
NONCE_SLOTS = 4
NONCE_RANGE = 2**20
_ROLES: dict[str, Role] = {"rows": "cell", "count": "cell", "sums": "sum", "hist": "cell", "freq": "cell",
                           "xtab": "cell", "corr_n": "cell", "corr_sums": "sum", "search": "internal",
                           "nonce": "nonce"}


@dataclass(frozen=True)
class Segment:
    """One additive statistic of one block.

    Attributes
    ----------
    kind : str
        What it sums (see the module's table).
    block : str or None
        The group label, or None for all rows.
    columns : tuple of str
        The columns it reads.
    edges : tuple of float
        Histogram edges, or the ``(lo, hi)`` bracket of a quantile search.
    levels : tuple of tuple of str
        The levels of each categorical column it reads.
    clip : tuple of (lo, hi) or None
        Per column, the bounds values are clipped to before summing (noisy sums only).
    names : tuple of str
        The released name of each cell (cell segments only), for suppression and refusals.
    """

    kind: Kind
    block: str | None
    columns: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()
    levels: tuple[tuple[str, ...], ...] = ()
    clip: tuple[tuple[float, float] | None, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def role(self) -> Role:
        """cell, sum, internal or nonce."""
        return _ROLES[self.kind]

    @property
    def checked_locally(self) -> bool:
        """Whether each institution applies its local minimum to these cells: every cell but its own row
        count, which the federation reports anyway."""
        return self.role == "cell" and not (self.kind == "rows" and self.block is None)

    @property
    def size(self) -> int:
        """Number of values in the stage vector."""
        if self.kind == "sums":
            return 2
        if self.kind == "hist":
            return len(self.edges) + 1
        if self.kind == "freq":
            return len(self.levels[0]) + 1
        if self.kind == "xtab":
            return len(self.levels[0]) * len(self.levels[1])
        if self.kind == "corr_sums":
            p = len(self.columns)
            return p + p * (p + 1) // 2
        if self.kind == "search":
            return SEARCH_BINS + 2
        if self.kind == "nonce":
            return NONCE_SLOTS
        return 1


class LocalTable:
    """One institution's rows, read column by column (cached) as numbers or level codes.

    Parameters
    ----------
    df : pandas.DataFrame
        The institution's table.
    source : str
        Its name in error messages.
    numeric, categorical : mapping of str to str
        The columns read as numbers, or as categories, and the config key that asks for each.
    """

    def __init__(self, df: pd.DataFrame, source: str, numeric: Mapping[str, str],
                 categorical: Mapping[str, str]) -> None:
        self.df, self.source = df, source
        self._numeric_uses, self._categorical_uses = numeric, categorical
        self._numbers: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.df)

    def numbers(self, column: str) -> np.ndarray:
        """The column as float64, NaN where missing."""
        if column not in self._numbers:
            self._numbers[column] = numeric_values(self.df, column, self.source, self._numeric_uses[column])
        return self._numbers[column]

    def labels(self, column: str) -> np.ndarray:
        """The column's level labels (object array, None where missing)."""
        if column not in self._labels:
            self._labels[column] = category_labels(self.df, column, self.source, self._categorical_uses[column])
        return self._labels[column]

    def codes(self, column: str, levels: tuple[str, ...]) -> np.ndarray:
        """The index of each row's level in ``levels``, -1 where missing.

        Raises
        ------
        SchemaError
            A row holds a level outside ``levels``.
        """
        labels = self.labels(column)
        codes = pd.Index(levels, dtype=object).get_indexer(labels).astype(np.int64)
        outside = (codes < 0) & pd.notna(labels)
        if outside.any():
            unknown = sorted(set(labels[outside]))
            raise SchemaError(f"{self.source}: column '{column}' holds levels {unknown[:5]} outside the known "
                              f"levels {list(levels)}; declare them in stats.levels.{column}, or let the "
                              f"federation discover them")
        return codes

    def values(self, seg: Segment, rows: np.ndarray) -> np.ndarray:
        """The segment's additive statistic over the selected rows (a boolean mask)."""
        if seg.kind == "rows":
            return np.array([float(rows.sum())])
        if seg.kind in ("count", "sums", "hist", "search"):
            x = self.numbers(seg.columns[0])[rows]
            x = x[~np.isnan(x)]
            if seg.kind == "count":
                return np.array([float(x.size)])
            if seg.kind == "sums":
                x = _clipped(x, seg.clip[0])
                return np.array([x.sum(), np.square(x).sum()])
            if seg.kind == "hist":
                return bin_counts(x, np.asarray(seg.edges), closed_last=True)
            return bin_counts(x, search_edges(*seg.edges), closed_last=False)
        if seg.kind == "freq":
            codes = self.codes(seg.columns[0], seg.levels[0])[rows]
            return np.bincount(np.where(codes < 0, len(seg.levels[0]), codes),
                               minlength=len(seg.levels[0]) + 1).astype(np.float64)
        if seg.kind == "xtab":
            a = self.codes(seg.columns[0], seg.levels[0])[rows]
            b = self.codes(seg.columns[1], seg.levels[1])[rows]
            both = (a >= 0) & (b >= 0)
            width = len(seg.levels[1])
            return np.bincount(a[both] * width + b[both], minlength=seg.size).astype(np.float64)
        if seg.kind in ("corr_n", "corr_sums"):
            x = np.column_stack([self.numbers(c)[rows] for c in seg.columns])
            x = x[~np.isnan(x).any(axis=1)]
            if seg.kind == "corr_n":
                return np.array([float(x.shape[0])])
            x = np.column_stack([_clipped(x[:, j], seg.clip[j]) for j in range(x.shape[1])])
            upper = np.triu_indices(x.shape[1])
            return np.concatenate([x.sum(axis=0), (x.T @ x)[upper]])
        raise ValueError(f"segment kind {seg.kind!r} has no local statistic")  # nonce: drawn by the caller


def _clipped(x: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    return x if bounds is None else np.clip(x, bounds[0], bounds[1])
