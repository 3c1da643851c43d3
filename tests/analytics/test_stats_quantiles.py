"""Quantiles by federated histogram refinement are within the stated precision of numpy's inverted_cdf."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_support import pooled_frame, run, split

from fedx.analytics.quantiles import DEFAULT_RESOLUTION, RANGE_STDS, inverted_cdf_rank

POOLED = pooled_frame()
FRAMES = split(POOLED)
PROBS = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]


def assert_quantiles(got: dict, values: np.ndarray, probs: list[float], precision: float) -> None:
    """Every quantile within the reported precision of numpy's, and that precision within the stated one."""
    assert got["precision"] is not None and got["precision"] <= precision * (1 + 1e-9)
    want = np.quantile(values, probs, method="inverted_cdf")
    for p, w in zip(probs, want):
        assert abs(got[repr(p)] - w) <= got["precision"], (p, got[repr(p)], w, got["precision"])


def test_inverted_cdf_rank_is_numpys_for_every_n_and_p() -> None:
    for n in range(1, 60):
        values = np.arange(1, n + 1, dtype=float)  # the k-th value is k
        probs = np.array([0.01, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.6, 0.7, 2 / 3, 0.75, 0.9, 0.99])
        want = np.quantile(values, probs, method="inverted_cdf")
        assert [inverted_cdf_rank(n, float(p)) for p in probs] == want.astype(int).tolist()


def test_continuous_column_with_a_derived_range() -> None:
    res = run(FRAMES, quantiles={"x": PROBS, "claim": [0.5, 0.9]})
    x = POOLED["x"].dropna().to_numpy()
    default = 2 * RANGE_STDS * x.std(ddof=1) * DEFAULT_RESOLUTION
    assert_quantiles(res["quantiles"]["x"], x, PROBS, default * (1 + 1e-6))
    claim = POOLED["claim"].dropna().to_numpy()  # skewed: the 0.9 quantile lies far from the mean
    assert_quantiles(res["quantiles"]["claim"], claim, [0.5, 0.9], 2 * RANGE_STDS * claim.std(ddof=1) * 1e-4 * 1.01)
    assert res["stages"] == 3  # moments, the first histogram, one refinement
    assert "x" not in res["columns"]  # the moments a search needs are not released


def test_integer_valued_column_with_ties_and_a_stated_precision() -> None:
    res = run(FRAMES, quantiles={"age": PROBS}, quantile_precision=0.01)
    assert_quantiles(res["quantiles"]["age"], POOLED["age"].to_numpy(), PROBS, 0.01)
    for p in PROBS:  # the answer is the tied whole number, to the precision
        assert abs(res["quantiles"]["age"][repr(p)] - round(res["quantiles"]["age"][repr(p)])) <= 0.01


def test_point_mass_and_a_constant_column() -> None:
    rng = np.random.default_rng(3)
    values = np.where(rng.random(500) < 0.7, 0.0, rng.exponential(100.0, 500))  # 70% zeros (claims)
    frames = split(pd.DataFrame({"v": values, "c": np.full(500, 7.25)}), [100, 0, 400])
    res = run(frames, quantiles={"v": [0.5, 0.69, 0.71, 0.95], "c": [0.5]}, quantile_precision=1e-3)
    assert_quantiles(res["quantiles"]["v"], values, [0.5, 0.69, 0.71, 0.95], 1e-3)
    assert abs(res["quantiles"]["c"]["0.5"] - 7.25) <= 1e-3


def test_declared_range_starts_at_stage_one_and_finds_values_outside_it() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0.0, 1.0, 300), [1e6, 2e6, -5e5]])  # extreme outliers in both tails
    frames = split(pd.DataFrame({"v": rng.permutation(values)}), [3, 300])
    res = run(frames, quantiles={"v": [0.001, 0.5, 0.999]}, quantile_range={"v": [-3.0, 3.0]})
    assert_quantiles(res["quantiles"]["v"], values, [0.001, 0.5, 0.999], 6.0 * DEFAULT_RESOLUTION)
    assert res["quantiles"]["v"]["0.999"] > 1e6  # found by widening the bracket beyond the declared range
    inside = run(frames, quantiles={"v": [0.5]}, quantile_range={"v": [-3.0, 3.0]})
    assert inside["stages"] == 2  # the declared range saves the moments stage


def test_quantiles_per_group() -> None:
    res = run(FRAMES, quantiles={"claim": [0.25, 0.75]}, group_by="product", quantile_precision=0.5)
    for level, frame in POOLED.groupby("product"):
        assert_quantiles(res["groups"]["levels"][level]["quantiles"]["claim"], frame["claim"].dropna().to_numpy(),
                         [0.25, 0.75], 0.5)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_columns(n: int) -> None:
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0])[:n]
    res = run(split(pd.DataFrame({"v": values}), [n]), quantiles={"v": [0.1, 0.5, 0.9]}, quantile_precision=1e-4)
    assert_quantiles(res["quantiles"]["v"], values, [0.1, 0.5, 0.9], 1e-4)
