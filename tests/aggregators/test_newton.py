"""The federated Newton GLM against statsmodels' GLM on the pooled rows (an independent implementation).

Each test splits the rows into institutions of very different sizes, sums their statistics vectors in
plaintext, iterates NewtonRule.apply to convergence, and compares the report with statsmodels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.datasets import randhie

from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import GLMData, NewtonRule, newton_fit

SHARES = (0.55, 0.3, 0.1, 0.05)
NAMES = ["age", "density", "region[T.north]", "region[T.south]"]
LOG = sm.families.links.Log()


def design(n: int, seed: int) -> np.ndarray:
    """Two numeric columns and a three-level categorical in treatment coding (reference: east)."""
    rng = np.random.default_rng(seed)
    region = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return np.column_stack([rng.uniform(-1, 1, n), rng.normal(size=n), region == 1, region == 2]).astype(float)


def split(X: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, weight: np.ndarray | None = None,
          shares: Sequence[float] = SHARES) -> list[GLMData]:
    """Consecutive blocks of rows, one per institution."""
    cuts = np.cumsum([round(s * len(y)) for s in shares])[:-1]
    return [GLMData(X[i], y[i], None if offset is None else offset[i], None if weight is None else weight[i])
            for i in np.split(np.arange(len(y)), cuts)]


def fit(parts: list[GLMData], rule: NewtonRule, names: Sequence[str] = NAMES) -> dict:
    result = newton_fit(parts, rule)
    return GLMResults.from_newton(result.total, result.state, rule, names).to_dict()


def assert_matches(report: dict, res, rtol: float, aic: bool = True) -> None:
    """Coefficients, standard errors, deviance, null deviance, dispersion and AIC within ``rtol``."""
    est = [c["estimate"] for c in report["coefficients"]]
    se = [c["std_error"] for c in report["coefficients"]]
    np.testing.assert_allclose(est, res.params, rtol=rtol)
    np.testing.assert_allclose(se, res.bse, rtol=rtol)
    np.testing.assert_allclose(report["deviance"], res.deviance, rtol=rtol)
    np.testing.assert_allclose(report["null_deviance"], res.null_deviance, rtol=rtol)
    np.testing.assert_allclose(report["dispersion"], res.scale, rtol=rtol)
    np.testing.assert_allclose(report["d2"], 1 - res.deviance / res.null_deviance, rtol=rtol)
    if aic:
        np.testing.assert_allclose(report["aic"], res.aic, rtol=rtol)
        np.testing.assert_allclose(report["loglike"], res.llf, rtol=rtol)
    np.testing.assert_allclose([c["p_value"] for c in report["coefficients"]], res.pvalues, rtol=1e-4, atol=1e-12)


def poisson_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = design(n, seed)
    rng = np.random.default_rng(seed + 1)
    exposure = rng.uniform(0.05, 1.0, n)
    y = rng.poisson(exposure * np.exp(-1.5 + X @ [0.4, 0.2, 0.3, -0.4])).astype(float)
    return X, y, np.log(exposure)


def gamma_data(n: int = 3000, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average claim amounts over 1-4 claims (shape 2 per claim), and the claim counts as weights."""
    X = design(n, seed)
    rng = np.random.default_rng(seed + 1)
    counts = rng.integers(1, 5, n).astype(float)
    mu = np.exp(7.0 + X @ [0.3, -0.2, 0.25, 0.5])
    y = rng.gamma(2.0 * counts, mu / (2.0 * counts))
    return X, y, counts


def binomial_data(n: int = 4000, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    X = design(n, seed)
    rng = np.random.default_rng(seed + 1)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.8 + X @ [1.0, -0.5, 0.6, -0.7])))).astype(float)
    return X, y


def tweedie_data(n: int = 4000, seed: int = 6) -> np.ndarray:
    X = design(n, seed)
    rng = np.random.default_rng(seed + 1)
    mu = np.exp(4.0 + X @ [0.3, -0.2, 0.25, 0.5])
    claims = rng.poisson(0.4, n)
    y = np.array([rng.gamma(2.0, m / 0.8, c).sum() for m, c in zip(mu, claims)])
    return X, y


def test_poisson_with_offset_equals_statsmodels() -> None:
    X, y, offset = poisson_data()
    report = fit(split(X, y, offset), NewtonRule("poisson"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset).fit(tol=1e-13)
    assert_matches(report, res, 1e-6)
    assert report["converged"] and report["iterations"] <= 10
    assert report["family"] == "poisson" and report["link"] == "log" and report["dispersion"] == 1.0


def test_gamma_log_link_with_var_weights_equals_statsmodels() -> None:
    X, y, counts = gamma_data()
    report = fit(split(X, y, weight=counts), NewtonRule("gamma"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Gamma(link=LOG), var_weights=counts).fit(tol=1e-13)
    assert_matches(report, res, 1e-6)
    assert report["converged"] and report["iterations"] <= 10
    assert report["dispersion"] != 1.0 and report["df_resid"] == len(y) - 5


def test_binomial_equals_statsmodels() -> None:
    X, y = binomial_data()
    report = fit(split(X, y), NewtonRule("binomial"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-13)
    assert_matches(report, res, 1e-6)
    assert report["converged"] and report["iterations"] <= 10 and report["link"] == "logit"


def test_binomial_with_offset_refines_the_null_model() -> None:
    # With an offset the intercept-only logistic fit has no closed form: apply refines it round by round.
    X, y = binomial_data(seed=8)
    offset = np.random.default_rng(9).normal(0.0, 0.7, len(y))
    report = fit(split(X, y, offset), NewtonRule("binomial"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(), offset=offset).fit(tol=1e-13)
    assert_matches(report, res, 1e-6)


@pytest.mark.parametrize("power", [1.3, 1.5, 1.8])
def test_tweedie_equals_statsmodels(power: float) -> None:
    X, y = tweedie_data()
    report = fit(split(X, y), NewtonRule("tweedie", tweedie_power=power))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Tweedie(var_power=power, link=LOG)).fit(tol=1e-13)
    # statsmodels 0.15 evaluates the Tweedie likelihood by series, so its AIC is defined and compared too.
    assert_matches(report, res, 1e-6)
    assert report["tweedie_power"] == power and report["converged"] and report["iterations"] <= 10


def test_rand_health_insurance_experiment_poisson() -> None:
    data = randhie.load_pandas().data
    y = data["mdvis"].to_numpy(float)
    X = data.drop(columns="mdvis").to_numpy(float)
    names = list(data.columns.drop("mdvis"))
    order = np.random.default_rng(3).permutation(len(y))
    parts = split(X[order], y[order], shares=(0.5, 0.25, 0.15, 0.07, 0.03))
    report = fit(parts, NewtonRule("poisson", feature_names=names), names)
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit(tol=1e-13)
    assert_matches(report, res, 1e-6)
    assert [c["name"] for c in report["coefficients"]] == ["Intercept", *names]


def test_split_does_not_matter() -> None:
    # One institution (the centralized fit) and five give the same fit.
    X, y, offset = poisson_data(seed=11)
    pooled = fit([GLMData(X, y, offset)], NewtonRule("poisson"))
    federated = fit(split(X, y, offset), NewtonRule("poisson"))
    np.testing.assert_allclose([c["estimate"] for c in federated["coefficients"]],
                               [c["estimate"] for c in pooled["coefficients"]], rtol=1e-10)


def test_results_object_matches_statsmodels_at_any_level() -> None:
    X, y, offset = poisson_data()
    rule = NewtonRule("poisson")
    result = newton_fit(split(X, y, offset), rule)
    res = GLMResults.from_newton(result.total, result.state, rule, NAMES, {"region": "east"})
    sm_res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset).fit()
    np.testing.assert_allclose(res.params.to_numpy(), sm_res.params, rtol=1e-8)
    np.testing.assert_allclose(res.bse.to_numpy(), sm_res.bse, rtol=1e-6)
    np.testing.assert_allclose(res.pvalues.to_numpy(), sm_res.pvalues, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(res.cov_params().to_numpy(), sm_res.cov_params(), rtol=1e-6, atol=1e-12)
    for alpha in (0.05, 0.10, 0.01):
        np.testing.assert_allclose(res.conf_int(alpha).to_numpy(), sm_res.conf_int(alpha), rtol=1e-6)
    assert res.aic == pytest.approx(sm_res.aic, rel=1e-8)
    assert list(res.params.index) == ["Intercept", *NAMES]
    with pytest.raises(ValueError, match="alpha"):
        res.conf_int(1.5)

    table = res.relativities(0.10)
    assert [(r["feature"], r["level"], r["reference"]) for r in table] == [
        ("age", None, False), ("density", None, False),
        ("region", "east", True), ("region", "north", False), ("region", "south", False)]
    north = table[3]
    assert table[2]["relativity"] == 1.0 and table[2]["ci_low"] is None
    lo, hi = np.exp(sm_res.conf_int(0.10)[3])
    assert (north["ci_low"], north["ci_high"]) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))
    assert res.relativities(0.05)[3]["ci_high"] > north["ci_high"]   # a wider interval at 95%

    doc = res.to_dict()
    assert doc["relativities"] == res.relativities(0.05)
    coefs = {c["name"]: c for c in doc["coefficients"]}
    assert coefs["age"]["relativity"] == pytest.approx(np.exp(coefs["age"]["estimate"]))
    again = GLMResults.from_dict(doc)
    np.testing.assert_array_equal(again.cov, res.cov)
    assert again.summary() == res.summary()
    text = res.summary(0.10)
    assert "[90%" in text and "region[T.north]" in text and "[95%" in res.summary()
