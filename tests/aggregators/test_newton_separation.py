"""Separation, absent levels and collinear columns give clear errors, never NaN; the L2 penalty fits them.

The penalised fits are checked against scipy's direct minimisation of the pooled penalised objective
``-loglike + l2 / 2 * ||beta[1:]||^2`` (statsmodels' fit_regularized scales its penalty otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from test_newton import split

from fedx.aggregators.base import ModelState
from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import (
    GLMData,
    NewtonRule,
    beta_to_params,
    local_stats,
    newton_fit,
    params_to_beta,
    round_inputs,
)
from fedx.errors import AggregationError


def features(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2))


def run_until_error(parts: list[GLMData], rule: NewtonRule, rounds: int = 40) -> tuple[AggregationError, int]:
    """Run rounds until apply raises; every state on the way holds finite coefficients."""
    state = ModelState(beta_to_params(np.zeros(parts[0].X.shape[1] + 1)))
    for r in range(rounds):
        total = sum(local_stats(p.X, p.y, state.params, rule.family.name, p.offset, p.weight, **round_inputs(state))
                    for p in parts)
        try:
            state = rule.apply(state, [total])
        except AggregationError as err:
            return err, r
        assert np.all(np.isfinite(params_to_beta(state.params)))
    raise AssertionError(f"no error in {rounds} rounds")


def penalised_optimum(X: np.ndarray, y: np.ndarray, family: str, l2: float,
                      offset: np.ndarray | None = None) -> np.ndarray:
    """scipy's minimiser of -loglike + l2/2 ||beta[1:]||^2 on the pooled rows (up to constants in beta)."""
    design = np.column_stack([np.ones(len(y)), X])
    off = np.zeros(len(y)) if offset is None else offset
    mask = np.r_[0.0, np.ones(X.shape[1])]

    def mean(beta: np.ndarray) -> np.ndarray:
        eta = design @ beta + off
        return 1 / (1 + np.exp(-eta)) if family == "binomial" else np.exp(eta)

    def objective(beta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = design @ beta + off
        value = np.sum(np.logaddexp(0.0, eta) - y * eta) if family == "binomial" else np.sum(np.exp(eta) - y * eta)
        return value + 0.5 * l2 * np.sum(mask * beta**2), design.T @ (mean(beta) - y) + l2 * mask * beta

    def hessian(beta: np.ndarray) -> np.ndarray:
        mu = mean(beta)
        w = mu * (1 - mu) if family == "binomial" else mu
        return design.T @ (w[:, None] * design) + l2 * np.diag(mask)

    res = minimize(objective, np.zeros(design.shape[1]), jac=True, hess=hessian, method="trust-exact",
                   options={"gtol": 1e-8})
    assert np.max(np.abs(objective(res.x)[1])) < 1e-6, res.message
    return res.x


def estimates(parts: list[GLMData], rule: NewtonRule, names: list[str]) -> np.ndarray:
    fit = newton_fit(parts, rule)
    report = GLMResults.from_newton(fit.total, fit.state, rule, names).to_dict()
    assert report["converged"]
    est = np.array([c["estimate"] for c in report["coefficients"]])
    assert np.all(np.isfinite(est)) and all(np.isfinite(c["std_error"]) for c in report["coefficients"])
    return est


def test_complete_separation_is_refused_with_a_hint() -> None:
    X = features()
    y = (X[:, 0] + X[:, 1] > 0.3).astype(float)  # separated by a combination, not by one column
    err, rounds = run_until_error(split(X, y), NewtonRule("binomial"))
    assert "complete separation" in str(err) and "federation.l2" in str(err)
    assert rounds <= 10


def test_separation_by_one_column_is_refused_before_the_first_step() -> None:
    X = features()
    y = (X[:, 1] > 0).astype(float)
    err, rounds = run_until_error(split(X, y), NewtonRule("binomial", feature_names=["x", "z"]))
    assert rounds == 0
    assert "coefficient 2 (z)" in str(err) and "+infinity" in str(err) and "federation.l2" in str(err)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_a_level_whose_rows_all_have_y_zero_is_refused(family: str) -> None:
    X = features()
    rng = np.random.default_rng(1)
    level = (rng.random(len(X)) < 0.03).astype(float)
    y = (rng.random(len(X)) < 0.4).astype(float) if family == "binomial" else rng.poisson(1.0, len(X)).astype(float)
    y[level == 1] = 0.0
    err, rounds = run_until_error(split(np.column_stack([X, level]), y),
                                  NewtonRule(family, feature_names=["x", "z", "site[T.rare]"]))
    assert rounds == 0
    assert "coefficient 3 (site[T.rare])" in str(err) and "-infinity" in str(err)


@pytest.mark.parametrize("family", ["poisson", "gamma", "binomial"])
def test_a_level_absent_everywhere_is_refused(family: str) -> None:
    X = np.column_stack([features(), np.zeros(600)])
    rng = np.random.default_rng(2)
    y = {"poisson": rng.poisson(1.0, 600).astype(float), "gamma": rng.gamma(2.0, 1.0, 600),
         "binomial": (rng.random(600) < 0.5).astype(float)}[family]
    err, _ = run_until_error(split(X, y), NewtonRule(family, feature_names=["x", "z", "region[T.west]"]))
    assert "coefficient 3 (region[T.west]) is zero in every row" in str(err)
    err, _ = run_until_error(split(X, y), NewtonRule(family))
    assert "coefficient 3 (column 2 of X)" in str(err)


def test_collinear_columns_are_refused() -> None:
    X = features()
    X = np.column_stack([X, 2 * X[:, 0] - X[:, 1]])
    y = np.random.default_rng(3).poisson(1.0, len(X)).astype(float)
    err, _ = run_until_error(split(X, y), NewtonRule("poisson", feature_names=["x", "z", "w"]))
    assert "coefficient 3 (w)" in str(err) and "linear combination" in str(err)


def test_l2_fits_a_separated_binomial_and_equals_scipy() -> None:
    X = features()
    y = (X[:, 0] + X[:, 1] > 0.3).astype(float)
    est = estimates(split(X, y), NewtonRule("binomial", l2=1.0), ["x", "z"])
    np.testing.assert_allclose(est, penalised_optimum(X, y, "binomial", 1.0), rtol=1e-6)


def test_l2_poisson_with_offset_equals_scipy() -> None:
    X = features(2000, seed=4)
    rng = np.random.default_rng(5)
    exposure = rng.uniform(0.2, 1.0, len(X))
    y = rng.poisson(exposure * np.exp(-0.5 + X @ [0.6, -0.4])).astype(float)
    est = estimates(split(X, y, np.log(exposure)), NewtonRule("poisson", l2=25.0), ["x", "z"])
    np.testing.assert_allclose(est, penalised_optimum(X, y, "poisson", 25.0, np.log(exposure)), rtol=1e-6)
    unpenalised = estimates(split(X, y, np.log(exposure)), NewtonRule("poisson"), ["x", "z"])
    assert np.all(np.abs(est[1:]) < np.abs(unpenalised[1:]))  # shrunk towards 0


def test_l2_keeps_an_absent_level_at_zero() -> None:
    X = np.column_stack([features(), np.zeros(600)])
    y = np.random.default_rng(6).poisson(1.0, 600).astype(float)
    est = estimates(split(X, y), NewtonRule("poisson", l2=0.5), ["x", "z", "region[T.west]"])
    assert est[3] == 0.0
    np.testing.assert_allclose(est[:3], penalised_optimum(X[:, :2], y, "poisson", 0.5), rtol=1e-6)
