"""The engine against XGBoost ``hist`` on the same pooled data and parameters (the independent truth).

Fed the same cut points (the data pre-binned: each feature replaced by its bin index, so that XGBoost's
sketch keeps every one of the <= 256 distinct values as its own bin), XGBoost must grow the same trees:
the same number of splits and predictions equal to float32 precision (XGBoost keeps gradients and
predictions in float32; fedx rounds per-row g/h to 2^-20 and sums in float64, so 1e-5 bounds the gap).
On raw data each side sketches its own cut points, so trees differ; then the scores must agree within 0.005.
"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score
from trees_support import NAMES6, classification, counts, split_rows

from fedx.trees import (
    BinEdges,
    GBDTParams,
    HorizontalParty,
    federated_edges,
    fit_horizontal,
    fit_pooled,
)


def _prebinned(edges: BinEdges, X: np.ndarray) -> np.ndarray:
    B = edges.bin(X).astype(np.float64)
    B[np.isnan(X)] = np.nan
    return B


@pytest.mark.parametrize("settings", [
    {"max_depth": 4, "learning_rate": 0.3, "reg_lambda": 1.0, "min_child_weight": 1.0, "gamma": 0.0, "missing": 0.0},
    {"max_depth": 5, "learning_rate": 0.3, "reg_lambda": 2.0, "min_child_weight": 3.0, "gamma": 0.0, "missing": 0.15},
    {"max_depth": 5, "learning_rate": 0.2, "reg_lambda": 0.5, "min_child_weight": 2.0, "gamma": 2.0, "missing": 0.15},
], ids=["plain", "missing", "gamma"])
def test_logistic_matches_xgboost_hist_on_the_same_bins(settings: dict) -> None:
    settings = dict(settings)
    missing = settings.pop("missing")
    X, y = classification(n=3000, missing=missing)
    params = GBDTParams(trees=15, max_bins=32, **settings)
    edges = BinEdges.from_quantiles(X, 32)
    ours = fit_pooled(X, y, params, NAMES6, edges)
    ref = xgb.XGBClassifier(n_estimators=15, max_depth=settings["max_depth"], learning_rate=settings["learning_rate"],
                            reg_lambda=settings["reg_lambda"], min_child_weight=settings["min_child_weight"],
                            gamma=settings["gamma"], max_bin=256, tree_method="hist", base_score=float(y.mean()),
                            n_jobs=1).fit(_prebinned(edges, X), y)
    nodes = ref.get_booster().trees_to_dataframe().groupby("Tree").size().to_numpy()
    assert [len(t.feature) for t in ours.trees] == nodes.tolist()
    p_ref = ref.predict_proba(_prebinned(edges, X))[:, 1]
    p_ours = ours.predict_proba(X)[:, 1]
    assert np.max(np.abs(p_ref - p_ours)) < 1e-5


def test_poisson_matches_xgboost_count_poisson_with_exposure() -> None:
    X, y, exposure = counts()
    params = GBDTParams(trees=20, max_depth=4, learning_rate=0.2, max_bins=32, objective="count:poisson")
    edges = BinEdges.from_quantiles(X, 32)
    ours = fit_pooled(X, y, params, [f"x{i}" for i in range(4)], edges, offset=np.log(exposure))
    base = y.sum() / exposure.sum()
    assert ours.base_margin == pytest.approx(np.log(base))
    # XGBoost ignores base_score when a base margin is given, so the base rate goes into the margin; its
    # Poisson hessian is exp(margin + max_delta_step), 0.7 by default: set to 0 for the plain Newton step.
    data = xgb.DMatrix(_prebinned(edges, X), label=y, base_margin=np.log(exposure) + np.log(base))
    ref = xgb.train({"objective": "count:poisson", "tree_method": "hist", "max_depth": 4, "eta": 0.2,
                     "max_bin": 256, "max_delta_step": 0.0, "nthread": 1}, data, 20)
    mu_ref = ref.predict(data)
    mu_ours = ours.predict(X, offset=np.log(exposure))
    assert np.max(np.abs(mu_ours / mu_ref - 1.0)) < 1e-5
    assert np.corrcoef(mu_ours, exposure * np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1] - 1.0))[0, 1] > 0.9


def test_federated_sketch_scores_within_0005_of_xgboost_on_raw_data() -> None:
    X, y = classification(n=8000, seed=5)
    Xt, yt = classification(n=8000, seed=6)
    params = GBDTParams(trees=40, max_depth=4, learning_rate=0.1, max_bins=64)
    parties = {f"inst{i}": HorizontalParty(f"inst{i}", X[r], y[r], params) for i, r in enumerate(split_rows(len(y)))}
    ours = fit_horizontal(parties, params, NAMES6).predict_proba(Xt)[:, 1]
    ref = xgb.XGBClassifier(n_estimators=40, max_depth=4, learning_rate=0.1, max_bin=64, tree_method="hist",
                            n_jobs=1).fit(X, y).predict_proba(Xt)[:, 1]
    assert abs(average_precision_score(yt, ours) - average_precision_score(yt, ref)) < 0.005
    assert abs(roc_auc_score(yt, ours) - roc_auc_score(yt, ref)) < 0.005
    assert np.corrcoef(ours, ref)[0, 1] > 0.99


def test_sketch_gives_every_value_of_a_discrete_feature_its_own_bin() -> None:
    X, y = classification(n=6000)
    params = GBDTParams(trees=1, max_bins=64)
    parties = {f"inst{i}": HorizontalParty(f"inst{i}", X[r], y[r], params) for i, r in enumerate(split_rows(len(y)))}
    edges, _ = federated_edges(parties, 64)
    bins = edges.bin(X)
    for v in range(5):                                    # x3 takes 0..4: one bin each
        assert len(np.unique(bins[X[:, 3] == v, 3])) == 1
    assert len(np.unique(bins[:, 3])) == 5
    # x5 is 0 at 90% of the rows: the pile at the minimum takes no rank, so every rank falls in the tail
    assert len(edges.cuts[5]) == 63
    # a continuous feature: 64 bins of equal counts (within 20%)
    share = np.bincount(bins[:, 0]) / len(y)
    assert len(edges.cuts[0]) == 63 and share.max() < 1.2 / 64 and share[:64].min() > 0.8 / 64


def _piled(n: int, seed: int = 11) -> np.ndarray:
    """Features whose values pile up: a pile inside a continuous spread, a heavy-tailed count, a pile at 0."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, 3))
    X[:, 0] = np.where(rng.random(n) < 0.4, 0.25, rng.normal(size=n))             # 40% at one inner value
    X[:, 1] = np.round(rng.lognormal(2.5, 0.9, n))                                # counts, hundreds of values
    X[:, 2] = np.where(rng.random(n) < 0.95, 0.0, np.round(rng.exponential(40.0, n)))  # 95% at 0, a long tail
    return X


def test_sketch_cuts_piled_features_at_pooled_rank_quantiles_as_xgboost_does() -> None:
    """The federated cuts split the rows as the pooled rank quantiles do, and keep as many cuts as XGBoost.

    The truth is computed here from the pooled rows with numpy: ranks evenly spaced over the rows, leaving
    out a pile at the minimum (one that holds the first rank), repeated values collapsed to one cut at the
    value. XGBoost's own sketch (exact below 8 * max_bin distinct values) places its cuts the same way but
    also keeps one at the maximum and leaves the rows at the minimum and at the maximum out of the spacing
    even when they are a few (which this sketch never locates): its count is within 2 of ours. A sketch that spends every bin on a piled feature (the rest of
    the range holds too few rows for that), or cuts above each value instead of at it, fails.
    """
    B, n = 64, 12000
    X = _piled(n)
    y = (np.random.default_rng(12).random(n) < 0.3).astype(np.float64)
    params = GBDTParams(trees=1, max_bins=B)
    parties = {f"inst{i}": HorizontalParty(f"inst{i}", X[r], y[r], params) for i, r in enumerate(split_rows(n))}
    edges, stages = federated_edges(parties, B)
    assert stages <= 12
    for f in range(X.shape[1]):
        col = np.sort(X[:, f])
        at_min = int(np.sum(col == col[0]))
        skip = at_min if at_min >= n // B + 1 else 0            # a pile at the minimum takes no rank
        ranks = skip + (np.arange(1, B) * (n - skip)) // B + 1
        truth = np.unique(col[ranks - 1])
        assert len(edges.cuts[f]) == len(truth) < B - 1, f
        assert np.array_equal(edges.bin(X)[:, f], np.searchsorted(truth, X[:, f], side="right")), f
    for f in (1, 2):
        assert B + 1 < len(np.unique(X[:, f])) < 8 * B
        _, cut = xgb.QuantileDMatrix(X[:, [f]], max_bin=B).get_quantile_cut()
        theirs = cut[1:-1]                           # XGBoost adds one cut below the minimum, one above the maximum
        assert abs(len(theirs) - len(edges.cuts[f])) <= 2, f
