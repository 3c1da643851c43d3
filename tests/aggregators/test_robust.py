"""Robust aggregators against Flower's strategies and scipy/numpy (independent implementations)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, MultiKrum
from scipy.stats import trim_mean as scipy_trim_mean

from fedx.aggregators import KrumRule, coordinate_median, krum_select, trimmed_mean, weighted_mean
from fedx.errors import AggregationError


@pytest.fixture(autouse=True)
def _message_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _replies(updates, weights):
    return [Message(RecordDict({"arrays": ArrayRecord({f"{i}": Array(a) for i, a in enumerate(u)}),
                                "metrics": MetricRecord({"num-examples": w})}), dst_node_id=1, message_type="train")
            for u, w in zip(updates, weights)]


def _updates(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)] for _ in range(n)]


def test_trimmed_mean_matches_scipy_and_flower() -> None:
    ups = _updates(9)
    got = trimmed_mean(ups, 0.2)
    flower, _ = FedTrimmedAvg(beta=0.2).aggregate_train(1, _replies(ups, [1] * 9))
    for j in range(2):
        np.testing.assert_allclose(got[j], scipy_trim_mean(np.stack([u[j] for u in ups]), 0.2, axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[j], flower[f"{j}"].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(AggregationError, match="beta must be in"):
        trimmed_mean(ups, 0.5)


def test_median_matches_numpy_and_flower() -> None:
    ups = _updates(6, seed=1)
    got = coordinate_median(ups)
    flower, _ = FedMedian().aggregate_train(1, _replies(ups, [1] * 6))
    for j in range(2):
        np.testing.assert_allclose(got[j], np.median(np.stack([u[j] for u in ups]), axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[j], flower[f"{j}"].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("select", [1, 3])
def test_krum_and_multi_krum_match_flower(select: int) -> None:
    ups = _updates(8, seed=2)
    ups[5] = [a * 50 for a in ups[5]]           # an attacker far from everyone
    weights = [10, 20, 30, 40, 50, 60, 70, 80]
    rule = KrumRule(byzantine=2, select=select)
    got = rule.combine(ups, weights)
    flower, _ = MultiKrum(num_malicious_nodes=2, num_nodes_to_select=select).aggregate_train(1, _replies(ups, weights))
    for j in range(2):
        np.testing.assert_allclose(got[j], flower[f"{j}"].numpy(), rtol=1e-5, atol=1e-6)
    assert 5 not in krum_select(ups, byzantine=2, select=select)


def test_robust_rules_resist_one_scaled_update_where_fedavg_breaks() -> None:
    rng = np.random.default_rng(4)
    honest = [[rng.normal(loc=1.0, scale=0.1, size=(50,)).astype(np.float32)] for _ in range(7)]
    attack = [[-100.0 * honest[0][0]]]
    ups = honest + attack
    w = [1.0] * 8
    truth = np.mean([u[0] for u in honest], axis=0)
    assert np.abs(weighted_mean(ups, w)[0] - truth).max() > 5
    for combined in (coordinate_median(ups), trimmed_mean(ups, 0.2), KrumRule(1, None).combine(ups, w)):
        assert np.abs(combined[0] - truth).max() < 0.25
