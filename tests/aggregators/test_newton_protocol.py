"""The Newton GLM protocol: additive statistics, the plain-sum combine, deterministic and idempotent steps,
step halving, refusals of bad rounds and bad data, and the torch models' parameter layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_newton import gamma_data, poisson_data, split, tweedie_data

from fedx.aggregators.base import ModelState
from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import (
    GLMData,
    NewtonRule,
    _cholesky,
    _cholesky_solve,
    beta_to_params,
    local_stats,
    newton_fit,
    params_to_beta,
    round_inputs,
    stats_layout,
)
from fedx.errors import AggregationError, ConfigError, DataError
from fedx.tasks import get_arrays, get_task, set_arrays

BETA = np.array([-1.2, 0.3, 0.1, 0.2, -0.3])


def poisson_parts() -> list[GLMData]:
    X, y, offset = poisson_data(n=1500)
    return split(X, y, offset)


def total_at(parts: list[GLMData], state: ModelState, family: str = "poisson") -> np.ndarray:
    return sum(local_stats(p.X, p.y, state.params, family, p.offset, p.weight, **round_inputs(state)) for p in parts)


def run(parts: list[GLMData], rule: NewtonRule, rounds: int) -> list[ModelState]:
    states = [ModelState(beta_to_params(np.zeros(parts[0].X.shape[1] + 1)))]
    for _ in range(rounds):
        states.append(rule.apply(states[-1], [total_at(parts, states[-1], rule.family.name)]))
    return states


@pytest.mark.parametrize("family", ["poisson", "gamma", "tweedie", "binomial"])
def test_statistics_of_institutions_add_up_to_those_of_the_pooled_rows(family: str) -> None:
    X, y, offset = poisson_data(n=900)
    weight = None
    if family == "gamma":
        X, y, weight = gamma_data(n=900)
    elif family == "tweedie":
        X, y = tweedie_data(n=900)
    elif family == "binomial":
        y = (y > 0).astype(float)
    beta = BETA + (7.0 if family in ("gamma", "tweedie") else 0.0) * np.eye(5)[0]
    kwargs = {"null_intercept": float(beta[0]) + 0.1, "scale": 1.7}
    parts = split(X, y, offset, weight)
    pooled = local_stats(X, y, beta_to_params(beta), family, offset, weight, **kwargs)
    summed = sum(local_stats(p.X, p.y, beta_to_params(beta), family, p.offset, p.weight, **kwargs) for p in parts)
    np.testing.assert_allclose(summed, pooled, rtol=1e-11, atol=1e-9)
    layout = stats_layout(4, family)
    assert pooled.shape == (next(reversed(layout.values())).stop,)
    assert pooled[layout["count"]][0] == 900 and pooled[layout["xtwx"]].size == 15
    assert ("hessian" in layout) == (family in ("gamma", "tweedie"))
    assert ("unseparated" in layout) == (family == "binomial")


def test_layout_is_contiguous() -> None:
    layout = stats_layout(3, "binomial")
    stops = [0] + [s.stop for s in layout.values()]
    assert [s.start for s in layout.values()] == stops[:-1]
    assert list(layout)[:3] == ["xtwx", "score", "inputs"]
    with pytest.raises(ConfigError, match="family"):
        stats_layout(3, "gaussian")


def test_combine_is_the_plain_sum() -> None:
    rule = NewtonRule("poisson")
    vecs = [np.arange(5.0), np.ones(5), np.full(5, 2.0)]
    (total,) = rule.combine([[v] for v in vecs], [10, 1, 3])
    np.testing.assert_array_equal(total, np.arange(5.0) + 3.0)
    assert rule.name == "newton" and rule.he_kind == "sum"


def test_apply_is_deterministic_and_keeps_the_params_layout() -> None:
    parts = poisson_parts()
    rule = NewtonRule("poisson")
    states = run(parts, rule, 3)
    total = total_at(parts, states[-1])
    a, b = rule.apply(states[-1].copy(), [total.copy()]), rule.apply(states[-1].copy(), [total.copy()])
    assert a.digest() == b.digest()
    for x, y in zip(a.params, b.params):
        assert x.tobytes() == y.tobytes()
    assert [p.shape for p in a.params] == [(1, 4), (1,)] and all(p.dtype == np.float64 for p in a.params)
    assert a.round == states[-1].round + 1


def test_round_zero_starts_at_the_intercept_only_fit() -> None:
    parts = poisson_parts()
    state = ModelState([np.zeros((1, 4), np.float32), np.zeros(1, np.float32)])  # what get_arrays gives
    assert round_inputs(state) == {"null_intercept": None, "scale": 1.0}
    started = NewtonRule("poisson").apply(state, [total_at(parts, state)])
    y = np.concatenate([p.y for p in parts])
    exposure = np.exp(np.concatenate([p.offset for p in parts]))
    beta = params_to_beta(started.params)
    assert beta[0] == pytest.approx(np.log(y.sum() / exposure.sum()), rel=1e-12) and not beta[1:].any()
    assert round_inputs(started) == {"null_intercept": beta[0], "scale": 1.0}


def test_converged_rounds_are_no_ops() -> None:
    parts = poisson_parts()
    rule = NewtonRule("poisson")
    states = run(parts, rule, 12)
    first = next(i for i, s in enumerate(states) if NewtonRule.converged(s))
    assert first <= 8
    assert all(NewtonRule.converged(s) for s in states[first:])
    for s in states[first + 1:]:
        assert [p.tobytes() for p in s.params] == [p.tobytes() for p in states[first].params]
    assert states[first + 2].digest() != states[first + 1].digest()  # the round differs
    assert ModelState(states[first + 2].params, states[first + 2].opt, 0).digest() == \
        ModelState(states[first + 1].params, states[first + 1].opt, 0).digest()


def test_report_ready_takes_one_more_round_for_gamma() -> None:
    X, y, counts = gamma_data(n=800)
    parts = split(X, y, weight=counts)
    rule = NewtonRule("gamma")
    states = run(parts, rule, 12)
    first = next(i for i, s in enumerate(states) if NewtonRule.converged(s))
    assert not NewtonRule.report_ready(states[first]) and NewtonRule.report_ready(states[first + 1])
    names = ["a", "b", "c", "d"]
    early = GLMResults.from_newton(total_at(parts, states[first], "gamma"), states[first], rule, names).to_dict()
    ready = GLMResults.from_newton(total_at(parts, states[first + 1], "gamma"), states[first + 1], rule, names).to_dict()
    assert early["aic"] is None and early["loglike"] is None and ready["aic"] is not None
    assert early["coefficients"] == ready["coefficients"]


def test_the_deviance_going_up_halves_the_step() -> None:
    parts = poisson_parts()
    rule = NewtonRule("poisson")
    state = run(parts, rule, 2)[-1]  # one Newton step taken: the state has an anchor
    anchor = state.opt["anchor"][0]
    overshoot = anchor + 8.0 * (params_to_beta(state.params) - anchor)
    bad = ModelState(beta_to_params(overshoot), state.opt, state.round)
    halved = rule.apply(bad, [total_at(parts, bad)])
    np.testing.assert_array_equal(params_to_beta(halved.params), anchor + (overshoot - anchor) * 0.5)
    assert halved.opt["halvings"][0][0] == 1.0
    np.testing.assert_array_equal(halved.opt["anchor"][0], anchor)
    rounds = 0
    while halved.opt["halvings"][0][0] > 0:  # halves until the deviance goes down, then steps again
        halved = rule.apply(halved, [total_at(parts, halved)])
        rounds += 1
    assert rounds <= 4 and halved.opt["objective"][0][0] < state.opt["objective"][0][0]


def test_statistics_at_other_inputs_or_rows_are_refused() -> None:
    parts = poisson_parts()
    rule = NewtonRule("poisson")
    state = run(parts, rule, 2)[-1]
    stale = ModelState(beta_to_params(params_to_beta(state.params) + 0.01), state.opt, state.round)
    with pytest.raises(AggregationError, match="other coefficients"):
        rule.apply(state, [total_at(parts, stale)])
    with pytest.raises(AggregationError, match="every institution"):
        rule.apply(state, [total_at(parts[:-1], state)])
    total = total_at(parts, state)
    with pytest.raises(AggregationError, match="expects"):
        rule.apply(state, [total[:-1]])
    total[3] = np.nan
    with pytest.raises(AggregationError, match="NaN"):
        rule.apply(state, [total])


def test_overflowing_coefficients_are_refused_at_the_institution() -> None:
    X, y, offset = poisson_data(n=100)
    with pytest.raises(AggregationError, match="overflow"):
        local_stats(X, y, beta_to_params(np.r_[800.0, np.zeros(4)]), "poisson", offset)


def test_bad_data_and_settings_are_refused() -> None:
    X, y, offset = poisson_data(n=50)
    params = beta_to_params(BETA)
    with pytest.raises(DataError, match="y: poisson"):
        local_stats(X, -y, params, "poisson")
    with pytest.raises(DataError, match="y: gamma"):
        local_stats(X, y, params, "gamma")
    with pytest.raises(DataError, match="y: binomial"):
        local_stats(X, y + 2, params, "binomial")
    with pytest.raises(DataError, match="weight"):
        local_stats(X, y, params, "poisson", weight=np.zeros(50))
    with pytest.raises(DataError, match="X: expected a 2-D array with 4 columns"):
        local_stats(X[:, :3], y, params, "poisson")
    with pytest.raises(DataError, match="offset: expected shape"):
        local_stats(X, y, params, "poisson", offset[:10])
    X[0, 0] = np.inf
    with pytest.raises(DataError, match="X: holds NaN"):
        local_stats(X, y, params, "poisson")
    with pytest.raises(AggregationError, match="shapes"):
        params_to_beta([np.zeros(4), np.zeros(1)])
    with pytest.raises(ConfigError, match="family"):
        NewtonRule("normal")
    with pytest.raises(ConfigError, match="federation.tweedie_power"):
        NewtonRule("tweedie", tweedie_power=2.0)
    with pytest.raises(ConfigError, match="federation.l2"):
        NewtonRule("poisson", l2=-1.0)


def test_deterministic_solver_matches_lapack() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 8))
    spd = a.T @ a
    d = np.sqrt(np.diag(spd))
    factor = _cholesky(spd / np.outer(d, d), str)
    b = rng.normal(size=8)
    np.testing.assert_allclose(_cholesky_solve(factor, b / d) / d, np.linalg.solve(spd, b), rtol=1e-10)
    np.testing.assert_allclose(_cholesky_solve(factor, np.eye(8)), np.linalg.inv(spd / np.outer(d, d)), rtol=1e-10)


def test_the_torch_glm_carries_the_fitted_coefficients() -> None:
    # The contract with fedx.tasks: params are the linear layer's [weight (1, p), bias (1,)], bias = intercept.
    X, y, offset = poisson_data(n=1500)
    task = get_task("claim_frequency")
    model = task.build_model(4, {"kind": "glm"}, seed=0)
    fit = newton_fit(split(X, y, offset), NewtonRule("poisson"))
    beta = params_to_beta(fit.state.params)
    assert [a.shape for a in get_arrays(model)] == [p.shape for p in fit.state.params]
    set_arrays(model, fit.state.params)
    with torch.no_grad():
        mean = model(torch.tensor(X, dtype=torch.float32), torch.tensor(offset, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(mean, np.exp(beta[0] + X @ beta[1:] + offset), rtol=1e-5)
    np.testing.assert_allclose(params_to_beta(get_arrays(model)), beta, rtol=1e-6)


def test_the_torch_logistic_model_carries_the_fitted_coefficients() -> None:
    X, y, _ = poisson_data(n=1500)
    y = (y > 0).astype(float)
    model = get_task("disease_risk").build_model(4, {"kind": "logistic"}, seed=0)
    fit = newton_fit(split(X, y), NewtonRule("binomial"))
    set_arrays(model, fit.state.params)
    beta = params_to_beta(fit.state.params)
    with torch.no_grad():
        logit = model(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(logit, beta[0] + X @ beta[1:], rtol=1e-5, atol=1e-5)
