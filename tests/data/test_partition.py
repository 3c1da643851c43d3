"""Partitioners: exact sizes, every row used once, determinism, real skew, and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedx.data import (
    dirichlet_label_skew,
    iid,
    natural,
    partition,
    quantity_skew,
    train_test_split_local,
)
from fedx.errors import ConfigError, DataError, SchemaError


@pytest.fixture()
def df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 3000
    return pd.DataFrame({"x": rng.normal(size=n), "label": rng.choice([0, 1, 2], size=n, p=[0.5, 0.3, 0.2]),
                         "site": rng.choice(["b", "a", "c"], size=n)}, index=np.arange(n) * 10)


def assert_exact_cover(parts: dict[str, pd.DataFrame], df: pd.DataFrame) -> None:
    index = np.concatenate([p.index.to_numpy() for p in parts.values()])
    assert len(index) == len(df) and set(index) == set(df.index)
    for part in parts.values():
        assert part.index.is_monotonic_increasing  # original order kept


def test_natural_split_by_column(df: pd.DataFrame) -> None:
    parts = natural(df, "site")
    assert list(parts) == ["a", "b", "c"]
    assert_exact_cover(parts, df)
    assert all((p["site"] == name).all() for name, p in parts.items())
    with pytest.raises(SchemaError, match="'nope' is not in the table"):
        natural(df, "nope")
    with pytest.raises(DataError, match="name no institution"):
        natural(df.assign(site=df["site"].where(df.index != 50)), "site")


def test_iid_counts_fractions_and_determinism(df: pd.DataFrame) -> None:
    parts = iid(df, 4, seed=1)
    assert [len(p) for p in parts.values()] == [750] * 4 and list(parts) == ["inst_0", "inst_1", "inst_2", "inst_3"]
    assert_exact_cover(parts, df)
    assert all(a.equals(b) for a, b in zip(parts.values(), iid(df, 4, seed=1).values()))
    assert not parts["inst_0"].equals(iid(df, 4, seed=2)["inst_0"])
    assert [len(p) for p in iid(df, sizes=[0.5, 0.3, 0.2]).values()] == [1500, 900, 600]
    assert [len(p) for p in iid(df, sizes=[1000, 1000, 1000]).values()] == [1000] * 3
    assert [len(p) for p in iid(df, sizes=[1 / 3] * 3).values()] == [1000] * 3


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n": 3001}, DataError, "cannot split 3000 rows into 3001 institutions"),
    ({"n": 0}, ConfigError, "positive whole number"),
    ({"sizes": [1000, 1000]}, DataError, "add up to 2000, the table has 3000 rows"),
    ({"sizes": [0.5, 0.4]}, ConfigError, "add up to 0.9, expected 1"),
    ({"sizes": [0.5, -0.5, 1.0]}, ConfigError, "positive numbers"),
    ({"n": 2, "sizes": [0.5, 0.5]}, ConfigError, "either n"),
])
def test_iid_errors(df: pd.DataFrame, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        iid(df, **kwargs)


def test_dirichlet_label_skew_skews_more_with_smaller_alpha(df: pd.DataFrame) -> None:
    def spread(alpha: float) -> float:
        parts = dirichlet_label_skew(df, "label", 5, alpha, seed=3)
        assert_exact_cover(parts, df)
        assert min(len(p) for p in parts.values()) >= 10
        shares = np.array([p["label"].value_counts(normalize=True).reindex([0, 1, 2], fill_value=0) for p in parts.values()])
        overall = df["label"].value_counts(normalize=True).sort_index().to_numpy()
        return float(np.abs(shares - overall).sum(axis=1).mean())  # mean total-variation distance x 2

    skewed, mild = spread(0.1), spread(100.0)
    assert skewed > 0.5 and mild < 0.1
    a, b = dirichlet_label_skew(df, "label", 5, 0.3, seed=4), dirichlet_label_skew(df, "label", 5, 0.3, seed=4)
    assert all(x.equals(y) for x, y in zip(a.values(), b.values()))


def test_dirichlet_errors(df: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="alpha: expected a positive number"):
        dirichlet_label_skew(df, "label", 3, 0.0)
    with pytest.raises(SchemaError, match="'y' is not in the table"):
        dirichlet_label_skew(df, "y", 3, 1.0)
    with pytest.raises(DataError, match="need 3010 rows"):
        dirichlet_label_skew(df, "label", 301, 1.0)


def test_quantity_skew_sizes(df: pd.DataFrame) -> None:
    parts = quantity_skew(df, 6, alpha=0.3, seed=5, min_size=50)
    sizes = [len(p) for p in parts.values()]
    assert sum(sizes) == len(df) and min(sizes) >= 50 and max(sizes) > 3 * min(sizes)
    assert_exact_cover(parts, df)
    even = [len(p) for p in quantity_skew(df, 6, alpha=1000.0, seed=5).values()]
    assert max(even) - min(even) < 100
    with pytest.raises(DataError, match="need 3600 rows"):
        quantity_skew(df, 6, alpha=1.0, min_size=600)
    with pytest.raises(ConfigError, match="alpha"):
        quantity_skew(df, 6, alpha=-1.0)


def test_partition_dispatcher(df: pd.DataFrame) -> None:
    assert list(partition(df, "natural", column="site")) == ["a", "b", "c"]
    assert [len(p) for p in partition(df, "iid", n=3, seed=0).values()] == [1000] * 3
    assert len(partition(df, "dirichlet", label="label", n=3, alpha=0.5, seed=0)) == 3
    assert len(partition(df, "quantity", n=3, alpha=0.5, seed=0)) == 3
    with pytest.raises(ConfigError, match="expected one of natural, iid, dirichlet, quantity"):
        partition(df, "random")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'alpha'; valid keys: n, sizes, seed"):
        partition(df, "iid", n=3, alpha=1.0)


def test_train_test_split_local(df: pd.DataFrame) -> None:
    binary = df.assign(y=(df["label"] == 2).astype(int))
    train, test = train_test_split_local(binary, 0.2, seed=1, stratify="y")
    assert len(test) == 600 and len(train) == 2400
    assert set(train.index).isdisjoint(test.index) and len(set(train.index) | set(test.index)) == len(df)
    assert train.index.is_monotonic_increasing and test.index.is_monotonic_increasing
    assert abs(test["y"].sum() - round(0.2 * binary["y"].sum())) <= 1
    again = train_test_split_local(binary, 0.2, seed=1, stratify="y")[1]
    assert test.equals(again) and not test.equals(train_test_split_local(binary, 0.2, seed=2, stratify="y")[1])
    train, test = train_test_split_local(binary, 0.0, seed=1)
    assert len(test) == 0 and train.equals(binary) and list(test.columns) == list(binary.columns)
    with pytest.raises(ConfigError, match=r"test_fraction: expected a number in \[0, 1\)"):
        train_test_split_local(binary, 1.0)
    with pytest.raises(SchemaError, match="'nope' is not in the table"):
        train_test_split_local(binary, 0.2, stratify="nope")
    one_row_train, _ = train_test_split_local(binary.iloc[:1], 0.9)
    assert len(one_row_train) == 1
