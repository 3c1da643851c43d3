"""Distributed DP through homomorphic encryption: the decrypted mean carries the configured noise, no more, no less."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedx import he
from fedx.privacy.dp import (
    effective_noise_multiplier,
    noised_value_bound,
    privatize_update,
)

SIGMA, CLIP, N = 1.3, 0.7, 10
SHAPES = [(200, 150), (20_000,)]  # 50,000 values


def noised_zero_updates(count: int) -> list[list[np.ndarray]]:
    """``count`` institutions' zero updates (float32, as fedx sends them), clipped and noised with fixed seeds."""
    return [privatize_update([np.zeros(s, np.float32) for s in SHAPES], CLIP, SIGMA, N,
                             np.random.default_rng(1000 + i), distributed=True)[0] for i in range(count)]


def through_he(keys: he.KeySet, updates: list[list[np.ndarray]]) -> tuple[np.ndarray, float, he.BlobHeader]:
    """Encrypt each update with weight 1 of N (uniform DP-FedAvg weights), add at the server, decrypt."""
    blobs = [he.encrypt(keys.secret, u, weight=1.0, total_weight=float(N)) for u in updates]
    total = he.aggregate(keys.public, blobs)
    mean, weight = he.decrypt(keys.secret, total)
    return np.concatenate([np.asarray(m, np.float64).ravel() for m in mean]), float(weight), he.inspect(total)


def assert_std(x: np.ndarray, want: float, what: str) -> None:
    """Sample std within 4 standard errors (relative sqrt(1 / 2N), 1.3% here) of ``want``; zero mean; normal."""
    tol = 4 / math.sqrt(2 * x.size)
    got = float(np.sqrt(np.mean(x**2)))
    assert abs(got / want - 1) < tol, f"{what}: std {got:.6g}, expected {want:.6g} (tolerance {tol:.2%})"
    assert abs(x.mean()) < 4 * want / math.sqrt(x.size)
    assert stats.kstest(x / want, "norm").pvalue > 1e-3, f"{what}: not normal"


def plain_mean(updates: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.mean([u[j] for u in updates], axis=0, dtype=np.float64).ravel()
                           for j in range(len(SHAPES))])


def test_ckks_decrypted_mean_has_the_configured_noise() -> None:
    updates = noised_zero_updates(N)
    mean, weight, header = through_he(he.keygen("ckks"), updates)
    assert weight == N
    assert_std(mean, SIGMA * CLIP / N, "decrypted CKKS mean")
    np.testing.assert_allclose(mean, plain_mean(updates), rtol=0, atol=1e-6)  # HE adds nothing that matters
    assert header.report.clipped == 0


def test_bfv_compact_decrypted_mean_has_the_configured_noise_plus_the_quantization() -> None:
    bound = noised_value_bound(CLIP, SIGMA, N)
    keys = he.keygen("bfv-compact", clip=bound)
    preset = keys.public.preset
    step = preset.clip / (2 ** (preset.bits - 1) - 1)  # one integer level; each of N roundings is uniform in it
    updates = noised_zero_updates(N)
    mean, weight, header = through_he(keys, updates)
    assert weight == N
    assert header.report.clipped == 0  # the clip range covers the noise (noised_value_bound)
    assert_std(mean, math.sqrt((SIGMA * CLIP / N) ** 2 + N * step**2 / 12), "decrypted BFV mean")
    np.testing.assert_allclose(mean, plain_mean(updates), rtol=0, atol=N * step / 2 + 1e-9)


def test_with_dropouts_the_decrypted_sum_carries_the_effective_noise() -> None:
    """3 of 10 institutions drop out: he.decrypt divides by the 7 that arrived, and the noise is that of 7 shares."""
    arrived = 7
    mean, weight, _ = through_he(he.keygen("ckks"), noised_zero_updates(arrived))
    assert weight == arrived
    assert_std(mean * arrived, effective_noise_multiplier(SIGMA, N, arrived) * CLIP, "decrypted sum of 7 shares")


@pytest.mark.parametrize("preset", ["ckks", "bfv-compact"])
def test_an_encrypted_round_of_real_updates_is_clipped_then_noised(preset: str) -> None:
    """Large updates are clipped before encryption: the decrypted mean is the mean of clipped updates plus the noise."""
    rng = np.random.default_rng(4)
    raw = [[rng.normal(0, 0.05, size=s).astype(np.float32) for s in SHAPES] for _ in range(N)]  # norm ~11 >> clip
    noised = [privatize_update(u, CLIP, SIGMA, N, np.random.default_rng(2000 + i), distributed=True)[0]
              for i, u in enumerate(raw)]
    overrides = {"clip": noised_value_bound(CLIP, SIGMA, N)} if preset == "bfv-compact" else {}
    mean, _, _ = through_he(he.keygen(preset, **overrides), noised)
    clipped_mean = plain_mean([privatize_update(u, CLIP, 0.0, N, distributed=False)[0] for u in raw])
    assert np.linalg.norm(clipped_mean) <= CLIP * (1 + 1e-6)
    assert_std(mean - clipped_mean, SIGMA * CLIP / N, f"{preset}: decrypted mean minus the clipped mean")
