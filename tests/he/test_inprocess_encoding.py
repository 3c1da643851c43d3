"""fedx.inprocess's emulation of bfv-compact's encoding against the real encryption."""

from __future__ import annotations

import numpy as np
import pytest
from he_support import keys, weighted_mean

from fedx import he
from fedx.config import config_from_dict
from fedx.errors import ConfigError
from fedx.inprocess import encoder

WEIGHTS = [300.0, 200.0, 100.0]


def _cfg(encryption: str = "bfv-compact") -> object:
    return config_from_dict({"name": "t", "task": "fraud", "data": {"source": "synthetic/transactions",
                                                                     "target": "is_fraud"},
                             "security": {"encryption": encryption, "he": {"bits": 12, "clip": 0.5}}})


def _updates() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(4)
    return [[rng.normal(0, 0.3, (7, 5)).astype(np.float32), rng.normal(0, 0.3, 5).astype(np.float32)]
            for _ in WEIGHTS]


def test_the_emulated_mean_is_the_decrypted_mean() -> None:
    """Coarse settings (12 bits, clip 0.5: some values are clipped) so that rounding shows."""
    updates, total = _updates(), sum(WEIGHTS)
    k = keys("bfv-compact", bits=12, clip=0.5)
    blobs = [he.encrypt(k.secret, u, weight=w, total_weight=total) for u, w in zip(updates, WEIGHTS)]
    decrypted, _ = he.decrypt(k.secret, he.aggregate(k.public, blobs))

    encode = encoder(_cfg(), total)
    emulated = weighted_mean([encode(u, w) for u, w in zip(updates, WEIGHTS)], WEIGHTS)
    plain = weighted_mean(updates, WEIGHTS)
    for got, want, exact in zip(emulated, decrypted, plain):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 of each institution's part
        assert np.abs(got - exact).max() > 1e-4  # the rounding (step 2.4e-4) and clipping are there


def test_only_bfv_compact_is_emulated() -> None:
    with pytest.raises(ConfigError, match="emulates bfv-compact only, got 'ckks'"):
        encoder(_cfg("ckks"), 1.0)
