"""The federated Newton GLM with its statistics summed under homomorphic encryption, against statsmodels.

Each institution encrypts its statistics vector (kind="sum"), the server adds the ciphertexts with the
public context only, and the institutions decrypt the sum and take the same deterministic step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import statsmodels.api as sm
from test_newton import (
    LOG,
    NAMES,
    assert_matches,
    binomial_data,
    gamma_data,
    poisson_data,
    split,
)

from fedx import he
from fedx.aggregators.base import ModelState
from fedx.aggregators.glm_results import GLMResults
from fedx.aggregators.newton import (
    GLMData,
    NewtonRule,
    local_stats,
    newton_fit,
    round_inputs,
)


@functools.cache
def keys(preset: str) -> he.KeySet:
    return he.keygen(preset)


def encrypted_sum(preset: str) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Encrypt each institution's vector, add the blobs on the server's public context, decrypt the sum."""
    ks = keys(preset)

    def total(vecs: list[np.ndarray]) -> np.ndarray:
        blobs = [he.encrypt(ks.secret, [v], kind="sum") for v in vecs]
        arrays, _ = he.decrypt(ks.secret, he.aggregate(ks.public, blobs))
        return np.asarray(arrays[0], dtype=np.float64)

    return total


def fit_encrypted(parts: list[GLMData], rule: NewtonRule, preset: str = "ckks") -> dict:
    result = newton_fit(parts, rule, sum_stats=encrypted_sum(preset))
    return GLMResults.from_newton(result.total, result.state, rule, NAMES).to_dict()


def test_poisson_with_offset_under_ckks() -> None:
    X, y, offset = poisson_data(n=2000)
    report = fit_encrypted(split(X, y, offset), NewtonRule("poisson"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset).fit(tol=1e-13)
    assert_matches(report, res, 1e-4)
    assert report["converged"]


def test_gamma_with_weights_under_ckks() -> None:
    X, y, counts = gamma_data(n=1500)
    report = fit_encrypted(split(X, y, weight=counts), NewtonRule("gamma"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Gamma(link=LOG), var_weights=counts).fit(tol=1e-13)
    assert_matches(report, res, 1e-4)


def test_binomial_under_ckks() -> None:
    X, y = binomial_data(n=2000)
    report = fit_encrypted(split(X, y), NewtonRule("binomial"))
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-13)
    assert_matches(report, res, 1e-4)


def test_poisson_under_bfv_compact() -> None:
    # The default preset: sums of floats in fixed point (2^-26 absolute per blob), also ample.
    X, y, offset = poisson_data(n=2000, seed=5)
    report = fit_encrypted(split(X, y, offset), NewtonRule("poisson"), preset="bfv-compact")
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), offset=offset).fit(tol=1e-13)
    assert_matches(report, res, 1e-4)


@pytest.mark.parametrize("preset", ["ckks", "bfv-compact"])
def test_every_institution_reaches_the_same_state(preset: str) -> None:
    # Each institution decrypts the same aggregate blob and runs apply itself: the states agree bit for bit.
    X, y, offset = poisson_data(n=1200)
    parts = split(X, y, offset, shares=(0.6, 0.3, 0.1))
    ks = keys(preset)
    rule = NewtonRule("poisson")
    states = [ModelState([np.zeros((1, 4)), np.zeros(1)]) for _ in parts]
    for _ in range(4):
        blobs = [he.encrypt(ks.secret, [local_stats(p.X, p.y, s.params, "poisson", p.offset, **round_inputs(s))],
                            kind="sum") for p, s in zip(parts, states)]
        aggregate = he.aggregate(ks.public, blobs)
        states = [rule.apply(s, [np.asarray(he.decrypt(ks.secret, aggregate)[0][0], np.float64)]) for s in states]
        assert len({s.digest() for s in states}) == 1
