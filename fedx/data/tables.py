"""Reading an institution's table from CSV (optionally gzipped) or Parquet, with clear errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import DataError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet", ".pq")

# Cells stay text unless they parse as numbers: no booleans, dates or times are guessed from text.
# A timestamp format that matches nothing turns pyarrow's date and time inference off.
_CONVERT = pacsv.ConvertOptions(true_values=["\x00"], false_values=["\x00"], timestamp_parsers=["\x00"],
                                strings_can_be_null=True)


def log_exposure(df: pd.DataFrame, column: str | None, exposure: Any) -> np.ndarray | None:
    """log(exposure) of each row of ``df``, from ``exposure`` or else the model's exposure ``column`` (None: 1).

    Raises
    ------
    DataError
        The column is missing, or the values are not ``len(df)`` positive finite numbers.
    """
    if exposure is None:
        if column is None:
            return None
        if column not in df.columns:
            raise DataError(f"predict: column {column!r} (exposure) is missing; the model was fitted with "
                            f"exposure, so give the table that column or pass exposure=")
        exposure, what = df[column], f"column {column!r} (exposure)"
    else:
        what = "exposure"
    try:
        e = np.asarray(exposure, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"predict: {what}: expected positive numbers") from None
    if e.shape != (len(df),):
        raise DataError(f"predict: {what}: expected {len(df)} values (one per row), got {e.size}")
    bad = ~(np.isfinite(e) & (e > 0))
    if bad.any():
        raise DataError(f"predict: {what}: expected positive finite numbers, found {e[bad][0]}")
    return np.log(e)


def mask_na_codes(df: pd.DataFrame, na_values: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """``df`` with each column's codes that mean "missing" (``data.na_values``) made missing values.

    Columns that ``df`` lacks are skipped; ``df`` itself is not changed.
    """
    codes = {col: list(v) for col, v in na_values.items() if col in df.columns}
    return df.assign(**{col: df[col].mask(df[col].isin(v)) for col, v in codes.items()}) if codes else df


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` file.

    Columns of numbers become numeric columns, empty cells become missing values, and every other
    column stays text (so ``TRUE``/``FALSE`` are categorical levels, not booleans).

    Raises
    ------
    DataError
        When the file is missing, a directory, empty, of an unsupported type, not valid Parquet,
        or a CSV file with a row of the wrong number of fields (naming its line).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a data file ({', '.join(SUPPORTED_SUFFIXES)})")
    name = p.name.lower()
    suffix = next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise DataError(f"{p}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty")
    table = _read_parquet(p) if suffix in (".parquet", ".pq") else _read_csv(p)
    duplicated = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if duplicated:
        raise DataError(f"{p}: duplicate column name(s) {', '.join(duplicated)}")
    if table.num_rows == 0:
        raise DataError(f"{p}: the table has no rows")
    df = table.to_pandas()
    for col in df.columns:
        if pa.types.is_null(table.schema.field(col).type):
            df[col] = df[col].astype("float64")  # an all-empty column: missing numbers
    return df


def _read_parquet(p: Path) -> pa.Table:
    try:
        return pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from None


def _read_csv(p: Path) -> pa.Table:
    try:
        return pacsv.read_csv(p, convert_options=_CONVERT)
    except (pa.ArrowException, OSError, EOFError) as exc:
        message = str(exc)
    if "Empty CSV file" in message:
        raise DataError(f"{p}: the file is empty")
    bad: list[pacsv.InvalidRow] = []

    def record(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "error"

    # Read again in one thread with a handler, to learn the line number of the first ragged row.
    try:
        pacsv.read_csv(p, convert_options=_CONVERT, read_options=pacsv.ReadOptions(use_threads=False),
                       parse_options=pacsv.ParseOptions(invalid_row_handler=record))
    except (pa.ArrowException, OSError, EOFError):
        pass
    if bad:
        row = bad[0]
        where = f"line {row.number}" if row.number is not None and row.number >= 0 else "a row"
        raise DataError(f"{p}: malformed CSV: {where} has {row.actual_columns} field(s), the header has "
                        f"{row.expected_columns}: {row.text[:80]!r}")
    raise DataError(f"{p}: not a readable CSV file ({message.splitlines()[0] if message else 'unknown error'})")
