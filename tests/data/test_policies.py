"""The policy generator against its declared truth, checked with statsmodels GLMs fitted independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import patsy
import pytest
import statsmodels.api as sm

from fedx.data.synthetic import (
    DEFAULT_INSURERS,
    GAMMA_SHAPE,
    POLICY_FEATURES,
    POLICY_LEVELS,
    TRUE_FREQUENCY_COEFFICIENTS,
    TRUE_SEVERITY_COEFFICIENTS,
    InsurerProfile,
    generate_policies,
)
from fedx.errors import ConfigError

RHS = " + ".join(name if kind == "numeric" else f"C({name}, Treatment('{POLICY_LEVELS[name][0]}'))"
                 for name, kind in POLICY_FEATURES.items())


@pytest.fixture(scope="module")
def policies() -> pd.DataFrame:
    return generate_policies(seed=7)


@pytest.fixture(scope="module")
def design(policies: pd.DataFrame) -> pd.DataFrame:
    """The treatment-coded design matrix, built by patsy (independently of fedx)."""
    return patsy.dmatrix(RHS, policies, return_type="dataframe")


def _statsmodels_name(name: str) -> str:
    """Our coefficient name as statsmodels spells it for the formula above."""
    if name == "intercept":
        return "Intercept"
    if "[T." in name:
        factor, level = name.split("[T.")
        return f"C({factor}, Treatment('{POLICY_LEVELS[factor][0]}'))[T.{level}"
    return name


def _within_4_se(fit: object, truth: dict[str, float]) -> None:
    params, se = fit.params, fit.bse  # type: ignore[attr-defined]
    assert len(params) == len(truth)
    for name, value in truth.items():
        key = _statsmodels_name(name)
        assert abs(params[key] - value) < 4 * se[key], f"{name}: estimate {params[key]:.4f} +- {se[key]:.4f}, truth {value}"


def test_columns_sizes_and_determinism(policies: pd.DataFrame) -> None:
    assert len(policies) == sum(p.n_policies for p in DEFAULT_INSURERS) == 100_000
    assert list(policies["insurer"].value_counts().sort_index()) == [p.n_policies for p in DEFAULT_INSURERS]
    assert policies["policy_id"].is_unique
    assert ((policies["exposure"] > 0) & (policies["exposure"] <= 1)).all()
    for name, levels in POLICY_LEVELS.items():
        assert set(policies[name]) == set(levels) and list(levels) == sorted(levels)
    claimed = policies["claim_count"] > 0
    assert (policies.loc[~claimed, "claim_amount"] == 0).all() and policies.loc[~claimed, "avg_severity"].isna().all()
    np.testing.assert_allclose(policies.loc[claimed, "avg_severity"] * policies.loc[claimed, "claim_count"],
                               policies.loc[claimed, "claim_amount"])
    small = generate_policies(sizes=[500, 400, 300, 200, 100], seed=1)
    pd.testing.assert_frame_equal(small, generate_policies(sizes=[500, 400, 300, 200, 100], seed=1))
    assert not small["claim_count"].equals(generate_policies(sizes=[500, 400, 300, 200, 100], seed=2)["claim_count"])


def test_portfolios_differ_by_insurer(policies: pd.DataFrame) -> None:
    by = policies.groupby("insurer")
    age = by["driver_age"].mean()
    assert age["insurer_b"] < 35 and age["insurer_c"] > 50
    capital = by["region"].apply(lambda s: (s == "capital").mean())
    assert capital["insurer_b"] > 0.6 and capital["insurer_c"] < 0.1
    electric = by["fuel"].apply(lambda s: (s == "electric").mean())
    assert electric["insurer_d"] > 0.4


def test_poisson_glm_recovers_the_true_frequency_coefficients(policies: pd.DataFrame, design: pd.DataFrame) -> None:
    fit = sm.GLM(policies["claim_count"], design, family=sm.families.Poisson(),
                 offset=np.log(policies["exposure"])).fit()
    _within_4_se(fit, TRUE_FREQUENCY_COEFFICIENTS)


def test_gamma_glm_recovers_the_true_severity_coefficients_and_shape(policies: pd.DataFrame,
                                                                     design: pd.DataFrame) -> None:
    claimed = (policies["claim_count"] > 0).to_numpy()
    claims = policies[claimed]
    fit = sm.GLM(claims["avg_severity"], design[claimed], family=sm.families.Gamma(sm.families.links.Log()),
                 var_weights=claims["claim_count"]).fit()
    _within_4_se(fit, TRUE_SEVERITY_COEFFICIENTS)
    assert 1.0 / fit.scale == pytest.approx(GAMMA_SHAPE, rel=0.1)  # Gamma dispersion is 1 / shape


def test_realised_claim_frequency_matches_the_declared_rate(policies: pd.DataFrame, design: pd.DataFrame) -> None:
    beta = np.array([TRUE_FREQUENCY_COEFFICIENTS[_our_name(c)] for c in design.columns])
    expected = policies["exposure"] * np.exp(design.to_numpy() @ beta)
    for name, rows in policies.groupby("insurer"):
        mu = expected[rows.index].sum()
        assert abs(rows["claim_count"].sum() - mu) < 4 * np.sqrt(mu), name
    frequency = policies["claim_count"].sum() / policies["exposure"].sum()
    assert 0.05 < frequency < 0.2


def _our_name(statsmodels_name: str) -> str:
    for name in TRUE_FREQUENCY_COEFFICIENTS:
        if _statsmodels_name(name) == statsmodels_name:
            return name
    raise KeyError(statsmodels_name)


def test_bad_profiles_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="region_mix"):
        InsurerProfile("x", 100, region_mix=(1.0, 1.0))
    with pytest.raises(ConfigError, match="n_policies"):
        InsurerProfile("x", 0)
    with pytest.raises(ConfigError, match="sizes"):
        generate_policies(sizes=[10, 10])
    with pytest.raises(ConfigError, match="distinct"):
        generate_policies(insurers=[DEFAULT_INSURERS[0], DEFAULT_INSURERS[0]])
