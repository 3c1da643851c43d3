"""Reading one institution's columns as numbers or as category labels, and counting values into bins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SchemaError

#: Most distinct values a numeric column may take and still be used as categorical.
MAX_LEVELS = 30


def numeric_values(df: pd.DataFrame, column: str, source: str, purpose: str) -> np.ndarray:
    """The column as float64, NaN where missing.

    Raises
    ------
    SchemaError
        The column is absent, holds text, or holds an infinite value.
    """
    col = _column(df, column, source, purpose)
    try:
        x = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        sample = col.dropna().astype(str).iloc[0]
        raise SchemaError(f"{source}: column '{column}' must be numeric for {purpose}, found text such as "
                          f"{sample!r}") from None
    if np.isinf(x).any():
        raise SchemaError(f"{source}: column '{column}' holds an infinite value ({purpose} needs finite numbers)")
    return x


def category_labels(df: pd.DataFrame, column: str, source: str, purpose: str) -> np.ndarray:
    """The column as an object array of level labels (str), None where missing.

    Whole numbers print without a decimal point (``1``, not ``1.0``), so that an integer code reads the
    same at an institution whose column holds gaps (float) and at one whose column does not (int).

    Raises
    ------
    SchemaError
        The column is absent, or numeric with more than :data:`MAX_LEVELS` distinct values.
    """
    col = _column(df, column, source, purpose)
    present = col.dropna()
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        distinct = present.nunique()
        if distinct > MAX_LEVELS:
            raise SchemaError(f"{source}: column '{column}' is numeric with {distinct} distinct values; {purpose} "
                              f"needs a categorical column (at most {MAX_LEVELS} levels). Use stats.histograms, "
                              f"or stats.group_bins to group by bands of a numeric column")
        distinct_values, inverse = np.unique(present.to_numpy(dtype=np.float64), return_inverse=True)
        labels = np.array([number_label(v) for v in distinct_values.tolist()], dtype=object)[inverse]
    else:
        labels = present.astype(str).to_numpy(dtype=object)
    out = np.full(len(col), None, dtype=object)
    out[col.notna().to_numpy()] = labels
    return out


def bin_counts(x: np.ndarray, edges: np.ndarray, *, closed_last: bool) -> np.ndarray:
    """Counts ``[below, bin_0, ..., bin_{m-1}, above]`` of the finite values ``x`` over ``m + 1`` edges.

    Bin j holds ``edges[j] <= x < edges[j+1]``. With ``closed_last`` the last bin also holds ``x ==
    edges[-1]``, as in :func:`numpy.histogram`; without it that value counts as above.
    """
    return np.bincount(bin_index(x, edges, closed_last=closed_last) + 1, minlength=len(edges) + 1).astype(np.float64)


def bin_index(x: np.ndarray, edges: np.ndarray, *, closed_last: bool) -> np.ndarray:
    """The bin of each value: -1 below the first edge, ``m`` above the last, else ``0 .. m-1``."""
    m = len(edges) - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    if closed_last:
        idx[x == edges[-1]] = m - 1
    return np.minimum(idx, m)


def bin_labels(edges: tuple[float, ...]) -> list[str]:
    """Interval labels of histogram bins, ``[20,30)`` ... ``[70,80]`` (the last bin is closed)."""
    text = [number_label(e) for e in edges]
    return [f"[{a},{b})" for a, b in zip(text[:-2], text[1:-1])] + [f"[{text[-2]},{text[-1]}]"]


def number_label(value: float) -> str:
    """A number as a label: ``40`` for a whole number, else the shortest round-trip form (``0.5``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _column(df: pd.DataFrame, column: str, source: str, purpose: str) -> pd.Series:
    if column not in df.columns:
        have = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
        raise SchemaError(f"{source}: column '{column}' does not exist ({purpose} asks for it); the table has: "
                          f"{have}")
    return df[column]
