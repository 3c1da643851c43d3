"""Synthetic data with known structure for the task tests, handed to tests as fixtures.

The helpers are fixtures (not an imported module) so that they work under any pytest import mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import expit

from fedx.tasks import TabularData


def binary_data(n: int, d: int, rate: float, seed: int, signal: float = 2.0) -> TabularData:
    """Rows whose positives (about ``rate`` of them) depend on the first two features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    z = signal * (X[:, 0] - 0.5 * X[:, 1] + 0.5 * X[:, 0] ** 2)
    shift = np.quantile(z, 1 - rate)
    y = (rng.random(n) < expit(2.5 * (z - shift))).astype(np.float32)
    return TabularData(X, y)


def take(data: TabularData, idx: np.ndarray) -> TabularData:
    """The rows ``idx`` of ``data``."""
    return TabularData(data.X[idx], data.y[idx],
                       offset=None if data.offset is None else data.offset[idx],
                       weight=None if data.weight is None else data.weight[idx])


def split(data: TabularData, sizes: list[int]) -> list[TabularData]:
    """Consecutive blocks of ``sizes`` rows."""
    edges = np.cumsum([0, *sizes])
    return [take(data, np.arange(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def sum_stats(dicts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Elementwise sum of per-institution statistics, as the federation computes it."""
    return {k: np.sum([d[k] for d in dicts], axis=0) for k in dicts[0]}


@pytest.fixture
def synth() -> SimpleNamespace:
    """The helpers above: ``synth.binary_data``, ``synth.take``, ``synth.split``, ``synth.sum_stats``."""
    return SimpleNamespace(binary_data=binary_data, take=take, split=split, sum_stats=sum_stats)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Small models gain nothing from intra-op threads, and two threads on a busy 2-core machine wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
