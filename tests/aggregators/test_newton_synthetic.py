"""The federated Newton GLM recovers known coefficients, and its Gamma weighting is the right one."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from test_newton import LOG, split

from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import GLMData, NewtonRule, newton_fit

TRUE = np.array([-2.0, 0.5, -0.3, 0.4, -0.6, 0.25])
NAMES = ["age", "bonus", "zone[T.b]", "zone[T.c]", "zone[T.d]"]


def portfolio(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two numeric columns and a four-level zone (reference a), with exposures in (0, 1]."""
    rng = np.random.default_rng(seed)
    zone = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    X = np.column_stack([rng.normal(size=n), rng.uniform(-1, 1, n), zone == 1, zone == 2, zone == 3]).astype(float)
    return X, rng.uniform(0.1, 1.0, n)


def fit(parts: list[GLMData], rule: NewtonRule) -> dict:
    result = newton_fit(parts, rule)
    return GLMResults.from_newton(result.total, result.state, rule, NAMES).to_dict()


def assert_within_4_se(report: dict, truth: np.ndarray) -> None:
    est = np.array([c["estimate"] for c in report["coefficients"]])
    se = np.array([c["std_error"] for c in report["coefficients"]])
    assert np.all(np.abs(est - truth) < 4 * se), (est - truth) / se


def test_poisson_frequency_recovers_the_true_coefficients() -> None:
    X, exposure = portfolio(20_000, seed=21)
    y = np.random.default_rng(22).poisson(exposure * np.exp(TRUE[0] + X @ TRUE[1:])).astype(float)
    report = fit(split(X, y, np.log(exposure), shares=(0.6, 0.25, 0.1, 0.05)), NewtonRule("poisson"))
    assert_within_4_se(report, TRUE)
    assert report["converged"] and report["iterations"] <= 10


def test_gamma_severity_recovers_the_true_coefficients() -> None:
    X, _ = portfolio(20_000, seed=23)
    rng = np.random.default_rng(24)
    counts = rng.integers(1, 4, len(X)).astype(float)
    beta = np.array([7.5, 0.2, -0.1, 0.3, 0.15, -0.4])
    mu = np.exp(beta[0] + X @ beta[1:])
    y = rng.gamma(1.5 * counts, mu / (1.5 * counts))  # the average of `counts` claims of shape 1.5
    report = fit(split(X, y, weight=counts, shares=(0.5, 0.3, 0.15, 0.05)), NewtonRule("gamma"))
    assert_within_4_se(report, beta)
    assert abs(report["dispersion"] - 1 / 1.5) < 0.05  # the dispersion of one claim


def test_average_severity_weighted_by_claim_counts_equals_the_claim_level_fit() -> None:
    # Rows hold the average of n_i claims and weight n_i. As var_weights (what local_stats' weight is),
    # this has the claim-level fit's coefficients and, up to sampling, its standard errors; statsmodels'
    # freq_weights would count sum(n_i) rows and understate the dispersion and standard errors.
    X, _ = portfolio(8_000, seed=25)
    rng = np.random.default_rng(26)
    counts = rng.integers(1, 6, len(X))
    beta = np.array([7.0, 0.3, -0.2, 0.2, 0.1, -0.3])
    mu = np.exp(beta[0] + X @ beta[1:])
    claims = rng.gamma(2.0, np.repeat(mu, counts) / 2.0)
    averages = np.add.reduceat(claims, np.r_[0, np.cumsum(counts)[:-1]]) / counts
    report = fit(split(X, averages, weight=counts.astype(float)), NewtonRule("gamma"))

    X_claims = sm.add_constant(np.repeat(X, counts, axis=0))
    claim_level = sm.GLM(claims, X_claims, family=sm.families.Gamma(link=LOG)).fit(tol=1e-10)
    freq = sm.GLM(averages, sm.add_constant(X), family=sm.families.Gamma(link=LOG),
                  freq_weights=counts.astype(float)).fit(tol=1e-10)
    est = np.array([c["estimate"] for c in report["coefficients"]])
    se = np.array([c["std_error"] for c in report["coefficients"]])
    np.testing.assert_allclose(est, claim_level.params, rtol=1e-6)
    np.testing.assert_allclose(se, claim_level.bse, rtol=0.1)
    assert np.all(freq.bse < 0.8 * claim_level.bse)
