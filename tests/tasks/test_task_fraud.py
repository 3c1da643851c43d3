"""Fraud: learning from ~0.5% positives, deterministically."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from fedx.tasks import TrainOptions, get_arrays, get_task


def test_mlp_with_auto_pos_weight_finds_rare_fraud(synth: SimpleNamespace) -> None:
    task = get_task("fraud")
    data = synth.binary_data(40000, 8, rate=0.005, seed=21)
    train, test_a, test_b = synth.split(data, [20000, 15000, 5000])
    model = task.build_model(8, {"kind": "mlp", "hidden": [32, 16]}, seed=0)
    task.train(model, train, TrainOptions(epochs=4, lr=0.01, pos_weight="auto"))
    exact = [task.metrics(t, task.predict(model, t)) for t in (test_a, test_b)]
    for metrics in exact:
        assert metrics["base_rate"] < 0.01
        assert metrics["auprc"] > 30 * metrics["base_rate"]  # the base rate is the AUPRC of a random score
        assert metrics["roc_auc"] > 0.95 and metrics["recall_at_1pct_fpr"] > 0.5
    stats = synth.sum_stats([task.eval_stats(t, task.predict(model, t)) for t in (test_a, test_b)])
    combined = task.metrics_from_stats(stats)
    assert combined["n"] == 20000
    assert min(m["auprc"] for m in exact) - 1e-3 <= combined["auprc"] <= max(m["auprc"] for m in exact) + 0.1


def test_training_is_deterministic_for_a_seed(synth: SimpleNamespace) -> None:
    task = get_task("fraud")
    data = synth.binary_data(1500, 6, rate=0.05, seed=5)

    def run(seed: int) -> list[np.ndarray]:
        model = task.build_model(6, {"kind": "mlp", "hidden": [16, 8], "dropout": 0.2}, seed=7)
        task.train(model, data, TrainOptions(epochs=2, batch_size=64, seed=seed))
        return get_arrays(model)

    torch.manual_seed(123)  # the global RNG must not matter
    first = run(1)
    torch.manual_seed(456)
    again, other = run(1), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
