"""With a public value bound, a blob's header reveals nothing about the values (needed for DP)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fedx.he as he


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
def test_header_does_not_depend_on_values(preset: str) -> None:
    keys = he.keygen(preset)
    rng = np.random.default_rng(0)
    small = [rng.normal(scale=0.01, size=(300,)).astype(np.float32)]
    large = [rng.normal(scale=0.5, size=(300,)).astype(np.float32)]
    large[0][:7] = 5.0                      # would be clipped at clip=1 and raise max_abs
    headers = [he.inspect(he.encrypt(keys.secret, u, weight=1.0, total_weight=4.0, value_bound=1.0))
               for u in (small, large)]
    fields = [{k: v for k, v in dataclasses.asdict(h).items() if k not in ("chunk_sizes", "ids")} for h in headers]
    assert fields[0] == fields[1]
    assert headers[0].ids != headers[1].ids  # random update ids, drawn independently of the values
    # Without the bound, the same two updates give different headers (max_abs, clipping).
    plain = [he.inspect(he.encrypt(keys.secret, u, weight=1.0, total_weight=4.0)) for u in (small, large)]
    assert plain[0].report != plain[1].report


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
def test_value_bound_clips_and_still_averages(preset: str) -> None:
    keys = he.keygen(preset)
    rng = np.random.default_rng(1)
    ups = [[rng.uniform(-2, 2, size=(50,))] for _ in range(4)]
    blobs = [he.encrypt(keys.secret, u, weight=1.0, total_weight=4.0, value_bound=1.0) for u in ups]
    mean, weight = he.decrypt(keys.secret, he.aggregate(keys.public, blobs))
    expected = np.mean([np.clip(u[0], -1, 1) for u in ups], axis=0)
    np.testing.assert_allclose(mean[0], expected, atol=2e-4)
    assert weight == 4.0
