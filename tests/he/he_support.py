"""Shared helpers of the fedx.he tests: cached keys and independent NumPy references."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

import fedx.he as he
from fedx.he.blob import new_id, pack_blob, unpack_blob


@functools.cache
def keys(preset: str = "bfv-compact", **overrides: Any) -> he.KeySet:
    """One key set per preset and overrides for the whole session (key generation is not under test here)."""
    return he.keygen(preset, **overrides)


def weighted_mean(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """The weighted mean of each array, computed independently in float64."""
    w = np.asarray(weights, np.float64)
    return [np.tensordot(w / w.sum(), np.stack([np.asarray(u[j], np.float64) for u in updates]), axes=1)
            for j in range(len(updates[0]))]


def assert_within(got: np.ndarray, want: np.ndarray, abs_tol: float, rel_tol: float = 0.0) -> None:
    """``|got - want| <= abs_tol + rel_tol * |want|`` element-wise, with a readable failure."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got64.shape == want64.shape
    excess = np.abs(got64 - want64) - (abs_tol + rel_tol * np.abs(want64))
    assert not np.any(excess > 0), f"max error exceeds the bound by {excess.max():.3g} (abs_tol {abs_tol:.3g})"


def copies(blob: bytes, n: int) -> list[bytes]:
    """``n`` blobs holding the very same ciphertexts under fresh update ids.

    For tests of capacity and noise growth, whose worst case is one ciphertext added to itself;
    ``he.aggregate`` refuses the same update (the same id) twice.
    """
    header, chunks = unpack_blob(blob)
    return [pack_blob(dataclasses.replace(header, ids=(new_id(),)), [bytes(c) for c in chunks]) for _ in range(n)]
