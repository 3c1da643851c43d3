"""The worked example: four hospitals of the UCI heart-disease data (skipped until the example ships it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stats_support import assert_close, run

DATA = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance" / "data" / "heart_disease_uci.csv"


@pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is not there yet")
def test_four_hospitals_equal_the_pooled_table() -> None:
    pooled = pd.read_csv(DATA)
    frames = {name: rows.reset_index(drop=True) for name, rows in pooled.groupby("dataset", sort=False)}
    assert sorted(len(f) for f in frames.values()) == [123, 200, 293, 304]
    res = run(frames, min_cohort=10, columns=["age", "chol", "trestbps"],
              histograms={"age": [20, 30, 40, 50, 60, 70, 80]},
              quantiles={"chol": [0.5, 0.9], "age": [0.5]}, quantile_precision=0.01,
              correlation=["age", "chol", "thalch"], crosstabs=[["sex", "cp"]], group_by="dataset")
    for col in ("age", "chol", "trestbps"):
        assert res["columns"][col]["count"] == pooled[col].count()
        assert_close(res["columns"][col]["mean"], pooled[col].mean())
        assert_close(res["columns"][col]["std"], pooled[col].std())
    hist = np.histogram(pooled["age"], [20, 30, 40, 50, 60, 70, 80])[0]
    assert res["histograms"]["age"]["counts"] == [int(n) if n >= 10 else None for n in hist]
    for col, probs in (("chol", [0.5, 0.9]), ("age", [0.5])):
        want = np.quantile(pooled[col].dropna(), probs, method="inverted_cdf")
        assert all(abs(res["quantiles"][col][repr(p)] - w) <= 0.01 for p, w in zip(probs, want))
    complete = pooled[["age", "chol", "thalch"]].dropna()
    np.testing.assert_allclose(res["correlation"]["matrix"], complete.corr().to_numpy(), rtol=1e-6)
    swiss = res["groups"]["levels"]["Switzerland"]
    assert swiss["rows"] == 123 and "histograms.age[70,80] (group dataset=Switzerland)" in res["suppressed"]
