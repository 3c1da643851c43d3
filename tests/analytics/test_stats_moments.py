"""One federated sum: the engine gives exactly the moments and level counts that preprocessing needs."""

from __future__ import annotations

import numpy as np
from stats_support import pooled_frame, split

from fedx.analytics import moments_plan
from fedx.data.preprocess import merge_levels
from fedx.data.schema import FeatureSpec, Schema
from fedx.privacy.policy import Policy


def test_moments_plan_gives_counts_sums_squares_and_level_counts() -> None:
    features = (FeatureSpec("x", "numeric"), FeatureSpec("region", "categorical"), FeatureSpec("claim", "numeric"),
                FeatureSpec("product", "categorical", ("basic", "plus", "premium", "gold")))
    plan = moments_plan(Schema(features=features, target="flag"))
    assert plan.needs_levels() == ["region"]
    pooled = pooled_frame()
    frames = split(pooled)
    plan = plan.with_levels(merge_levels([plan.local_levels(df) for df in frames.values()]))
    stage = plan.first_stage()
    total = np.sum([plan.local_vector(df, stage, Policy()) for df in frames.values()], axis=0)
    sums = plan.sufficient_statistics(total, stage)
    assert sums["rows"] == len(pooled)
    for col in ("x", "claim"):
        x = pooled[col].dropna().to_numpy()
        m = sums["moments"][col]
        assert m["count"] == x.size < len(pooled)
        np.testing.assert_allclose([m["sum"], m["sumsq"]], [x.sum(), np.square(x).sum()], rtol=1e-12)
    region = sums["frequencies"]["region"]
    assert region["counts"] == {k: float(v) for k, v in pooled["region"].value_counts().sort_index().items()}
    assert region["missing"] == pooled["region"].isna().sum() > 0
    assert sums["frequencies"]["product"]["counts"] == {**pooled["product"].value_counts().astype(float), "gold": 0.0}
