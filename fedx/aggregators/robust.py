"""Robust aggregation for plaintext runs: trimmed mean, coordinate-wise median, Krum and multi-Krum.

They resist a minority of malicious or broken clients (Yin et al., 2018; Blanchard et al., 2017), and
they need to read every update, so they cannot run on ciphertexts: with encryption on, the config is
refused (see :class:`fedx.config.Config`), never silently downgraded. Each pure function below works on
lists of arrays and is what the rules call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import AggregationError
from .base import Arrays, FedAvgRule, weighted_mean


def _stack(updates: Sequence[Arrays], j: int) -> np.ndarray:
    return np.stack([np.asarray(u[j], dtype=np.float64) for u in updates])


def trimmed_mean(updates: Sequence[Arrays], beta: float) -> Arrays:
    """Coordinate-wise mean after dropping the ``beta`` share of largest and smallest values.

    ``int(beta * n)`` values are cut at each end, as in :func:`scipy.stats.trim_mean`.
    """
    n = len(updates)
    if not 0.0 <= beta < 0.5:
        raise AggregationError(f"trimmed_mean: beta must be in [0, 0.5), got {beta}")
    cut = int(beta * n)
    if n - 2 * cut < 1:
        raise AggregationError(f"trimmed_mean: trimming {cut} of {n} updates at each end leaves none")
    out = []
    for j, ref in enumerate(updates[0]):
        s = np.sort(_stack(updates, j), axis=0)
        out.append(s[cut:n - cut].mean(axis=0).astype(ref.dtype))
    return out


def coordinate_median(updates: Sequence[Arrays]) -> Arrays:
    """Coordinate-wise median (the mean of the two middle values for an even count)."""
    return [np.median(_stack(updates, j), axis=0).astype(ref.dtype) for j, ref in enumerate(updates[0])]


def krum_select(updates: Sequence[Arrays], byzantine: int, select: int = 1) -> list[int]:
    """Indices of the updates that (multi-)Krum keeps.

    Each update is scored by the sum of squared distances to its ``n - f - 2`` nearest neighbours;
    the ``select`` lowest scores win.
    """
    n = len(updates)
    if n == 0:
        raise AggregationError("krum: no updates")
    flat = np.stack([np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in u]) for u in updates])
    sq = np.sum(flat * flat, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    k = max(1, n - byzantine - 2)
    scores = []
    for i in range(n):
        others = np.delete(dist[i], i)
        scores.append(np.sort(others)[:k].sum())
    order = np.argsort(np.asarray(scores), kind="stable")
    return [int(i) for i in order[: max(1, min(select, n))]]


class TrimmedMeanRule(FedAvgRule):
    """Coordinate-wise trimmed mean of the deltas (``federation.trim`` cut at each end)."""

    name = "trimmed_mean"
    he_kind = None

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = beta

    def combine(self, updates: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
        return trimmed_mean(updates, self.beta)


class MedianRule(FedAvgRule):
    """Coordinate-wise median of the deltas."""

    name = "median"
    he_kind = None

    def combine(self, updates: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
        return coordinate_median(updates)


class KrumRule(FedAvgRule):
    """Krum (``select=1``) or multi-Krum: weighted mean of the updates with the best Krum scores."""

    he_kind = None

    def __init__(self, byzantine: int = 1, select: int | None = 1) -> None:
        self.byzantine = byzantine
        self.select = select
        self.name = "krum" if select == 1 else "multi_krum"

    def combine(self, updates: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
        m = self.select if self.select is not None else max(1, len(updates) - self.byzantine)
        keep = krum_select(updates, self.byzantine, m)
        return weighted_mean([updates[i] for i in keep], [weights[i] for i in keep])
