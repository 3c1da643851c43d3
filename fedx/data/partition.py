"""Splitting one table into institutions, and one institution's rows into train and test.

Every partitioner returns ``{institution name: its rows}``, uses each row exactly once, keeps the
rows in their original order (and index) within each part, and is deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, SchemaError
from .sources import check_keywords

Partitioner = Callable[..., dict[str, pd.DataFrame]]


def natural(df: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """One institution per value of ``column`` (its name is the value as text), in sorted order."""
    _require_column(df, column, "split_by")
    col = df[column]
    if col.isna().any():
        i = int(np.argmax(col.isna().to_numpy()))
        raise DataError(f"column {column}: {int(col.isna().sum())} row(s) name no institution "
                        f"(first at row {df.index[i]!r})")
    names = col.astype(str).to_numpy()
    distinct = sorted(set(names))
    if len(distinct) != col.nunique():
        raise DataError(f"column {column}: different values have the same text, so they cannot name "
                        f"institutions apart")
    return {name: df[names == name] for name in distinct}


def iid(df: pd.DataFrame, n: int | None = None, *, sizes: Sequence[float] | None = None, seed: int = 7
        ) -> dict[str, pd.DataFrame]:
    """Rows shuffled and dealt into institutions of equal (or the given) sizes.

    Parameters
    ----------
    n : int, optional
        Number of institutions of (nearly) equal size.
    sizes : sequence of numbers, optional
        Instead of ``n``: row counts (whole numbers adding up to the number of rows) or fractions
        (adding up to 1).
    """
    if (n is None) == (sizes is None):
        raise ConfigError("iid: give either n (number of institutions) or sizes, not both")
    if sizes is None:
        n = _check_count(n, len(df))
        sizes = [1.0 / n] * n
    counts = _counts(sizes, len(df))
    order = np.random.default_rng(seed).permutation(len(df))
    return _named(df, np.split(order, np.cumsum(counts)[:-1]))


def dirichlet_label_skew(df: pd.DataFrame, label: str, n: int, alpha: float, *, seed: int = 7,
                         min_size: int = 10, max_tries: int = 1000) -> dict[str, pd.DataFrame]:
    """Label skew: each label's rows are shared out in Dirichlet(alpha) proportions.

    The classic scheme (Yurochkin et al. 2019; Hsu et al. 2019): for each label value, draw
    proportions over the institutions from Dirichlet(alpha); an institution that already holds its
    share of rows gets no more. Draws repeat until every institution has ``min_size`` rows. Small
    ``alpha`` gives strong skew; large ``alpha`` gives nearly the same label mix everywhere.
    """
    _require_column(df, label, "label")
    n = _check_count(n, len(df))
    alpha = _check_alpha(alpha)
    if n * min_size > len(df):
        raise DataError(f"dirichlet: {n} institutions of at least {min_size} rows need {n * min_size} rows, "
                        f"the table has {len(df)}")
    y = df[label]
    if y.isna().any():
        raise DataError(f"column {label}: the label has {int(y.isna().sum())} missing cell(s)")
    codes = pd.factorize(y, sort=True)[0]
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        held = np.zeros(n, dtype=np.int64)
        for k in range(codes.max() + 1):
            rows = rng.permutation(np.flatnonzero(codes == k))
            p = rng.dirichlet(np.full(n, alpha))
            p = np.where(held < len(df) / n, p, 0.0)
            p = p / p.sum() if p.sum() > 0 else np.full(n, 1.0 / n)
            cuts = (np.cumsum(p)[:-1] * rows.size).astype(np.int64)
            for i, chunk in enumerate(np.split(rows, cuts)):
                parts[i].append(chunk)
                held[i] += chunk.size
        if held.min() >= min_size:
            return _named(df, [np.concatenate(p) for p in parts])
    raise DataError(f"dirichlet: no split with at least {min_size} rows per institution in {max_tries} draws; "
                    f"raise alpha, or lower n or min_size")


def quantity_skew(df: pd.DataFrame, n: int, alpha: float = 0.5, *, seed: int = 7, min_size: int = 1
                  ) -> dict[str, pd.DataFrame]:
    """Quantity skew: institution sizes in Dirichlet(alpha) proportions, each at least ``min_size`` rows."""
    n = _check_count(n, len(df))
    alpha = _check_alpha(alpha)
    if n * min_size > len(df):
        raise DataError(f"quantity: {n} institutions of at least {min_size} rows need {n * min_size} rows, "
                        f"the table has {len(df)}")
    rng = np.random.default_rng(seed)
    spare = len(df) - n * min_size
    counts = min_size + _largest_remainder(rng.dirichlet(np.full(n, alpha)) * spare, spare)
    order = rng.permutation(len(df))
    return _named(df, np.split(order, np.cumsum(counts)[:-1]))


PARTITIONERS: dict[str, Partitioner] = {
    "natural": natural,
    "iid": iid,
    "dirichlet": dirichlet_label_skew,
    "quantity": quantity_skew,
}


def partition(df: pd.DataFrame, method: str, **kwargs: Any) -> dict[str, pd.DataFrame]:
    """Split ``df`` with the named method (one of :data:`PARTITIONERS`), passing ``kwargs`` on.

    ``natural`` names institutions by the column's values; the others name them ``inst_0``,
    ``inst_1``, ...
    """
    if method not in PARTITIONERS:
        raise ConfigError(f"partition method: expected one of {', '.join(PARTITIONERS)}, got {method!r}")
    func = PARTITIONERS[method]
    check_keywords(func, kwargs, f"partition method {method!r}", skip=("df",))
    return func(df, **kwargs)


def train_test_split_local(df: pd.DataFrame, test_fraction: float, seed: int = 7, stratify: str | None = None
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One institution's train and test rows, in their original order.

    Parameters
    ----------
    test_fraction : float
        Share held out for testing, in [0, 1); 0 gives an empty test frame. At least one row is
        always kept for training.
    stratify : str, optional
        A column (such as a binary target) whose every value is split in the same proportion.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction: expected a number in [0, 1), got {test_fraction}")
    if len(df) == 0:
        raise DataError("cannot split an empty table")
    n_test = min(round(test_fraction * len(df)), len(df) - 1)
    rng = np.random.default_rng(seed)
    if stratify is None:
        test = rng.choice(len(df), size=n_test, replace=False)
    else:
        _require_column(df, stratify, "stratify")
        strata = df[stratify]
        if strata.isna().any():
            raise DataError(f"column {stratify}: cannot stratify on a column with missing cells")
        codes = pd.factorize(strata, sort=True)[0]
        groups = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
        quota = _largest_remainder(np.array([g.size for g in groups]) * (n_test / len(df)), n_test)
        test = np.concatenate([rng.choice(g, size=q, replace=False) for g, q in zip(groups, quota)])
    is_test = np.zeros(len(df), dtype=bool)
    is_test[test] = True
    return df[~is_test], df[is_test]


def _named(df: pd.DataFrame, parts: Sequence[np.ndarray]) -> dict[str, pd.DataFrame]:
    return {f"inst_{i}": df.iloc[np.sort(rows)] for i, rows in enumerate(parts)}


def _counts(sizes: Sequence[float], n_rows: int) -> np.ndarray:
    """Row counts from whole-number sizes (adding up to ``n_rows``) or fractions (adding up to 1)."""
    s = np.asarray(sizes, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ConfigError(f"sizes: expected positive numbers, got {list(sizes)}")
    if np.all(s == np.round(s)) and not (s.size == 1 and s[0] == 1.0):
        if s.sum() != n_rows:
            raise DataError(f"sizes: row counts {[int(v) for v in s]} add up to {int(s.sum())}, the table has "
                            f"{n_rows} rows (give counts that add up to it, or fractions that add up to 1)")
        return s.astype(np.int64)
    if abs(s.sum() - 1.0) > 1e-6:
        raise ConfigError(f"sizes: fractions {list(sizes)} add up to {s.sum():g}, expected 1")
    counts = _largest_remainder(s * n_rows, n_rows)
    if counts.min() < 1:
        raise DataError(f"sizes: fractions {list(sizes)} of {n_rows} rows leave an institution with no rows")
    return counts


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Whole numbers near ``quotas`` that add up to ``total`` (largest remainders get the spare units)."""
    base = np.floor(quotas).astype(np.int64)
    spare = total - int(base.sum())
    base[np.argsort(-(quotas - base), kind="stable")[:spare]] += 1
    return base


def _check_count(n: Any, n_rows: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n: expected a positive whole number of institutions, got {n!r}")
    if n > n_rows:
        raise DataError(f"cannot split {n_rows} rows into {n} institutions")
    return int(n)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"alpha: expected a positive number, got {alpha!r}")
    return float(alpha)


def _require_column(df: pd.DataFrame, column: str, role: str) -> None:
    if column not in df.columns:
        raise SchemaError(f"{role}: column {column!r} is not in the table (columns: "
                          f"{', '.join(map(str, list(df.columns)[:20]))})")
