"""The model, the data and the local training: numpy logistic regression on synthetic data.

Each partition draws its own rows from one logistic model (its size and feature shift differ), so the
federated model can be checked against the truth that generated the data.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context

N_FEATURES = 8
TRUE_COEF = np.linspace(-0.8, 0.8, N_FEATURES)
TRUE_INTERCEPT = -0.3

Model = dict[str, np.ndarray]


def key_folder(context: Context) -> str:
    """The HE key folder: the SuperNode's own (node config) when given, else the run config's."""
    return str(context.node_config.get("he-keys") or context.run_config["he-keys"])


def init_model() -> Model:
    """The initial model (public: all zeros)."""
    return {"coef": np.zeros(N_FEATURES), "intercept": np.zeros(1)}


def to_record(model: Model) -> ArrayRecord:
    """A model as an ArrayRecord, by name."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in model.items()})


def from_record(record: ArrayRecord) -> Model:
    """An ArrayRecord as a model."""
    return {k: a.numpy() for k, a in record.items()}


def load_data(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Partition ``partition_id``'s train and test rows: 200 + 300 * id rows, 25% held out."""
    rng = np.random.default_rng(1000 + partition_id)
    n = 200 + 300 * partition_id
    x = rng.normal(0.3 * (partition_id - num_partitions / 2), 1.0, (n, N_FEATURES))
    p = 1.0 / (1.0 + np.exp(-(x @ TRUE_COEF + TRUE_INTERCEPT)))
    y = (rng.random(n) < p).astype(np.float64)
    cut = int(0.75 * n)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def fit(model: Model, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> Model:
    """Full-batch gradient descent on the mean log-loss, from ``model``."""
    coef, intercept = model["coef"].astype(np.float64).copy(), model["intercept"].astype(np.float64).copy()
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(x @ coef + intercept[0])))
        coef -= lr * (x.T @ (p - y)) / len(y)
        intercept -= lr * np.array([np.mean(p - y)])
    return {"coef": coef, "intercept": intercept}


def evaluate(model: Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean log-loss and accuracy."""
    p = 1.0 / (1.0 + np.exp(-(x @ model["coef"] + model["intercept"][0])))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return loss, float(np.mean((p > 0.5) == (y > 0.5)))
