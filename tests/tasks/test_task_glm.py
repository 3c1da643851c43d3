"""The GLM tasks trained by gradient descent land near the statsmodels maximum-likelihood fit."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from fedx.errors import DataError
from fedx.tasks import TabularData, TrainOptions, get_arrays, get_task

N = 3000


def _fitted(task_name: str, data: TabularData, opts: TrainOptions, null_start: bool = False) -> np.ndarray:
    task = get_task(task_name)
    model = task.build_model(data.n_features, {"kind": "glm"}, seed=0)
    if null_start:
        w = np.ones(len(data)) if data.weight is None else data.weight.astype(np.float64)
        task.set_null_intercept(model, float((w * data.y).sum()), float(w.sum()))
    report = task.train(model, data, opts)
    assert report.loss_after < report.loss_before
    weight, bias = get_arrays(model)
    return np.r_[bias, weight[0]]


def test_poisson_with_offset_matches_statsmodels() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 3))
    exposure = rng.uniform(0.1, 1.5, N)
    y = rng.poisson(np.exp(X @ [0.3, -0.2, 0.5] - 2.0) * exposure).astype(float)
    mle = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=np.log(exposure)).fit().params
    data = TabularData(X, y, offset=np.log(exposure))
    full = _fitted("claim_frequency", data, TrainOptions(epochs=300, lr=0.05, full_batch=True))
    np.testing.assert_allclose(full, mle, atol=1e-3)
    minibatch = _fitted("claim_frequency", data, TrainOptions(epochs=40, lr=0.02, batch_size=256))
    np.testing.assert_allclose(minibatch, mle, atol=0.1)


def test_gamma_with_weights_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(N, 3))
    claims = rng.integers(1, 4, N).astype(float)
    mean = np.exp(X @ [0.2, 0.4, -0.3] + 7.0)
    y = rng.gamma(2.0 * claims, mean / (2.0 * claims))  # average of `claims` amounts, each Gamma(shape 2)
    mle = sm.GLM(y, sm.add_constant(X), family=sm.families.Gamma(sm.families.links.Log()),
                 var_weights=claims).fit().params
    data = TabularData(X, y, weight=claims)
    fitted = _fitted("claim_severity", data, TrainOptions(epochs=200, lr=0.05, full_batch=True), null_start=True)
    np.testing.assert_allclose(fitted, mle, atol=1e-3)
    # From zero, the intercept (7) is far: the null start is what makes few steps enough.
    cold = _fitted("claim_severity", data, TrainOptions(epochs=200, lr=0.05, full_batch=True))
    assert abs(cold[0] - mle[0]) > 1.0


def test_null_intercept_needs_positive_totals() -> None:
    task = get_task("claim_frequency")
    with pytest.raises(DataError, match="null intercept"):
        task.set_null_intercept(task.build_model(2, {"kind": "glm"}, seed=0), 0.0, 10.0)


def test_glm_metrics_of_a_trained_model_beat_the_null() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2 * N, 3))
    exposure = rng.uniform(0.1, 1.5, 2 * N)
    y = rng.poisson(np.exp(X @ [0.6, -0.4, 0.5] - 1.5) * exposure).astype(float)
    train = TabularData(X[:N], y[:N], offset=np.log(exposure[:N]))
    test = TabularData(X[N:], y[N:], offset=np.log(exposure[N:]))
    task = get_task("claim_frequency")
    model = task.build_model(3, {"kind": "glm"}, seed=0)
    task.train(model, train, TrainOptions(epochs=200, lr=0.05, full_batch=True))
    metrics = task.metrics(test, task.predict(model, test))
    assert metrics["d2"] is not None and metrics["d2"] > 0.1
    assert metrics["gini"] is not None and metrics["gini"] > 0.2


def test_claim_frequency_without_exposure_is_a_plain_poisson_glm() -> None:
    """No ``data.exposure``: every row has exposure 1 (offset 0), and the exact fit is statsmodels' Poisson."""
    import pandas as pd

    from fedx.aggregators.newton import GLMData, NewtonRule, newton_fit
    from fedx.baselines import fit_preprocessor
    from fedx.config import config_from_dict
    from fedx.data.spec import schema_for

    rng = np.random.default_rng(3)
    n = 1200
    df = pd.DataFrame({"insurer": rng.choice(["north", "south"], n), "age": rng.normal(45, 12, n),
                       "region": rng.choice(["a", "b", "c"], n)})
    eta = -1.0 + 0.02 * (df["age"] - 45) + df["region"].map({"a": 0.0, "b": 0.4, "c": -0.3})
    df["claims"] = rng.poisson(np.exp(eta))
    cfg = config_from_dict({"name": "t", "task": "claim_frequency", "model": {"kind": "glm"},
                            "federation": {"aggregator": "newton"}, "security": {"encryption": "none"},
                            "data": {"source": "x.csv", "split_by": "insurer", "target": "claims"}})
    assert cfg.data.exposure is None
    prep = fit_preprocessor(cfg, schema_for(cfg, df), df)
    parts = [TabularData.from_frame(cfg, prep, df[df["insurer"] == name]) for name in ("north", "south")]
    task = get_task("claim_frequency")
    for part in parts:
        assert part.offset is None
        task.check_data(part)
    fit = newton_fit([GLMData(p.X, p.y) for p in parts], NewtonRule("poisson", feature_names=prep.feature_names))
    weight, bias = fit.state.params
    pooled = TabularData.from_frame(cfg, prep, df)
    mle = sm.GLM(pooled.y.astype(float), sm.add_constant(pooled.X.astype(float)), family=sm.families.Poisson()).fit()
    np.testing.assert_allclose(np.r_[bias, weight.ravel()], mle.params, rtol=1e-6, atol=1e-8)
