"""The policy at release: small cells suppressed and named, local refusals, deterministic calibrated noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from stats_support import pooled_frame, run, split

from fedx.analytics import StatsPlan, simulate_stats
from fedx.analytics.segments import NONCE_SLOTS
from fedx.config import StatsConfig
from fedx.errors import ConfigError, PolicyError
from fedx.privacy.policy import Policy


def small_cells() -> dict[str, pd.DataFrame]:
    """Level A: 30 rows; level B: 4 rows (2 at each of two institutions); w present in 3 rows only."""
    a = pd.DataFrame({"g": ["A"] * 30, "v": np.linspace(0.0, 29.0, 30), "w": [np.nan] * 27 + [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"g": ["B"] * 4, "v": [100.0, 101.0, 102.0, 103.0], "w": [np.nan] * 4})
    return {"one": pd.concat([a, b.iloc[:2]], ignore_index=True), "two": b.iloc[2:].reset_index(drop=True),
            "none": a.iloc[:0]}


def test_cells_under_min_cohort_are_null_and_named() -> None:
    res = run(small_cells(), min_cohort=5, columns=["v", "w"], quantiles={"w": [0.5]}, frequencies=["g"],
              histograms={"v": [0, 10, 20, 30, 100, 110]}, correlation=["v", "w"],
              levels={"g": ["A", "B", "C"]}, group_by="g")
    assert res["frequencies"]["g"]["counts"] == [30, None, 0]  # an empty cell singles out no one
    assert res["histograms"]["v"]["counts"] == [10, 10, 10, 0, None]
    assert res["columns"]["w"] == {"count": None, "mean": None, "variance": None, "std": None}
    assert res["quantiles"]["w"] == {"0.5": None, "precision": None}
    assert res["correlation"]["matrix"] is None and res["correlation"]["n"] is None
    groups = res["groups"]["levels"]
    assert groups["B"] is None
    assert groups["C"]["rows"] == 0 and groups["C"]["columns"]["v"]["mean"] is None
    assert set(res["suppressed"]) == {
        "frequencies.g[B]", "histograms.v[100,110]", "columns.w", "correlation", "quantiles.w", "groups.g=B",
        "columns.w (group g=A)", "correlation (group g=A)", "quantiles.w (group g=A)"}


def test_moments_at_the_minimum_are_released() -> None:
    res = run(small_cells(), min_cohort=3, columns=["w"])
    assert res["columns"]["w"]["count"] == 3 and res["columns"]["w"]["mean"] == 2.0 and res["suppressed"] == []


def test_an_institution_refuses_cells_below_its_local_minimum() -> None:
    cfg = StatsConfig(frequencies=["g"], min_cohort=1, local_min_cohort=3)
    plan = StatsPlan.from_config(cfg).with_levels({"g": ["A", "B"]})
    stage = plan.first_stage()
    frames = small_cells()
    with pytest.raises(PolicyError, match=r"two refuses the query: cell frequencies\.g\[B\] would single out fewer "
                                          r"than its local minimum of 3"):
        plan.local_vector(frames["two"], stage, Policy.from_config(cfg), source="two")
    assert plan.local_vector(frames["none"], stage, Policy.from_config(cfg), source="none").sum() == 0
    own = Policy.from_config(StatsConfig(local_min_cohort=1), local_min_cohort=3)  # a node's own policy
    with pytest.raises(PolicyError, match="fewer than its local minimum of 3"):
        plan.local_vector(frames["one"], stage, own, source="one")
    assert Policy.from_config(cfg, local_min_cohort=2).local_min_cohort == 3  # a node can only raise it


def test_quantile_search_is_not_refused_for_its_internal_bins() -> None:
    frames = split(pooled_frame(), [300, 700])
    res = run(frames, quantiles={"x": [0.5]}, local_min_cohort=20, min_cohort=20, quantile_precision=1e-3)
    want = np.quantile(pooled_frame()["x"].dropna(), 0.5, method="inverted_cdf")
    assert abs(res["quantiles"]["x"]["0.5"] - want) <= 1e-3


NOISY = {"columns": ["x"], "histograms": {"age": [18, 50, 89]}, "frequencies": ["product"], "bounds": {"x": [0, 100]},
         "noise": "laplace", "epsilon": 1.0, "min_cohort": 1}


def test_noise_is_deterministic_for_one_sum_and_unknown_without_the_nonce() -> None:
    cfg = StatsConfig(**NOISY)
    plan, policy = StatsPlan.from_config(cfg, seed=7), Policy.from_config(cfg)
    plan = plan.with_levels({"product": ["basic", "plus", "premium"]})
    stage = plan.first_stage()
    frames = split(pooled_frame())
    rng = np.random.default_rng(0)
    total = np.sum([plan.local_vector(df, stage, policy, rng=rng) for df in frames.values()], axis=0)
    first, again = plan.release(total, stage, policy).result, plan.release(total.copy(), stage, policy).result
    assert first == again  # every institution releases the same values
    other = total.copy()
    other[-NONCE_SLOTS:] += 1.0  # another summed nonce: what a server that cannot decrypt would have to guess
    assert plan.release(other, stage, policy).result["columns"] != first["columns"]
    exact = run(frames, **{**NOISY, "noise": "none"})
    assert first["histograms"] != exact["histograms"]
    assert abs(first["columns"]["x"]["mean"] - exact["columns"]["x"]["mean"]) < 1.0


def test_privacy_parameters_are_stated_per_statistic() -> None:
    res = run(split(pooled_frame()), **{**NOISY, "noise": "gaussian", "delta": 1e-5}, group_by="region")
    privacy = res["privacy"]
    assert privacy["noise"] == "gaussian" and privacy["epsilon"] == 1.0 and privacy["delta"] == 1e-5
    stats = {s["statistic"]: s for s in privacy["statistics"]}
    assert list(stats) == ["rows", "columns.x.count", "columns.x.sum", "columns.x.sumsq", "histograms.age",
                           "frequencies.product"]
    assert stats["columns.x.sum"]["sensitivity"] == 100.0 and stats["columns.x.sumsq"]["sensitivity"] == 1e4
    assert stats["histograms.age"]["sensitivity"] == 1.0
    assert math.isclose(stats["columns.x.sum"]["scale"], 100.0 * stats["rows"]["scale"])
    assert privacy["total_epsilon"] == 12.0 and privacy["total_delta"] == pytest.approx(12e-5)  # 6 + 6 per group


def test_released_noise_has_the_calibrated_spread() -> None:
    cfg = StatsConfig(columns=["x"], bounds={"x": [-2.0, 5.0]}, noise="laplace", epsilon=0.5, min_cohort=1)
    plan, policy = StatsPlan.from_config(cfg), Policy.from_config(cfg)
    stage = plan.first_stage()
    frame = pd.DataFrame({"x": np.linspace(-1.0, 4.0, 1000)})
    total = plan.local_vector(frame, stage, policy, rng=np.random.default_rng(0))
    sums, counts = [], []
    for nonce in range(2000):  # each summed nonce seeds different noise
        total[-NONCE_SLOTS:] = [nonce, 1, 2, 3]
        x = plan.release(total, stage, policy).result["columns"]["x"]
        sums.append(x["mean"] * x["count"])  # the noisy sum
        counts.append(x["count"])
    assert np.std(sums) == pytest.approx(math.sqrt(2) * 5.0 / 0.5, rel=0.1)  # sensitivity max(|lo|, |hi|) = 5
    assert np.mean(sums) == pytest.approx(frame["x"].sum(), abs=1.0)
    assert np.std(counts) == pytest.approx(math.sqrt(2) / 0.5, rel=0.1)
    assert np.mean(counts) == pytest.approx(1000, abs=0.3)


def test_noise_clips_to_the_bounds() -> None:
    frame = pd.DataFrame({"x": np.concatenate([np.full(500, 1.0), np.full(500, 1e6)])})
    res = run({"a": frame}, columns=["x"], bounds={"x": [0.0, 2.0]}, noise="laplace", epsilon=10.0)
    assert res["columns"]["x"]["mean"] == pytest.approx(1.5, abs=0.01)  # the mean of the clipped values


def test_noise_needs_bounds_and_excludes_quantiles() -> None:
    with pytest.raises(ConfigError, match=r"stats\.bounds\.y: noise 'laplace' on the sums of y needs bounds"):
        StatsPlan.from_config(StatsConfig(correlation=["x", "y"], bounds={"x": [0, 1]}, noise="laplace", epsilon=1.0))
    with pytest.raises(ConfigError, match=r"stats\.quantiles: quantiles cannot be released with noise"):
        StatsPlan.from_config(StatsConfig(quantiles={"x": [0.5]}, noise="gaussian", epsilon=1.0))
    plan = StatsPlan.from_config(StatsConfig(columns=["x"]))
    with pytest.raises(ConfigError, match="the policy's noise 'laplace' differs from the plan's 'none'"):
        simulate_stats(plan, {"a": pd.DataFrame({"x": [1.0]})}, Policy(noise="laplace", epsilon=1.0))


def test_noisy_correlation_states_each_cross_product() -> None:
    res = run(split(pooled_frame()), correlation=["x", "y"], bounds={"x": [0, 100], "y": [-20, 80]},
              noise="laplace", epsilon=2.0)
    stats = {s["statistic"]: s["sensitivity"] for s in res["privacy"]["statistics"]}
    assert stats == {"rows": 1.0, "correlation.n": 1.0, "correlation.sum.x": 100.0, "correlation.sum.y": 80.0,
                     "correlation.sum.x*x": 1e4, "correlation.sum.x*y": 8000.0, "correlation.sum.y*y": 6400.0}
    matrix = np.array(res["correlation"]["matrix"])
    assert np.all(np.abs(matrix) <= 1.0) and matrix[0, 0] == 1.0
    assert abs(matrix[0, 1] - pooled_frame()[["x", "y"]].dropna().corr().iloc[0, 1]) < 0.2
