"""Each institution's table is checked against the config before a federation starts: bad labels, infinite
features, numbers with typos, identifier-like categoricals, and missing columns, each named with the
institution, the file, the column and the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedx.config import config_from_dict
from fedx.data import read_table
from fedx.data.checks import MAX_LEVELS, check_table, check_tables, column_kind
from fedx.errors import DataError


def cfg(**data: object):
    return config_from_dict({"name": "t", "task": "fraud", "model": {"kind": "logistic"},
                             "data": {"target": "y", **data}, "security": {"encryption": "none"}})


def table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(20, 80, n).astype(float), "region": rng.choice(["n", "s"], n),
                         "y": rng.integers(0, 2, n)})


def test_a_good_table_passes() -> None:
    check_table(table(), cfg(), "bank_a (t.csv)", "binary")


@pytest.mark.parametrize("column, row, value, message", [
    ("y", 3, np.nan, r"^bank_a \(t\.csv\): column 'y', row 4: the label is NaN"),
    ("y", 0, "yes", r"^bank_a \(t\.csv\): column 'y', row 1: the label is 'yes', not a number"),
    ("y", 5, 2, r"^bank_a \(t\.csv\): column 'y', row 6: the label is 2, expected 0 or 1"),
    ("age", 7, np.inf, r"^bank_a \(t\.csv\): column 'age', row 8: the value is inf; expected a finite number"),
    ("age", 2, -np.inf, r"^bank_a \(t\.csv\): column 'age', row 3: the value is -inf"),
])
def test_bad_cells_are_named_by_institution_file_column_and_row(column: str, row: int, value: object,
                                                                message: str) -> None:
    df = table()
    if isinstance(value, str):
        df[column] = df[column].astype(object)
    else:
        df[column] = df[column].astype(float)
    df.loc[row, column] = value
    with pytest.raises(DataError, match=message):
        check_table(df, cfg(), "bank_a (t.csv)", "binary")


def test_rows_are_counted_in_the_file_the_institution_was_split_from(tmp_path: Path) -> None:
    pooled = pd.concat([table(30).assign(site="a"), table(30, seed=1).assign(site="b")], ignore_index=True)
    pooled["y"] = pooled["y"].astype(float)
    pooled.loc[41, "y"] = np.nan            # the 42nd data row of the file: line 43 of the CSV
    path = tmp_path / "pooled.csv"
    pooled.to_csv(path, index=False)
    assert path.read_text().splitlines()[42].split(",")[2] == ""
    df = read_table(path)
    tables = {name: part for name, part in df.groupby("site")}
    with pytest.raises(DataError, match=r"^b \(pooled\.csv\): column 'y', row 42: the label is NaN"):
        check_tables(cfg(split_by="site"), tables, {"a": "pooled.csv", "b": "pooled.csv"}, "binary")


def test_missing_target_and_na_values_column_name_the_key_and_the_institution() -> None:
    with pytest.raises(DataError, match=r"^bank_a \(t\.csv\): data\.target: column 'num' is not in the data"):
        check_table(table(), cfg(target="num"), "bank_a (t.csv)", "binary")
    with pytest.raises(DataError, match=r"^bank_a \(t\.csv\): data\.na_values\.chol: column 'chol' is not in"):
        check_table(table(), cfg(na_values={"chol": [0]}), "bank_a (t.csv)", "binary")
    with pytest.raises(DataError, match=r"missing column\(s\) 'income' \(feature\)"):
        check_table(table(), cfg(features={"age": "numeric", "income": "numeric"}), "bank_a (t.csv)", "binary")


def test_numbers_with_a_few_typos_are_refused_not_made_categorical() -> None:
    df = table(40)
    df["age"] = df["age"].astype(object)
    df.loc[[4, 9], "age"] = ["sixty", "?"]          # 38 of 40 values are numbers: 95%
    with pytest.raises(DataError, match=r"^bank_a \(t\.csv\): column 'age' holds numbers except for 2 of 40 "
                                        r"value\(s\): 'sixty' \(row 5\), '\?' \(row 10\); .*data\.na_values\.age"):
        check_table(df, cfg(), "bank_a (t.csv)", "binary")
    # The same codes listed in data.na_values are missing values, and the column is numeric again.
    check_table(df, cfg(na_values={"age": ["sixty", "?"]}), "bank_a (t.csv)", "binary")


@pytest.mark.parametrize("numbers, words, kind", [
    (9, 1, "refused"),        # 90% numbers: typos
    (8, 2, "categorical"),    # 80%: a categorical column with some numeric levels
    (10, 0, "categorical"),   # numbers stored as text only (codes): as before
    (0, 10, "categorical"),
])
def test_the_share_of_numbers_that_makes_a_text_column_numeric(numbers: int, words: int, kind: str) -> None:
    col = pd.Series([str(i) for i in range(numbers)] + [f"w{i}" for i in range(words)], name="c", dtype=object)
    if kind == "refused":
        with pytest.raises(DataError, match="holds numbers except for 1 of 10"):
            column_kind(col, "x")
    else:
        assert column_kind(col, "x") == kind


def test_a_parquet_column_stored_as_text_with_a_typo_is_refused(tmp_path: Path) -> None:
    df = table(40)
    df["age"] = df["age"].astype(int).astype(str)
    df.loc[3, "age"] = "sixty"
    path = tmp_path / "bank.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"column 'age' holds numbers except for 1 of 40 value\(s\): 'sixty' \(row 4\)"):
        check_table(read_table(path), cfg(), "bank_a (bank.parquet)", "binary")


def test_typos_are_counted_over_every_institution() -> None:
    # At bank_a the pooled text column holds only numbers, at bank_b one typo: refused, naming bank_b.
    a, b = table(40), table(40, seed=1)
    a["age"] = a["age"].astype(str)
    b["age"] = b["age"].astype(str)
    b.loc[12, "age"] = "sixty"
    with pytest.raises(DataError, match=r"^bank_b \(t\.csv\): column 'age' holds numbers except for 1 of 40"):
        check_tables(cfg(), {"bank_a": a, "bank_b": b}, {"bank_a": "t.csv", "bank_b": "t.csv"}, "binary")


def test_a_declared_numeric_column_with_text_is_always_refused() -> None:
    df = table(40)
    df["region"] = df["region"].astype(object)
    df.loc[0, "region"] = "3"
    declared = cfg(features={"age": "numeric", "region": "numeric"})
    with pytest.raises(DataError, match=r"column 'region', row 2: the value is '.', not a number"):
        check_table(df, declared, "bank_a (t.csv)", "binary")


@pytest.mark.parametrize("n_rows, n_levels, refused", [
    (5000, MAX_LEVELS + 1, "more than 1000"),
    (100, 60, "more than half of its 100 values"),
    (1000, 60, None),
    (50, 40, None),           # few levels: not identifier-like, whatever the rows
])
def test_categoricals_with_too_many_levels_are_refused(n_rows: int, n_levels: int, refused: str | None) -> None:
    df = pd.DataFrame({"tx_id": [f"t{i % n_levels}" for i in range(n_rows)], "y": np.arange(n_rows) % 2})
    if refused is None:
        check_table(df, cfg(), "bank_a (t.csv)", "binary")
        return
    with pytest.raises(DataError, match=rf"^bank_a \(t\.csv\): column 'tx_id' is categorical with {n_levels} levels "
                                        rf"\({refused}\).*data\.drop"):
        check_table(df, cfg(), "bank_a (t.csv)", "binary")
    check_table(df, cfg(drop=["tx_id"]), "bank_a (t.csv)", "binary")


def test_levels_united_across_institutions_are_bounded_too() -> None:
    parts = {f"b{k}": pd.DataFrame({"code": [f"c{k}_{i % 300}" for i in range(2000)], "y": np.arange(2000) % 2})
             for k in range(4)}
    with pytest.raises(DataError, match=r"^the federation: column 'code' is categorical with 1200 levels"):
        check_tables(cfg(), parts, {k: "t.csv" for k in parts}, "binary")


def test_each_cell_is_judged_as_if_parsed_alone() -> None:
    """Distinct texts are parsed once and the verdict spread over their rows: the same verdict, cell by cell,
    as parsing every cell (True and 1 are equal to Python but not as text)."""
    from fedx.data.checks import _not_numbers

    values = ["1", " 2 ", "x", None, "3.5", "1e3", "", "nan", True, 1, 1.0, "True", "-", "0x10", np.nan, "  7",
              "x", "1", True]
    col = pd.Series(values * 50, dtype=object, index=np.arange(1000, 1000 + 50 * len(values)))
    present, bad = _not_numbers(col)
    expected = [pd.isna(pd.to_numeric(str(v).strip(), errors="coerce")) for v in col.dropna()]
    assert present.index.equals(col.dropna().index)
    assert bad.tolist() == expected and 0 < sum(expected) < len(expected)
