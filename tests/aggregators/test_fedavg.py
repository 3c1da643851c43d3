"""FedAvg's weighted mean against an independent computation, and the FedAvg rule's step."""

from __future__ import annotations

import numpy as np
import pytest

from fedx.aggregators import FedAvgRule, ModelState, weighted_mean
from fedx.errors import AggregationError


def test_weighted_mean_matches_independent_mean_with_very_unequal_weights() -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (), (2, 2, 2)]
    weights = [1.0, 1e6, 37.0, 0.5]
    updates = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in weights]
    got = weighted_mean(updates, weights)
    for j, shape in enumerate(shapes):
        stacked = np.stack([np.asarray(u[j], dtype=np.float64) for u in updates])
        expected = np.tensordot(np.asarray(weights) / np.sum(weights), stacked, axes=1)
        assert got[j].shape == shape
        np.testing.assert_allclose(got[j], expected, rtol=1e-6, atol=1e-7)
    # The heavy client dominates: the mean is within 1e-4 of its update.
    np.testing.assert_allclose(got[0], updates[1][0], atol=1e-4)


def test_weighted_mean_rejects_bad_input() -> None:
    a = [np.zeros(3, np.float32)]
    with pytest.raises(AggregationError, match="no updates"):
        weighted_mean([], [])
    with pytest.raises(AggregationError, match="2 updates but 1 weights"):
        weighted_mean([a, a], [1.0])
    with pytest.raises(AggregationError, match="not all zero"):
        weighted_mean([a, a], [0.0, 0.0])
    with pytest.raises(AggregationError, match="update 1 does not have the shapes"):
        weighted_mean([a, [np.zeros(4, np.float32)]], [1.0, 1.0])


def test_fedavg_rule_adds_the_mean_delta_and_digest_tracks_state() -> None:
    params = [np.ones((2, 2), np.float32), np.zeros(3, np.float32)]
    state = ModelState(params, {}, 0)
    delta = [np.full((2, 2), 0.5, np.float32), np.arange(3, dtype=np.float32)]
    new = FedAvgRule().apply(state, delta)
    assert new.round == 1
    np.testing.assert_array_equal(new.params[0], np.full((2, 2), 1.5, np.float32))
    np.testing.assert_array_equal(new.params[1], np.arange(3, dtype=np.float32))
    assert new.digest() != state.digest()
    assert new.digest() == FedAvgRule().apply(state.copy(), delta).digest()
    with pytest.raises(AggregationError, match="aggregate has shapes"):
        FedAvgRule().apply(state, [np.zeros(3, np.float32)])
