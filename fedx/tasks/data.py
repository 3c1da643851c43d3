"""The table a task trains and scores on: features, target, offset and sample weights as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from ..config import Config
    from ..data.preprocess import Preprocessor


@dataclass(frozen=True)
class TabularData:
    """One institution's design matrix and targets, validated on construction.

    Parameters
    ----------
    X : np.ndarray
        Features, shape (n, d); stored as float32.
    y : np.ndarray
        Target, shape (n,); stored as float32.
    offset : np.ndarray, optional
        Known part of the linear predictor, shape (n,): log exposure for claim frequency.
    weight : np.ndarray, optional
        Non-negative sample weights, shape (n,): claim counts for claim severity.
    feature_names : tuple of str
        Names of the columns of ``X``: empty, or one per column.

    Raises
    ------
    DataError
        If shapes disagree, a value is NaN or infinite, or a weight is negative.
    """

    X: np.ndarray
    y: np.ndarray
    offset: np.ndarray | None = None
    weight: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        X = _finite_float32("X", self.X)
        if X.ndim != 2:
            raise DataError(f"TabularData.X: expected a 2-D array (rows, features), got shape {X.shape}")
        n = X.shape[0]
        names = tuple(str(s) for s in self.feature_names)
        if names and len(names) != X.shape[1]:
            raise DataError(f"TabularData.feature_names: expected {X.shape[1]} names (one per column of X), "
                            f"got {len(names)}")
        weight = None if self.weight is None else _vector("weight", self.weight, n)
        if weight is not None and (weight < 0).any():
            raise DataError(f"TabularData.weight: expected non-negative sample weights, got "
                            f"{int((weight < 0).sum())} negative values")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", _vector("y", self.y, n))
        object.__setattr__(self, "offset", None if self.offset is None else _vector("offset", self.offset, n))
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "feature_names", names)

    @classmethod
    def from_frame(cls, cfg: Config | None, prep: Preprocessor, df: pd.DataFrame, *,
                   offset: np.ndarray | None = None) -> TabularData:
        """The design matrix of the table ``df`` under the preprocessing ``prep``, with its targets.

        Parameters
        ----------
        cfg : Config or None
            The run's config: the target is column ``data.target``, the offset is the log of column
            ``data.exposure`` and the weights are column ``data.weight`` (each when declared). None for
            rows to score, whose target is unknown: the target is then zeros, and there are no weights.
        prep : Preprocessor
            The fitted preprocessing; it names the columns of ``X``.
        df : pandas.DataFrame
            The cleaned table (:func:`fedx.data.local.prepare_table`).
        offset : np.ndarray, optional
            The offset of each row, in place of the log exposure.
        """
        weight = None
        if cfg is None:
            y = np.zeros(len(df), dtype=np.float32)
        else:
            d = cfg.data
            y = df[d.target].to_numpy(dtype=np.float32)
            if offset is None and d.exposure:
                offset = np.log(df[d.exposure].to_numpy(dtype=np.float64)).astype(np.float32)
            weight = df[d.weight].to_numpy(dtype=np.float32) if d.weight else None
        return cls(prep.transform(df), y, offset=offset, weight=weight, feature_names=prep.feature_names)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])


def _finite_float32(field: str, values: np.ndarray) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"TabularData.{field}: expected numbers, got {exc}") from None
    if not arr.flags.writeable:  # torch shares the memory and needs it writable
        arr = arr.copy()
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"TabularData.{field}: expected finite values, got {int(bad.sum())} NaN or infinite "
                        f"(first at index {first[0] if len(first) == 1 else first})")
    return arr


def _vector(field: str, values: np.ndarray, n: int) -> np.ndarray:
    arr = _finite_float32(field, values)
    if arr.shape != (n,):
        raise DataError(f"TabularData.{field}: expected shape ({n},) to match the {n} rows of X, got {arr.shape}")
    return arr


#: What each target kind must hold.
TARGET_KINDS = {"binary": "0 or 1", "count": "non-negative values", "positive": "positive values"}


def check_target(y: np.ndarray, kind: str, field: str = "y") -> None:
    """Check that the target ``y`` holds what ``kind`` (binary, count or positive) requires.

    Raises
    ------
    DataError
        Counting the offending values and naming the first one.
    """
    if kind == "binary":
        bad = (y != 0) & (y != 1)
    elif kind == "count":
        bad = y < 0
    elif kind == "positive":
        bad = y <= 0
    else:
        raise DataError(f"target kind: expected one of {', '.join(TARGET_KINDS)}, got {kind!r}")
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{field}: a {kind} target must hold {TARGET_KINDS[kind]}; {int(bad.sum())} rows do not "
                        f"(first: row {i}, value {float(y[i]):g})")
