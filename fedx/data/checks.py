"""Is each institution's table usable under the run's config? Checked before any federation starts.

A simulation checks every institution's table before Ray starts (:func:`check_tables`), and a node
checks its own table when the server first asks for it (``hello``), so that bad data stops the run
with one line that names the institution, the file, the column, the row and the value, for example::

    Cleveland (heart.csv): column 'num', row 4: the label is NaN (missing); the column must be complete

An institution never drops out of a run because of its data: ``federation.min_clients`` is for nodes
that are down.

Rows are counted as :func:`fedx.data.schema.row_number` says: ``row N`` is the N-th data row of the
table, from 1, the header not counted (line N + 1 of a CSV file).

Two rules guard the inferred schema (when ``data.features`` is not declared):

- A text column whose non-missing values are at least :data:`NUMERIC_SHARE` numbers, except a few,
  is a numeric column with typos (``"sixty"`` among ages), not a categorical one: it is refused, with
  the first values that are not numbers and their rows. A column that holds only numbers stored as
  text stays categorical (postal or account codes), as before.
- A categorical feature may have at most :data:`MAX_LEVELS` levels, and no more than half as many
  levels as it has values once it has more than :data:`MIN_LEVELS_FOR_SHARE` levels. Each level is a
  column of the design matrix, so an identifier (one level per row) would cost a column per row at
  every institution and teach the model nothing it could use on new rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import SchemaError
from .schema import ColumnKind, kind_of, numbers, row_number
from .spec import non_feature_columns, schema_for
from .tables import mask_na_codes

#: Share of a text column's non-missing values that must parse as numbers for it to count as numeric
#: with a few typos (rather than categorical).
NUMERIC_SHARE = 0.9
#: The most levels a categorical feature may have (across the federation, too).
MAX_LEVELS = 1000
#: Above this many levels, a categorical feature may have at most one level per two values.
MIN_LEVELS_FOR_SHARE = 50
#: How many values that are not numbers an error shows.
SHOWN = 3


def table_label(name: str, source: str) -> str:
    """How errors name one institution's table: ``Cleveland (heart.csv)``."""
    return f"{name} ({source})"


def check_table(df: pd.DataFrame, cfg: Config, where: str, target_kind: str | None = None) -> None:
    """Check one institution's raw table against the config.

    Parameters
    ----------
    df : pandas.DataFrame
        The table as read (before ``data.na_values`` and ``data.target_above`` apply). Its index is
        the row position in its file (as :func:`fedx.data.tables.read_table` gives it).
    cfg : Config
        The run's config.
    where : str
        The institution and its file, from :func:`table_label`; every error starts with it.
    target_kind : str, optional
        What the task needs of the target (``"binary"``, ``"count"``, ``"positive"``, ``"any"``); None
        for a statistics run, which has no target.

    Raises
    ------
    DataError
        One line: the institution and file, the config key or column, the row and the value.
    """
    d = cfg.data
    absent = [col for col in d.na_values if col not in df.columns]
    if absent:
        raise SchemaError(f"{where}: data.na_values.{absent[0]}: column {absent[0]!r} is not in the data "
                          f"(columns: {_columns(df)})")
    if target_kind is None:
        return
    if d.target not in df.columns:
        raise SchemaError(f"{where}: data.target: column {d.target!r} is not in the data (columns: {_columns(df)})")
    df = mask_na_codes(df, d.na_values)
    if d.target_above is not None:
        numbers(df[d.target], where, "the label", allow_missing=False)
        df = df.assign(**{d.target: (pd.to_numeric(df[d.target]) > d.target_above).astype(np.int64)})
    if d.features is None:
        skip = non_feature_columns(cfg)
        for col in df.columns:
            if col not in skip:
                column_kind(df[col], where)
    schema = schema_for(cfg, df)
    schema.validate(df, source=where, target_kind=target_kind)  # type: ignore[arg-type]
    for spec in schema.features:
        if spec.kind == "categorical" and spec.levels is None:
            check_levels(str(spec.name), df[spec.name].dropna().astype(str).nunique(),
                         int(df[spec.name].notna().sum()), where)


def column_kind(col: pd.Series, where: str) -> ColumnKind:
    """The kind of an undeclared feature column (:func:`fedx.data.schema.kind_of`), checked.

    Raises
    ------
    SchemaError
        For a text column whose values are numbers but for a few (see :data:`NUMERIC_SHARE`).
    """
    if _is_text(col):
        present, bad = _not_numbers(col)
        if _numbers_with_typos(int(bad.sum()), len(present)):
            _refuse_typos(where, str(col.name), present, bad)
    return kind_of(col)


def _is_text(col: pd.Series) -> bool:
    """Whether the column holds values other than missing, numbers and booleans (text or categories)."""
    return kind_of(col) == "categorical" and not pd.api.types.is_bool_dtype(col)


def _not_numbers(col: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The non-missing cells of a text column, and which of them do not parse as numbers.

    Each distinct text is parsed once: a column of categories holds a few texts in many rows.
    """
    present = col.dropna()
    codes, texts = pd.factorize(present.astype(str))
    bad = pd.to_numeric(pd.Series(texts, dtype=object).str.strip(), errors="coerce").isna().to_numpy()
    return present, bad[codes]


def _numbers_with_typos(n_bad: int, n_present: int) -> bool:
    return n_bad > 0 and n_present - n_bad >= NUMERIC_SHARE * n_present - 1e-9


def _refuse_typos(where: str, name: str, present: pd.Series, bad: np.ndarray) -> None:
    n_bad, n = int(bad.sum()), len(present)
    shown = ", ".join(f"{present.iloc[i]!r} ({row_number(present.index, int(i))})"
                      for i in np.flatnonzero(bad)[:SHOWN])
    raise SchemaError(f"{where}: column {name!r} holds numbers except for {n_bad} of {n} value(s): {shown}"
                      f"{' ...' if n_bad > SHOWN else ''}; fix them, list them in data.na_values.{name} "
                      f"if they mean missing, or declare the column in data.features")


def check_levels(name: str, n_levels: int, n_values: int | None, where: str) -> None:
    """Refuse a categorical feature with too many levels (see the module's docstring).

    ``n_values`` is its number of non-missing values at one institution; None for the levels that
    the whole federation unites (only :data:`MAX_LEVELS` applies to them).
    """
    too_many = n_levels > MAX_LEVELS
    id_like = n_values is not None and n_levels > MIN_LEVELS_FOR_SHARE and 2 * n_levels > n_values
    if too_many or id_like:
        why = f"more than {MAX_LEVELS}" if too_many else f"more than half of its {n_values} values"
        raise SchemaError(f"{where}: column {name!r} is categorical with {n_levels} levels ({why}): each level "
                          f"becomes a column of the model's input, and an identifier teaches it nothing. "
                          f"Add it to data.drop, or declare data.features (numeric, or categorical with "
                          f"data.levels)")


def check_tables(cfg: Config, tables: Mapping[str, pd.DataFrame], sources: Mapping[str, str],
                 target_kind: str | None) -> None:
    """Check every institution's table (:func:`check_table`), then the levels the federation would unite.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        Each institution's raw table, by name.
    sources : mapping of str to str
        Each institution's file (or other origin), named in errors.
    target_kind : str or None
        As for :func:`check_table`.
    """
    if target_kind is not None and cfg.data.features is None:
        _check_typos_across(cfg, tables, sources)
    for name, df in tables.items():
        check_table(df, cfg, table_label(name, sources[name]), target_kind)
    if target_kind is None or cfg.data.features is not None:
        return
    levels: dict[str, set[Any]] = {}
    for df in tables.values():
        for spec in schema_for(cfg, df).features:
            if spec.kind == "categorical" and spec.levels is None:
                levels.setdefault(spec.name, set()).update(df[spec.name].dropna().astype(str).unique())
    for name, found in levels.items():
        if len(found) > MAX_LEVELS:
            check_levels(name, len(found), None, "the federation")


def _check_typos_across(cfg: Config, tables: Mapping[str, pd.DataFrame], sources: Mapping[str, str]) -> None:
    """:data:`NUMERIC_SHARE` counted over every institution: numbers with a few typos at one of them."""
    d = cfg.data
    skip = non_feature_columns(cfg)
    counts: dict[str, list[int]] = {}
    first: dict[str, tuple[str, pd.Series, np.ndarray]] = {}
    for name, df in tables.items():
        df = mask_na_codes(df, d.na_values)
        for col in df.columns:
            s = df[col]
            if col in skip or not _is_text(s):
                continue
            present, bad = _not_numbers(s)
            total = counts.setdefault(str(col), [0, 0])
            total[0] += int(bad.sum())
            total[1] += len(present)
            if bad.any() and str(col) not in first:
                first[str(col)] = (table_label(name, sources[name]), present, bad)
    for col, (n_bad, n) in counts.items():
        if col in first and _numbers_with_typos(n_bad, n):
            where, present, bad = first[col]
            _refuse_typos(where, col, present, bad)


def _columns(df: pd.DataFrame) -> str:
    return ", ".join(map(str, list(df.columns)[:20])) + (", ..." if len(df.columns) > 20 else "")
