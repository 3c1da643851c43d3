"""Weighted federated averaging (McMahan et al., 2017) on plain numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import AggregationError


def weighted_mean(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """Weighted mean of several clients' lists of arrays.

    Parameters
    ----------
    updates : sequence of sequences of np.ndarray
        One list of arrays per client, all with the same shapes.
    weights : sequence of float
        One non-negative weight per client (usually its number of training examples).

    Returns
    -------
    list of np.ndarray
        ``sum_i w_i * u_i / sum_i w_i``, accumulated in float64 and returned in the input dtype.
    """
    if len(updates) == 0:
        raise AggregationError("weighted_mean: no updates to average")
    if len(updates) != len(weights):
        raise AggregationError(f"weighted_mean: {len(updates)} updates but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise AggregationError(f"weighted_mean: weights must be finite, non-negative and not all zero, got {w}")
    first = updates[0]
    for i, upd in enumerate(updates[1:], start=1):
        if len(upd) != len(first) or any(a.shape != b.shape for a, b in zip(upd, first)):
            raise AggregationError(f"weighted_mean: update {i} does not have the shapes of update 0")
    total = w.sum()
    out = []
    for j, ref in enumerate(first):
        acc = np.zeros(ref.shape, dtype=np.float64)
        for wi, upd in zip(w, updates):
            acc += wi * np.asarray(upd[j], dtype=np.float64)
        out.append((acc / total).astype(ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64))
    return out
