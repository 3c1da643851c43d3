"""Plaintext federated statistics equal pandas/numpy on the pooled rows: counts exactly, moments to 1e-6."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_support import assert_close, pooled_frame, run, split

POOLED = pooled_frame()
FRAMES = split(POOLED)


def test_moments_equal_pandas_with_gaps_and_an_empty_institution() -> None:
    assert len(FRAMES["inst0"]) == 0
    res = run(FRAMES, columns=["x", "y", "claim", "age", "flag"])
    for col in ("x", "y", "claim", "age", "flag"):
        s = POOLED[col].astype(float)
        got = res["columns"][col]
        assert got["count"] == int(s.count())
        assert_close(got["mean"], s.mean())
        assert_close(got["variance"], s.var())
        assert_close(got["std"], s.std())
    assert res["rows"] == len(POOLED)
    assert res["institutions"] == [{"name": n, "rows": len(f)} for n, f in FRAMES.items()]


def test_histograms_match_numpy_with_underflow_and_overflow() -> None:
    edges = [20.0, 35.0, 50.0, 65.0, 80.0]
    res = run(FRAMES, histograms={"x": edges, "age": [18, 40, 60, 89]})
    x = POOLED["x"].dropna().to_numpy()
    h = res["histograms"]["x"]
    assert h["counts"] == np.histogram(x, edges)[0].tolist()
    assert h["underflow"] == int((x < 20).sum()) and h["overflow"] == int((x > 80).sum())
    assert h["underflow"] > 0 and h["overflow"] > 0
    age = res["histograms"]["age"]
    assert age["counts"] == np.histogram(POOLED["age"], [18, 40, 60, 89])[0].tolist()  # 89 falls in the last bin
    assert age["overflow"] == 0 and age["edges"] == [18.0, 40.0, 60.0, 89.0]


def test_frequencies_and_crosstabs_match_pandas() -> None:
    res = run(FRAMES, frequencies=["region", "flag"], crosstabs=[["region", "product"]])
    freq = res["frequencies"]["region"]
    assert freq["levels"] == ["east", "north", "south", "west"]  # discovered: the sorted union
    assert freq["counts"] == POOLED["region"].value_counts().reindex(freq["levels"]).tolist()
    assert freq["missing"] == int(POOLED["region"].isna().sum()) > 0
    assert res["frequencies"]["flag"]["levels"] == ["False", "True"]
    assert res["frequencies"]["flag"]["counts"] == [int((~POOLED["flag"]).sum()), int(POOLED["flag"].sum())]
    x = res["crosstabs"]["region x product"]
    want = pd.crosstab(POOLED["region"], POOLED["product"]).reindex(index=x["row_levels"], columns=x["column_levels"])
    assert x["counts"] == want.to_numpy().tolist()


def test_declared_levels_keep_their_order_and_count_zero_cells() -> None:
    res = run(FRAMES, crosstabs=[["product", "region"]],
              levels={"product": ["premium", "plus", "basic", "gold"], "region": ["west", "east", "south", "north"]})
    x = res["crosstabs"]["product x region"]
    assert x["row_levels"] == ["premium", "plus", "basic", "gold"]
    want = pd.crosstab(POOLED["product"], POOLED["region"]).reindex(index=x["row_levels"], columns=x["column_levels"],
                                                                    fill_value=0)
    assert x["counts"] == want.to_numpy().tolist() and x["counts"][3] == [0, 0, 0, 0]


def test_correlation_and_covariance_are_pandas_on_complete_cases() -> None:
    cols = ["x", "y", "claim", "age"]
    res = run(FRAMES, correlation=cols)
    complete = POOLED[cols].astype(float).dropna()
    corr = res["correlation"]
    assert corr["columns"] == cols and corr["n"] == len(complete) < len(POOLED)
    np.testing.assert_allclose(corr["matrix"], complete.corr().to_numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(corr["covariance"], complete.cov().to_numpy(), rtol=1e-6)
    assert corr["matrix"][0][1] > 0.5  # x and y are correlated by construction


def test_group_by_a_categorical_column_equals_pandas_groupby() -> None:
    res = run(FRAMES, columns=["x", "claim"], histograms={"age": [18, 50, 89]}, correlation=["x", "y"],
              group_by="region")
    groups = res["groups"]
    assert groups["by"] == "region" and list(groups["levels"]) == ["east", "north", "south", "west"]
    for level, frame in POOLED.groupby("region"):
        block = groups["levels"][level]
        assert block["rows"] == len(frame)
        for col in ("x", "claim"):
            assert block["columns"][col]["count"] == int(frame[col].count())
            assert_close(block["columns"][col]["mean"], frame[col].mean())
            assert_close(block["columns"][col]["variance"], frame[col].var())
        assert block["histograms"]["age"]["counts"] == np.histogram(frame["age"], [18, 50, 89])[0].tolist()
        assert_close(block["correlation"]["matrix"][0][1], frame[["x", "y"]].dropna().corr().iloc[0, 1])


def test_group_by_numeric_bands_with_group_bins() -> None:
    bins = [18, 40, 65, 89]
    res = run(FRAMES, columns=["claim"], group_by="age", group_bins=bins)
    assert list(res["groups"]["levels"]) == ["[18,40)", "[40,65)", "[65,89]"]
    bands = pd.cut(POOLED["age"], bins, right=False, labels=False)
    bands[POOLED["age"] == 89] = 2  # the last band is closed, as in numpy.histogram
    for j, label in enumerate(res["groups"]["levels"]):
        frame = POOLED[bands == j]
        block = res["groups"]["levels"][label]
        assert block["rows"] == len(frame)
        assert_close(block["columns"]["claim"]["mean"], frame["claim"].mean())
        assert_close(block["columns"]["claim"]["std"], frame["claim"].std())


@pytest.mark.parametrize("sizes", [(0, 0, 1000), (1000,), (999, 1)])
def test_any_split_gives_the_same_statistics(sizes: tuple[int, ...]) -> None:
    ref = run(split(POOLED), columns=["x"], histograms={"age": [18, 50, 89]}, frequencies=["product"])
    other = run(split(POOLED, sizes), columns=["x"], histograms={"age": [18, 50, 89]}, frequencies=["product"])
    assert other["histograms"] == ref["histograms"] and other["frequencies"] == ref["frequencies"]
    assert other["columns"]["x"]["count"] == ref["columns"]["x"]["count"]
    assert_close(other["columns"]["x"]["variance"], ref["columns"]["x"]["variance"], rel=1e-9)


def test_only_empty_institutions_give_empty_statistics() -> None:
    empty = {"a": POOLED.iloc[:0], "b": POOLED.iloc[:0]}
    res = run(empty, columns=["x"], quantiles={"x": [0.5]}, histograms={"x": [0, 1]}, levels={"region": ["north"]},
              frequencies=["region"])
    assert res["columns"]["x"] == {"count": 0, "mean": None, "variance": None, "std": None}
    assert res["quantiles"]["x"] == {"0.5": None, "precision": None}
    assert res["histograms"]["x"]["counts"] == [0] and res["frequencies"]["region"]["counts"] == [0]
    assert res["suppressed"] == []


def test_an_institution_with_no_rows_and_untyped_columns() -> None:
    frames = {**split(POOLED), "new": pd.DataFrame(columns=list(POOLED.columns))}  # object columns, no rows
    assert frames["new"]["x"].dtype == object
    res = run(frames, columns=["x"], crosstabs=[["region", "product"]], quantiles={"age": [0.5]})
    ref = run(split(POOLED), columns=["x"], crosstabs=[["region", "product"]], quantiles={"age": [0.5]})
    assert res["columns"] == ref["columns"] and res["crosstabs"] == ref["crosstabs"]
    assert res["quantiles"] == ref["quantiles"]
