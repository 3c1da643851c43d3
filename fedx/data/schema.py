"""Declared schemas of tabular data: which columns are features (numeric or categorical), which is
the target, and which hold exposure, weights or the institution's name.

When a config declares no features, each column's kind is inferred from its type
(:func:`kind_of`): from one table by :meth:`Schema.infer`, or at every institution by
:func:`column_kinds`, whose answers the server merges into one schema (:func:`merge_column_kinds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import SchemaError

TargetKind = Literal["binary", "count", "positive", "any"]
ColumnKind = Literal["numeric", "categorical", "empty"]
_TARGET_RULES: dict[str, str] = {
    "binary": "0 or 1",
    "count": "non-negative whole numbers",
    "positive": "positive numbers",
    "any": "finite numbers",
}


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column.

    Parameters
    ----------
    name : str
        Column name.
    kind : {"numeric", "categorical"}
        How the column is encoded.
    levels : tuple of str, optional
        The allowed levels of a categorical feature; ``None`` leaves them to be discovered.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    levels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise SchemaError(f"feature {self.name}: kind must be numeric or categorical, got {self.kind!r}")
        if self.levels is not None:
            if self.kind == "numeric":
                raise SchemaError(f"feature {self.name}: levels are only for categorical features")
            object.__setattr__(self, "levels", tuple(str(v) for v in self.levels))


@dataclass(frozen=True)
class Schema:
    """The columns a task reads from each institution's table.

    Parameters
    ----------
    features : tuple of FeatureSpec
        The model's inputs. Missing cells are allowed (they are imputed later).
    target : str
        The column to predict.
    exposure : str, optional
        Exposure (years at risk) of each row: positive, never missing.
    weight : str, optional
        Non-negative sample weight of each row; rows of weight 0 carry no target.
    split_by : str, optional
        The column naming each row's institution: never missing.
    """

    features: tuple[FeatureSpec, ...]
    target: str
    exposure: str | None = None
    weight: str | None = None
    split_by: str | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the features, in order."""
        return tuple(f.name for f in self.features)

    @classmethod
    def infer(cls, df: pd.DataFrame, target: str, *, exclude: Iterable[str] = (), exposure: str | None = None,
              weight: str | None = None, split_by: str | None = None) -> Schema:
        """A schema with every column of ``df`` but the named ones as a feature.

        Numeric columns become numeric features; text, boolean and categorical columns become
        categorical features, with their levels (as strings, sorted).
        """
        skip = {target, *exclude} | {c for c in (exposure, weight, split_by) if c is not None}
        features = []
        for name in df.columns:
            if name in skip:
                continue
            col = df[name]
            if _encoding(col) == "numeric":
                features.append(FeatureSpec(str(name), "numeric"))
            else:
                levels = tuple(sorted({str(v) for v in col.dropna().unique()}))
                features.append(FeatureSpec(str(name), "categorical", levels))
        return cls(features=tuple(features), target=target, exposure=exposure, weight=weight, split_by=split_by)

    def validate(self, df: pd.DataFrame, source: str, target_kind: TargetKind = "any") -> None:
        """Check ``df`` against the schema.

        Parameters
        ----------
        df : pandas.DataFrame
            One institution's table.
        source : str
            Where the table came from (a file path, or a synthetic source), named in errors.
        target_kind : {"binary", "count", "positive", "any"}
            What the task needs of the target. When a weight column is declared, only rows of
            positive weight need a valid target.

        Raises
        ------
        SchemaError
            Naming the source, the column, and the first offending value and row.
        """
        if target_kind not in _TARGET_RULES:
            raise SchemaError(f"target_kind: expected one of {', '.join(_TARGET_RULES)}, got {target_kind!r}")
        roles = [(spec.name, "feature") for spec in self.features] + [(self.target, "target")]
        roles += [(col, role) for col, role in ((self.exposure, "exposure"), (self.weight, "weight"),
                                                (self.split_by, "split_by")) if col is not None]
        missing = [f"{col!r} ({role})" for col, role in roles if col not in df.columns]
        if missing:
            shown = ", ".join(map(str, list(df.columns)[:20])) + (", ..." if len(df.columns) > 20 else "")
            raise SchemaError(f"{source}: missing column(s) {', '.join(missing)}; the table has: {shown}")
        for spec in self.features:
            if spec.kind == "numeric":
                numbers(df[spec.name], source, "the value", allow_missing=True)
            elif spec.levels is not None:
                _check_levels(df[spec.name], source, spec)
        rows = np.ones(len(df), dtype=bool)
        if self.weight is not None:
            w = numbers(df[self.weight], source, "the weight", allow_missing=False)
            _require(w >= 0, w, df[self.weight], source, "the weight", "non-negative numbers")
            rows = w > 0
        target = df[self.target][rows]
        y = numbers(target, source, "the label", allow_missing=False)
        if target_kind == "binary":
            _require((y == 0) | (y == 1), y, target, source, "the label", _TARGET_RULES["binary"])
        elif target_kind == "count":
            _require((y >= 0) & (y == np.floor(y)), y, target, source, "the label", _TARGET_RULES["count"])
        elif target_kind == "positive":
            _require(y > 0, y, target, source, "the label", _TARGET_RULES["positive"])
        if self.exposure is not None:
            e = numbers(df[self.exposure], source, "the exposure", allow_missing=False)
            _require(e > 0, e, df[self.exposure], source, "the exposure", "positive numbers")
        if self.split_by is not None:
            gaps = df[self.split_by].isna().to_numpy()
            if gaps.any():
                raise SchemaError(f"{_at(source, df[self.split_by], int(np.argmax(gaps)))}: the institution's "
                                  f"name (split_by) is missing{_more(int(gaps.sum()))}; every row must name its "
                                  f"institution")


def kind_of(col: pd.Series) -> ColumnKind:
    """How an undeclared feature column is encoded, from its type alone.

    ``"numeric"`` for a numeric column (booleans excepted), ``"categorical"`` for text, boolean and
    categorical columns, ``"empty"`` when every cell is missing (the column says nothing of its kind).
    :func:`fedx.data.checks.column_kind` adds the check that a text column is not numbers with typos.
    """
    if col.isna().all():
        return "empty"
    return _encoding(col)


def _encoding(col: pd.Series) -> Literal["numeric", "categorical"]:
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return "numeric"
    return "categorical"


def column_kinds(df: pd.DataFrame, exclude: Iterable[str] = ()) -> dict[str, ColumnKind]:
    """The kind (:func:`kind_of`) of every column of ``df`` but the ``exclude`` ones, by name.

    An institution sends these (names and kinds, no values) when the config declares no features.
    """
    skip = set(exclude)
    return {str(col): kind_of(df[col]) for col in df.columns if col not in skip}


def merge_column_kinds(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """One schema from every institution's :func:`column_kinds`: categorical wins, all-empty columns drop out."""
    merged: dict[str, str] = {}
    for part in parts:
        for col, kind in part.items():
            prev = merged.get(col, "empty")
            if kind == "categorical" or prev == "categorical":
                merged[col] = "categorical"
            elif kind == "numeric" or prev == "numeric":
                merged[col] = "numeric"
            else:
                merged[col] = "empty"
    return {c: k for c, k in merged.items() if k != "empty"}


def row_number(index: pd.Index, i: int) -> str:
    """How errors name the row at position ``i``: ``row N``, counted from 1 over the data rows.

    A table read from a file (and every part split from it) keeps the file's row positions as its
    index, so ``row N`` is the N-th data row of the file: the header is not counted, and in a CSV
    file it is line N + 1. An index that is not a position (labels of a caller's DataFrame) is named
    as it is.
    """
    label = index[i]
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return f"row {int(label) + 1}"
    return f"row {label!r}"


def _at(source: str, col: pd.Series, i: int) -> str:
    return f"{source}: column {str(col.name)!r}, {row_number(col.index, i)}"


def _more(count: int) -> str:
    return f" ({count - 1} more row(s) like it)" if count > 1 else ""


def numbers(col: pd.Series, source: str, what: str = "the value", *, allow_missing: bool) -> np.ndarray:
    """The column as float64, or SchemaError naming the first cell that is not a number, missing or infinite.

    Parameters
    ----------
    col : pandas.Series
        The column (its name and index name the column and row in errors).
    source : str
        The table's origin, for example ``"Cleveland (heart.csv)"``.
    what : str
        What a cell is, in errors: ``"the label"``, ``"the exposure"``, ``"the value"``.
    allow_missing : bool
        Whether missing cells are allowed (features) or not (targets, exposure, weights).
    """
    if pd.api.types.is_bool_dtype(col):
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        parsed = pd.to_numeric(col, errors="coerce")
        bad = (parsed.isna() & col.notna()).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise SchemaError(f"{_at(source, col, i)}: {what} is {col.iloc[i]!r}, not a number{_more(int(bad.sum()))}")
        x = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    if not allow_missing:
        gaps = np.isnan(x)
        if gaps.any():
            i = int(np.argmax(gaps))
            raise SchemaError(f"{_at(source, col, i)}: {what} is NaN (missing){_more(int(gaps.sum()))}; "
                              f"the column must be complete")
    infinite = np.isinf(x)
    if infinite.any():
        i = int(np.argmax(infinite))
        raise SchemaError(f"{_at(source, col, i)}: {what} is {x[i]:g}{_more(int(infinite.sum()))}; "
                          f"expected a finite number")
    return x


def _require(ok: np.ndarray, values: np.ndarray, col: pd.Series, source: str, what: str, expected: str) -> None:
    if not ok.all():
        i = int(np.argmin(ok))
        raise SchemaError(f"{_at(source, col, i)}: {what} is {values[i]:g}, expected {expected}"
                          f"{_more(int((~ok).sum()))}")


def _check_levels(col: pd.Series, source: str, spec: FeatureSpec) -> None:
    present = col.dropna()
    text = present.astype(str)
    unknown = ~text.isin(spec.levels or ()).to_numpy()
    if unknown.any():
        i = int(np.argmax(unknown))
        others = sorted(set(text[unknown]))
        raise SchemaError(f"{_at(source, present, i)}: level {text.iloc[i]!r} is not declared (undeclared: "
                          f"{', '.join(map(repr, others[:5]))}{' ...' if len(others) > 5 else ''}); declared: "
                          f"{', '.join(spec.levels or ())}")
