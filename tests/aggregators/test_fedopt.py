"""FedAdam, FedYogi and FedAvgM against Flower's own strategies (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvgM, FedYogi

from fedx.aggregators import FedAdamRule, FedAvgMRule, FedYogiRule, ModelState, weighted_mean


@pytest.fixture(autouse=True)
def _message_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flower stamps messages with the task that creates them; outside a run, give it one.
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _reply(arrays: list[np.ndarray], n: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({f"{i}": Array(a) for i, a in enumerate(arrays)}),
                          "metrics": MetricRecord({"num-examples": n})})
    return Message(content, dst_node_id=1, message_type="train")


def _flower_rounds(strategy, x0: list[np.ndarray], client_models_per_round, weights) -> list[np.ndarray]:
    x = x0
    for rnd, models in enumerate(client_models_per_round, start=1):
        # What each strategy's configure_train stores: FedOpt keeps numpy arrays, FedAvgM a record.
        record = ArrayRecord({f"{i}": Array(a) for i, a in enumerate(x)})
        strategy.current_arrays = record if isinstance(strategy, FedAvgM) else \
            {k: a.numpy() for k, a in record.items()}
        rec, _ = strategy.aggregate_train(rnd, [_reply(m, w) for m, w in zip(models, weights)])
        x = [rec[f"{i}"].numpy() for i in range(len(x0))]
    return x


def _fedx_rounds(rule, x0, client_models_per_round, weights) -> list[np.ndarray]:
    state = ModelState([a.copy() for a in x0], {}, 0)
    for models in client_models_per_round:
        deltas = [[m - p for m, p in zip(model, state.params)] for model in models]
        state = rule.apply(state, weighted_mean(deltas, weights))
    return state.params


@pytest.mark.parametrize("make_flower, make_fedx", [
    (lambda: FedAdam(eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3), lambda: FedAdamRule(0.05, 0.9, 0.99, 1e-3)),
    (lambda: FedYogi(eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3), lambda: FedYogiRule(0.05, 0.9, 0.99, 1e-3)),
    (lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9), lambda: FedAvgMRule(0.7, 0.9)),
])
def test_server_optimizers_match_flower(make_flower, make_fedx) -> None:
    rng = np.random.default_rng(3)
    x0 = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    weights = [10, 300, 45]
    # Clients return models near a drifting target, so that deltas change sign across rounds.
    rounds = []
    x = x0
    for r in range(6):
        models = [[(a + rng.normal(scale=0.2, size=a.shape)).astype(np.float32) for a in x] for _ in weights]
        rounds.append(models)
    # The client models depend on the current global model only through noise here, so both
    # implementations see identical inputs.
    got = _fedx_rounds(make_fedx(), x0, rounds, weights)
    want = _flower_rounds(make_flower(), x0, rounds, weights)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    assert not np.allclose(got[0], x0[0], atol=1e-3)  # the optimizer moved the model


def test_state_digest_changes_with_optimizer_state() -> None:
    x0 = [np.zeros(4, np.float32)]
    rule = FedAdamRule(0.1)
    s1 = rule.apply(ModelState(x0, {}, 0), [np.ones(4, np.float32)])
    assert set(s1.opt) == {"m", "v"}
    tampered = s1.copy()
    tampered.opt["v"][0][0] += 1e-12
    assert tampered.digest() != s1.digest()
