"""Shared data of the fedx.trees tests: small synthetic sets with known structure, split across institutions."""

from __future__ import annotations

import functools
import itertools

import numpy as np

from fedx import he


@functools.cache
def keys(preset: str) -> he.KeySet:
    """One key set per preset for the whole session (key generation is not under test here)."""
    return he.keygen(preset)


def classification(n: int = 4000, seed: int = 0, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A logistic ground truth over 6 features: two continuous effects, a curve, a 5-level count, noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 3] = rng.integers(0, 5, n)
    X[:, 5] = rng.exponential(size=n) * (rng.random(n) < 0.1)     # mostly 0, a tail: a pile and a spread
    logit = 1.5 * X[:, 0] - X[:, 1] + np.sin(2 * X[:, 2]) + 0.4 * X[:, 3] + 0.8 * X[:, 5] - 2.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    return X, y


def counts(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson counts with exposure: rate exp(0.5 x0 - 0.3 x1 - 1) per unit exposure."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    exposure = rng.uniform(0.5, 2.0, n)
    y = rng.poisson(exposure * np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1] - 1.0)).astype(np.float64)
    return X, y, exposure


def split_rows(n: int, shares: tuple[float, ...] = (0.5, 0.3, 0.2), seed: int = 3) -> list[np.ndarray]:
    """Row indices of institutions of unequal sizes (shuffled, so each holds a mix)."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = [round(s * n) for s in shares[:-1]]
    bounds = np.cumsum([0, *sizes, n - sum(sizes)])
    return [np.sort(order[a:b]) for a, b in itertools.pairwise(bounds)]

NAMES6 = [f"x{i}" for i in range(6)]
