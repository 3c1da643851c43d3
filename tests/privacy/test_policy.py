"""The data owners' policy: validation, suppression, local refusal, and the noise calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedx.config import StatsConfig
from fedx.errors import ConfigError, PolicyError
from fedx.privacy.policy import Policy, gaussian_sigma


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_cohort": 0}, r"policy\.min_cohort: expected an integer >= 1, got 0"),
    ({"local_min_cohort": 2.5}, r"policy\.local_min_cohort: expected an integer >= 1"),
    ({"noise": "uniform"}, r"policy\.noise: expected one of none, laplace, gaussian"),
    ({"noise": "laplace"}, r"policy\.epsilon: noise 'laplace' needs a finite epsilon > 0"),
    ({"noise": "gaussian", "epsilon": 1.0, "delta": 1.0}, r"policy\.delta: expected a number in \(0, 1\)"),
])
def test_invalid_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy(**kwargs)


def test_from_config_and_suppression() -> None:
    policy = Policy.from_config(StatsConfig(min_cohort=5, local_min_cohort=2, noise="laplace", epsilon=0.5))
    assert (policy.min_cohort, policy.local_min_cohort, policy.noise, policy.epsilon) == (5, 2, "laplace", 0.5)
    assert [policy.suppresses(n) for n in (0, 1, 4, 5, 100)] == [False, True, True, False, False]
    assert Policy.from_config(StatsConfig(local_min_cohort=4), local_min_cohort=2).local_min_cohort == 4


def test_local_refusal_names_the_cell_but_not_its_count() -> None:
    policy = Policy(local_min_cohort=5)
    policy.check_local([("a", 0.0), ("b", 5.0), ("c", 12.0)], "bank")
    with pytest.raises(PolicyError) as err:
        policy.check_local([("a", 0.0), ("b", 3.0), ("c", 1.0)], "bank")
    assert str(err.value) == ("bank refuses the query: cell b (and 1 more cells) would single out fewer than its "
                              "local minimum of 5 records")
    assert "3" not in str(err.value)


def test_analytic_gaussian_sigma_meets_delta_and_beats_the_classic_bound() -> None:
    for eps, delta in ((0.1, 1e-5), (0.5, 1e-6), (1.0, 1e-5), (4.0, 1e-8)):
        s = gaussian_sigma(eps, delta)
        achieved = stats.norm.cdf(1 / (2 * s) - eps * s) - math.exp(eps) * stats.norm.cdf(-1 / (2 * s) - eps * s)
        assert achieved == pytest.approx(delta, rel=1e-6)
        if eps < 1:
            assert s < math.sqrt(2 * math.log(1.25 / delta)) / eps
    assert gaussian_sigma(1.0, 1e-5) == pytest.approx(3.73, abs=0.01)  # Balle and Wang (2018), Fig. 2


@pytest.mark.parametrize(("noise", "want_std"), [("laplace", math.sqrt(2) * 3.0 / 0.7),
                                                 ("gaussian", 3.0 * gaussian_sigma(0.7, 1e-6))])
def test_noise_has_the_calibrated_spread_over_many_seeds(noise: str, want_std: float) -> None:
    policy = Policy(noise=noise, epsilon=0.7)  # type: ignore[arg-type]
    draws = np.concatenate([policy.sample(np.random.default_rng(seed), 3.0, 10) for seed in range(3000)])
    assert np.std(draws) == pytest.approx(want_std, rel=0.03)
    assert abs(np.mean(draws)) < 4 * want_std / math.sqrt(draws.size)
    again = policy.sample(np.random.default_rng(11), 3.0, 10)
    assert np.array_equal(again, policy.sample(np.random.default_rng(11), 3.0, 10))  # a seed fixes the noise
    shape = stats.kstest(draws / want_std, "laplace", args=(0, 1 / math.sqrt(2))) if noise == "laplace" else \
        stats.kstest(draws / want_std, "norm")
    assert shape.pvalue > 1e-3


def test_describe_states_the_parameters() -> None:
    assert Policy().describe() == {"min_cohort": 1, "local_min_cohort": 1, "noise": "none"}
    d = Policy(noise="gaussian", epsilon=1.0, delta=1e-5).describe()
    assert d["epsilon"] == 1.0 and d["delta"] == 1e-5 and d["neighbouring"] == "add or remove one record"
    assert "Balle and Wang" in d["calibration"]
    assert Policy(noise="laplace", epsilon=2.0).scale(4.0) == 2.0 and Policy().scale(4.0) == 0.0
