"""Metrics: exact ones against sklearn/statsmodels, and combined ones (summed statistics) against the pooled data."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fedx.errors import ConfigError, DataError
from fedx.tasks import TabularData, calibration_curve, calibration_from_stats, get_task, operating_point
from fedx.tasks.metrics import (
    binary_metrics,
    binary_metrics_from_stats,
    binary_stats,
    glm_metrics,
    glm_metrics_from_stats,
    glm_stats,
    operating_point_from_stats,
    score_bins,
)

SIZES = [500, 4000, 15000, 40500]  # four institutions, very unequal
N = sum(SIZES)


def _labels(rng: np.random.Generator, rate: float) -> np.ndarray:
    return (rng.random(N) < rate).astype(np.float64)


def _normal(rate: float, sd: float, shift: float) -> Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = _labels(rng, rate)
        return y, expit(sd * rng.normal(size=N) + shift * y - 3)
    return make


def _rounded(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(rng, 0.01)
    return y, np.round(expit(2 * rng.normal(size=N) + 2 * y - 3), 3)  # heavy ties


def _saturated(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(rng, 0.02)
    p = expit(rng.normal(size=N) + 2 * y - 3)
    p[rng.random(N) < 0.05] = 0.0
    p[rng.random(N) < 0.01] = 1.0
    return y, p


def _fraud_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(rng, 0.003)
    return y, rng.beta(0.3 + 2 * y, 30)  # scores crowd near 0


def _bimodal(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(rng, 0.01)
    high = rng.random(N) < 0.3
    return y, expit(np.where(high, 3.0, -5.0) + 0.5 * rng.normal(size=N) + y)


def _tiny_positive_count(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.zeros(N)
    y[rng.choice(N, 4, replace=False)] = 1.0
    return y, expit(rng.normal(size=N) + y)


def _uninformative(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _labels(rng, 0.05), rng.random(N)


SCORES = {"balanced": _normal(0.5, 1.0, 1.5), "rate 5%": _normal(0.05, 1.0, 1.5),
          "rate 0.2%": _normal(0.002, 1.5, 3.0), "crowded logits (sd 0.3)": _normal(0.01, 0.3, 0.5),
          "rounded ties": _rounded, "exact 0 and 1": _saturated, "fraud-like beta": _fraud_like,
          "bimodal": _bimodal, "4 positives": _tiny_positive_count, "uninformative": _uninformative}


def _per_institution_stats(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    edges = np.cumsum([0, *SIZES])
    parts = [binary_stats(y[a:b], p[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    return {k: np.sum([s[k] for s in parts], axis=0) for k in parts[0]}


@pytest.mark.parametrize("case", SCORES)
def test_binned_ranking_metrics_match_sklearn_on_pooled_scores(case: str) -> None:
    y, p = SCORES[case](np.random.default_rng(len(case)))
    combined = binary_metrics_from_stats(_per_institution_stats(y, p))
    assert combined["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-3)
    assert combined["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    exact_recall = float(tpr[fpr <= 0.01].max())
    # Thresholds at bin edges are a subset of all thresholds: never above the exact recall, and short of it by
    # at most the positives of the bin that straddles the limit (here: at most one positive, or 2e-3).
    assert exact_recall - max(2e-3, 1 / y.sum()) <= combined["recall_at_1pct_fpr"] <= exact_recall + 1e-12


@pytest.mark.parametrize("case", ["rounded ties", "exact 0 and 1", "rate 5%"])
def test_exact_and_summed_metrics_agree(case: str) -> None:
    y, p = SCORES[case](np.random.default_rng(7))
    exact, combined = binary_metrics(y, p), binary_metrics_from_stats(_per_institution_stats(y, p))
    for key in ("n", "base_rate", "accuracy", "brier", "log_loss", "ece"):
        assert combined[key] == pytest.approx(exact[key], rel=1e-10), key
    assert exact["recall_at_1pct_fpr"] == pytest.approx(
        float(roc_curve(y, p, drop_intermediate=False)[1][roc_curve(y, p, drop_intermediate=False)[0] <= 0.01].max()))


def test_sum_of_institution_stats_equals_stats_of_pooled_data(synth: SimpleNamespace) -> None:
    y, p = _saturated(np.random.default_rng(3))
    w = np.random.default_rng(4).integers(1, 5, N).astype(np.float64)
    edges = np.cumsum([0, *SIZES])
    parts = [binary_stats(y[a:b], p[a:b], w[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    summed, pooled = synth.sum_stats(parts), binary_stats(y, p, w)
    assert set(summed) == set(pooled)
    for key in pooled:
        if key.startswith(("hist", "n", "calib_w")) and key not in ("calib_w_pred",):
            np.testing.assert_array_equal(summed[key], pooled[key], err_msg=key)  # counts: exactly
        else:
            np.testing.assert_allclose(summed[key], pooled[key], rtol=1e-12, err_msg=key)


def test_weighted_metrics_match_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(5)
    y, p = _normal(0.1, 1.0, 1.5)(rng)
    w = rng.integers(0, 4, N).astype(np.float64)
    exact = binary_metrics(y, p, w)
    combined = binary_metrics_from_stats(binary_stats(y, p, w))
    assert exact["auprc"] == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-12)
    assert combined["auprc"] == pytest.approx(exact["auprc"], abs=1e-3)
    assert combined["roc_auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-3)
    assert combined["n"] == N


def test_equal_scores_share_a_bin_and_order_is_kept() -> None:
    p = np.array([0.0, 1e-300, 1e-9, 0.3, 0.3, 0.30001, 0.5, 1 - 1e-9, 1.0])
    b = score_bins(p)
    assert b[3] == b[4] and np.all(np.diff(b) >= 0)
    assert b[0] == 0 and b[-1] == b.max()


def _brute_force_operating_point(y: np.ndarray, p: np.ndarray, max_fpr: float) -> tuple[float, float, float, float]:
    best: tuple[float, float, float, float] | None = None
    n_pos, n_neg = y.sum(), (1 - y).sum()
    for t in np.unique(p):
        flag = p >= t
        tp, fp = (flag & (y == 1)).sum(), (flag & (y == 0)).sum()
        recall, fpr = tp / n_pos, fp / n_neg
        if fpr <= max_fpr and (best is None or recall > best[2] or (recall == best[2] and t > best[0])):
            best = (float(t), tp / (tp + fp), recall, fpr)
    assert best is not None
    return best


def test_operating_point_at_a_max_fpr_is_the_best_recall() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(3000) < 0.05).astype(float)
    p = np.round(expit(rng.normal(size=3000) + 2 * y - 2), 3)
    for max_fpr in (0.001, 0.01, 0.1):
        op = operating_point(y, p, max_fpr=max_fpr)
        assert (op.threshold, op.precision, op.recall, op.fpr) == pytest.approx(
            _brute_force_operating_point(y, p, max_fpr))


def test_operating_point_at_a_threshold() -> None:
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1], float)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    op = operating_point(y, p, threshold=0.45)
    assert (op.threshold, op.precision, op.recall, op.fpr) == (0.45, 0.75, 0.75, 0.25)
    nothing = operating_point(y, p, threshold=0.9)
    assert (nothing.precision, nothing.recall, nothing.fpr) == (None, 0.0, 0.0)
    with pytest.raises(ConfigError, match="exactly one of max_fpr and threshold"):
        operating_point(y, p)
    with pytest.raises(ConfigError, match="max_fpr"):
        operating_point(y, p, max_fpr=1.5)


def test_operating_point_from_stats_uses_bin_edges() -> None:
    rng = np.random.default_rng(12)
    y, p = _normal(0.05, 1.0, 2.0)(rng)
    stats = _per_institution_stats(y, p)
    op = operating_point_from_stats(stats, threshold=0.3)
    assert op.threshold is not None and 0.2995 < op.threshold <= 0.3
    exact = operating_point(y, p, threshold=op.threshold)
    assert (op.precision, op.recall, op.fpr) == pytest.approx((exact.precision, exact.recall, exact.fpr))
    at_fpr = operating_point_from_stats(stats, max_fpr=0.01)
    assert at_fpr.fpr is not None and at_fpr.fpr <= 0.01
    assert at_fpr.recall == pytest.approx(operating_point(y, p, max_fpr=0.01).recall, abs=3e-3)


def test_calibration_curve() -> None:
    rng = np.random.default_rng(13)
    p = rng.random(5000) * 0.6  # bins above 0.6 stay empty
    y = (rng.random(5000) < p).astype(float)
    curve = calibration_curve(y, p)
    in_bin = (p >= 0.2) & (p < 0.3)
    assert curve.weight[2] == in_bin.sum()
    assert curve.mean_predicted[2] == pytest.approx(p[in_bin].mean())
    assert curve.observed_rate[2] == pytest.approx(y[in_bin].mean())
    assert np.isnan(curve.mean_predicted[7:]).all() and (curve.weight[7:] == 0).all()
    gaps = np.abs(curve.mean_predicted[:6] - curve.observed_rate[:6])
    assert curve.ece == pytest.approx((curve.weight[:6] * gaps).sum() / 5000)
    pooled = calibration_from_stats(binary_stats(y, p))
    np.testing.assert_allclose(pooled.observed_rate[:6], curve.observed_rate[:6], rtol=1e-12)
    np.testing.assert_array_equal(curve.bin_edges, np.linspace(0, 1, 11))


@pytest.mark.parametrize("task_name", ["fraud", "disease_risk"])
def test_single_class_and_empty_test_splits(task_name: str) -> None:
    task = get_task(task_name)
    rng = np.random.default_rng(14)
    no_positives = TabularData(rng.normal(size=(50, 2)), np.zeros(50))
    empty = TabularData(np.zeros((0, 2)), np.zeros(0))
    p = rng.random(50)
    for metrics in (task.metrics(no_positives, p), task.metrics_from_stats(task.eval_stats(no_positives, p))):
        assert metrics["roc_auc"] is None and metrics["n"] == 50 and metrics["base_rate"] == 0.0
        assert all(v is None or math.isfinite(v) for v in metrics.values())
    for metrics in (task.metrics(empty, np.zeros(0)), task.metrics_from_stats(task.eval_stats(empty, np.zeros(0)))):
        assert metrics["n"] == 0 and all(v is None for k, v in metrics.items() if k != "n")
    # An empty institution adds nothing to the others.
    data = TabularData(rng.normal(size=(200, 2)), (rng.random(200) < 0.3).astype(float))
    q = rng.random(200)
    both = {k: a + b for (k, a), b in zip(task.eval_stats(data, q).items(),
                                           task.eval_stats(empty, np.zeros(0)).values())}
    assert task.metrics_from_stats(both) == task.metrics_from_stats(task.eval_stats(data, q))


def test_task_metric_sets() -> None:
    rng = np.random.default_rng(15)
    data = TabularData(rng.normal(size=(400, 2)), (rng.random(400) < 0.2).astype(float))
    p = rng.random(400)
    fraud, disease = get_task("fraud").metrics(data, p), get_task("disease_risk").metrics(data, p)
    assert set(fraud) == {"n", "base_rate", "auprc", "roc_auc", "recall_at_1pct_fpr", "precision_at_1pct_fpr"}
    assert set(disease) == {"n", "base_rate", "roc_auc", "accuracy", "brier", "log_loss", "ece"}
    assert disease["accuracy"] == pytest.approx(((p >= 0.5) == data.y).mean())
    assert disease["brier"] == pytest.approx(((p - data.y) ** 2).mean())


def test_bad_predictions_and_stats_are_rejected() -> None:
    task = get_task("fraud")
    data = TabularData(np.zeros((3, 1)), np.array([0.0, 1.0, 0.0]))
    with pytest.raises(DataError, match=r"predictions: expected shape \(3,\)"):
        task.metrics(data, np.zeros(4))
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]; 1 are not \(first: row 2, value 1.5\)"):
        task.metrics(data, np.array([0.1, 0.2, 1.5]))
    stats = task.eval_stats(data, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match=r"stats: missing 'hist_pos'"):
        task.metrics_from_stats({k: v for k, v in stats.items() if k != "hist_pos"})
    with pytest.raises(DataError, match=r"stats\['hist_neg'\]: expected shape"):
        task.metrics_from_stats({**stats, "hist_neg": stats["hist_neg"][:10]})
    with pytest.raises(DataError, match="finite positive means"):
        get_task("claim_frequency").metrics(data, np.array([1.0, 0.0, 1.0]))


# --------------------------------------------------------------------------- GLM


def _poisson(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    exposure = rng.uniform(0.1, 1.5, n)
    y = rng.poisson(np.exp(X @ [0.3, -0.2, 0.5] - 2.0) * exposure).astype(float)
    return X, y, np.log(exposure)


def _gamma(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    w = rng.integers(1, 4, n).astype(float)
    mu = np.exp(X @ [0.2, 0.4, -0.3] + 7.0)
    return X, rng.gamma(2.0 * w, mu / (2.0 * w)), w  # mean of w claims, each Gamma(shape 2)


def test_poisson_metrics_match_statsmodels_and_sklearn(synth: SimpleNamespace) -> None:
    X, y, offset = _poisson(20000, 0)
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset).fit()
    mu = res.fittedvalues
    exact = glm_metrics("poisson", y, mu, offset)
    assert exact["deviance"] == pytest.approx(res.deviance / len(y), rel=1e-9)
    assert exact["d2"] == pytest.approx(1 - res.deviance / res.null_deviance, rel=1e-9)
    assert exact["mae"] == pytest.approx(np.abs(y - mu).mean(), rel=1e-12)
    edges = np.cumsum([0, 1000, 5000, 14000])
    parts = [glm_stats("poisson", y[a:b], mu[a:b], offset[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    combined = glm_metrics_from_stats("poisson", synth.sum_stats(parts))
    for key in ("n", "deviance", "d2", "mae"):
        assert combined[key] == pytest.approx(exact[key], rel=1e-10), key
    assert combined["gini"] == pytest.approx(exact["gini"], abs=1e-3)


def test_gamma_metrics_with_weights_match_statsmodels(synth: SimpleNamespace) -> None:
    X, y, w = _gamma(20000, 1)
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Gamma(sm.families.links.Log()), var_weights=w).fit()
    mu = res.fittedvalues
    exact = glm_metrics("gamma", y, mu, weight=w)
    assert exact["deviance"] == pytest.approx(res.deviance / w.sum(), rel=1e-9)
    assert exact["d2"] == pytest.approx(1 - res.deviance / res.null_deviance, rel=1e-9)
    parts = [glm_stats("gamma", y[i::3], mu[i::3], weight=w[i::3]) for i in range(3)]
    combined = glm_metrics_from_stats("gamma", synth.sum_stats(parts))
    for key in ("n", "deviance", "d2", "mae"):
        assert combined[key] == pytest.approx(exact[key], rel=1e-10), key
    assert combined["gini"] == pytest.approx(exact["gini"], abs=1e-3)


def _gini_by_sorting(rate: np.ndarray, exposure: np.ndarray, loss: np.ndarray) -> float:
    """As in scikit-learn's insurance example: 1 - 2 * area under the ordered Lorenz curve."""
    order = np.argsort(rate)
    x = np.r_[0, np.cumsum(exposure[order])] / exposure.sum()
    c = np.r_[0, np.cumsum(loss[order])] / loss.sum()
    return float(1 - 2 * np.trapezoid(c, x))


def test_gini_is_the_ordered_lorenz_gini() -> None:
    X, y, offset = _poisson(5000, 2)
    exposure = np.exp(offset)
    mu = np.exp(X @ [0.3, -0.2, 0.5] - 2.0) * exposure
    gini = glm_metrics("poisson", y, mu, offset)["gini"]
    # Distinct rates closer than RATE_TIE_TOL (1e-5 in log) count as ties: a difference of order 1e-6.
    assert gini == pytest.approx(_gini_by_sorting(mu / exposure, exposure, y), abs=1e-5)
    assert 0.1 < gini < 1
    # Equal predicted rates tie, even through float32 rounding of the offset: one tie group is the diagonal.
    constant = glm_metrics("poisson", y, (0.1 * exposure).astype(np.float32), offset.astype(np.float32))["gini"]
    assert constant == pytest.approx(0.0, abs=1e-12)
    # Two tariff cells: the Gini of the two-group Lorenz curve, whatever the exposures.
    cell = X[:, 0] > 0
    rate = np.where(cell, 0.3, 0.1)
    two = glm_metrics("poisson", y, (rate * exposure).astype(np.float32), offset.astype(np.float32))["gini"]
    e_lo, l_lo = exposure[~cell].sum() / exposure.sum(), y[~cell].sum() / y.sum()
    assert two == pytest.approx(1 - (e_lo * l_lo + (1 - e_lo) * (l_lo + 1)), abs=1e-7)  # float32 exposures


def test_glm_empty_and_claim_free_splits() -> None:
    task = get_task("claim_frequency")
    empty = TabularData(np.zeros((0, 2)), np.zeros(0), offset=np.zeros(0))
    for metrics in (task.metrics(empty, np.zeros(0)), task.metrics_from_stats(task.eval_stats(empty, np.zeros(0)))):
        assert metrics == {"n": 0.0, "deviance": None, "d2": None, "gini": None, "mae": None}
    no_claims = TabularData(np.zeros((4, 2)), np.zeros(4), offset=np.zeros(4))
    mu = np.full(4, 0.1)
    for metrics in (task.metrics(no_claims, mu), task.metrics_from_stats(task.eval_stats(no_claims, mu))):
        assert metrics["d2"] is None and metrics["gini"] is None
        assert metrics["deviance"] == pytest.approx(0.2)  # 2 * mu per row


def test_combined_metrics_of_institutions_equal_the_metrics_of_their_pooled_rows() -> None:
    task = get_task("disease_risk")
    y, p = _saturated(np.random.default_rng(5))
    edges = np.cumsum([0, *SIZES])
    x = np.zeros((len(y), 1), dtype=np.float32)
    parts = [task.eval_stats(TabularData(x[a:b], y[a:b].astype(np.float32)), p[a:b])
             for a, b in zip(edges[:-1], edges[1:])]
    combined = task.combined_metrics(parts)
    exact = binary_metrics(y, p)
    for key in ("n", "base_rate", "accuracy", "brier"):
        assert combined[key] == pytest.approx(exact[key], rel=1e-10), key
