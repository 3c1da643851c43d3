"""Schemas and table reading: each bad input raises the right error, naming the file, column and value."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedx.data import FeatureSpec, Schema, read_table
from fedx.errors import DataError, SchemaError

SCHEMA = Schema(features=(FeatureSpec("age", "numeric"), FeatureSpec("region", "categorical", ("north", "south"))),
                target="y", exposure="exposure", split_by="site")


def frame(**changes: list) -> pd.DataFrame:
    df = pd.DataFrame({"age": [30.0, np.nan, 50.0], "region": ["north", None, "south"], "y": [0, 1, 2],
                       "exposure": [1.0, 0.5, 0.25], "site": ["a", "a", "b"]})
    for col, values in changes.items():
        df[col] = values
    return df


def test_valid_table_passes_with_missing_feature_cells() -> None:
    SCHEMA.validate(frame(), source="t.csv", target_kind="count")


# Rows are counted from 1 over the data rows (the header is not counted): index 1 is row 2.
@pytest.mark.parametrize("changes, kind, message", [
    ({"age": None}, "count", r"t\.csv: missing column\(s\) 'age' \(feature\)"),
    ({"age": ["30", "old", "50"]}, "count", r"t\.csv: column 'age', row 2: the value is 'old', not a number"),
    ({"region": ["north", "east", "south"]}, "count", r"t\.csv: column 'region', row 2: level 'east' is not declared"),
    ({"y": [0, 1, 2]}, "binary", r"t\.csv: column 'y', row 3: the label is 2, expected 0 or 1$"),
    ({"y": [0, -1, 2]}, "count", r"column 'y', row 2: the label is -1, expected non-negative whole numbers"),
    ({"y": [0.5, 1, 2]}, "count", r"column 'y', row 1: the label is 0\.5, expected non-negative whole numbers"),
    ({"y": [1.0, 0.0, 2.0]}, "positive", r"column 'y', row 2: the label is 0, expected positive numbers"),
    ({"y": [0, np.nan, 1]}, "count", r"column 'y', row 2: the label is NaN \(missing\); the column must be complete"),
    ({"y": [np.nan, np.nan, 1]}, "count", r"column 'y', row 1: the label is NaN \(missing\) \(1 more row"),
    ({"y": [0, np.inf, 1]}, "any", r"column 'y', row 2: the label is inf; expected a finite number"),
    ({"y": [0, "yes", 1]}, "binary", r"column 'y', row 2: the label is 'yes', not a number"),
    ({"exposure": [1.0, 0.0, 1.0]}, "count", r"column 'exposure', row 2: the exposure is 0, expected positive"),
    ({"exposure": [1.0, np.nan, 1.0]}, "count", r"column 'exposure', row 2: the exposure is NaN"),
    ({"site": ["a", None, "b"]}, "count", r"column 'site', row 2: the institution's name \(split_by\) is missing"),
])
def test_each_bad_table_names_source_column_and_value(changes: dict, kind: str, message: str) -> None:
    df = frame()
    for col, values in changes.items():
        if values is None:
            df = df.drop(columns=col)
        else:
            df[col] = values
    with pytest.raises(SchemaError, match=message):
        SCHEMA.validate(df, source="t.csv", target_kind=kind)


def test_rows_of_zero_weight_need_no_target() -> None:
    schema = Schema(features=(FeatureSpec("age", "numeric"),), target="severity", weight="n")
    df = pd.DataFrame({"age": [1.0, 2.0], "severity": [np.nan, 100.0], "n": [0, 2]})
    schema.validate(df, source="p.csv", target_kind="positive")
    with pytest.raises(SchemaError, match=r"column 'n', row 1: the weight is -1, expected non-negative"):
        schema.validate(df.assign(n=[-1, 2]), source="p.csv", target_kind="positive")
    with pytest.raises(SchemaError, match=r"column 'severity', row 1: the label is NaN"):
        schema.validate(df.assign(n=[1, 2]), source="p.csv", target_kind="positive")


def test_infer_kinds_and_sorted_levels() -> None:
    df = pd.DataFrame({"x": [1.5, 2.0], "n": [1, 2], "flag": [True, False], "city": ["b", "a"],
                       "cat": pd.Categorical(["z", "y"]), "y": [0, 1], "id": [1, 2]})
    schema = Schema.infer(df, target="y", exclude=["id"])
    kinds = {f.name: (f.kind, f.levels) for f in schema.features}
    assert kinds == {"x": ("numeric", None), "n": ("numeric", None), "flag": ("categorical", ("False", "True")),
                     "city": ("categorical", ("a", "b")), "cat": ("categorical", ("y", "z"))}
    assert schema.target == "y" and schema.feature_names == ("x", "n", "flag", "city", "cat")


def test_each_institution_names_its_column_kinds_and_the_server_merges_them() -> None:
    from fedx.data.schema import column_kinds, merge_column_kinds

    a = pd.DataFrame({"x": [1.5, 2.0], "flag": [True, False], "code": ["1", "2"], "gap": [np.nan, np.nan],
                      "mixed": [1, 2], "y": [0, 1]})
    b = pd.DataFrame({"x": [np.nan, np.nan], "flag": [False, False], "code": [None, None], "gap": [None, None],
                      "mixed": ["low", "high"], "y": [1, 0]})
    kinds_a, kinds_b = column_kinds(a, exclude={"y"}), column_kinds(b, exclude={"y"})
    assert kinds_a == {"x": "numeric", "flag": "categorical", "code": "categorical", "gap": "empty", "mixed": "numeric"}
    assert kinds_b == {"x": "empty", "flag": "categorical", "code": "empty", "gap": "empty", "mixed": "categorical"}
    # Categorical wins over numeric, a kind seen anywhere wins over empty, and a column empty everywhere drops out.
    assert merge_column_kinds([kinds_a, kinds_b]) == {"x": "numeric", "flag": "categorical", "code": "categorical",
                                                      "mixed": "categorical"}
    # Schema.infer reads the same kinds from one table.
    inferred = {f.name: f.kind for f in Schema.infer(a.drop(columns="gap"), target="y").features}
    assert inferred == {c: k for c, k in kinds_a.items() if k != "empty"}


def test_feature_spec_rejects_bad_kind() -> None:
    with pytest.raises(SchemaError, match="kind must be numeric or categorical"):
        FeatureSpec("x", "text")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- read_table


def test_csv_gz_and_parquet_round_trip(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": ["x", "y"], "flag": ["TRUE", "FALSE"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as fh:
        df.to_csv(fh, index=False)
    df.to_parquet(tmp_path / "t.parquet")
    df.to_parquet(tmp_path / "t.pq")
    for name in ("t.csv", "t.csv.gz", "t.parquet", "t.pq"):
        got = read_table(tmp_path / name)
        assert list(got["a"]) == [1, 2] and got["b"].isna().tolist() == [False, True], name
        assert list(got["flag"]) == ["TRUE", "FALSE"], name  # text, not booleans
        assert pd.api.types.is_numeric_dtype(got["a"]) and not pd.api.types.is_numeric_dtype(got["flag"])


def test_csv_keeps_dates_as_text_and_empty_columns_as_missing_numbers(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("d,e,f\n2025-01-01,,x\n2025-01-02 10:00:00,,\n")
    got = read_table(tmp_path / "t.csv")
    assert list(got["d"]) == ["2025-01-01", "2025-01-02 10:00:00"]
    assert got["e"].dtype == np.float64 and got["e"].isna().all()
    assert got["f"].isna().tolist() == [False, True]


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, r"data file not found: .*missing\.csv"),
    ("empty.csv", "", r"empty\.csv: the file is empty"),
    ("header.csv", "a,b\n", r"header\.csv: the table has no rows"),
    ("long.csv", "a,b\n1,2\n3,4,5\n", r"long\.csv: malformed CSV: line 3 has 3 field\(s\), the header has 2"),
    ("short.csv", "a,b,c\n1,2,3\n4,5,6\n7,8\n", r"short\.csv: malformed CSV: line 4 has 2 field\(s\)"),
    ("dup.csv", "a,a\n1,2\n", r"dup\.csv: duplicate column name\(s\) a"),
    ("bad.parquet", "not parquet at all", r"bad\.parquet: not a readable Parquet file"),
    ("data.xlsx", "x", r"data\.xlsx: unsupported file type; supported: \.csv, \.csv\.gz, \.parquet, \.pq"),
])
def test_read_table_errors_name_the_file_and_the_fault(tmp_path: Path, name: str, content: str | None,
                                                       message: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_table(tmp_path / name)


def test_read_table_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)
