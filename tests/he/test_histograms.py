"""Encrypted bucket sums (fedx.he.histograms) against numpy, and the check that every stripe holds full totals."""

from __future__ import annotations

import numpy as np
import pytest

from fedx.errors import BlobError, HEError
from fedx.he.histograms import (
    HistogramEvaluator,
    block_width,
    decrypt_blocks,
    encrypt_pair,
)
from fedx.he.vectors import VectorEvaluator, VectorKey


@pytest.fixture(scope="module")
def key() -> VectorKey:
    return VectorKey.generate()


@pytest.mark.parametrize("n, buckets", [(300, 20), (5000, 700)], ids=["one-chunk", "two-chunks"])
def test_bucket_sums_equal_numpy(key: VectorKey, n: int, buckets: int) -> None:
    rng = np.random.default_rng(n)
    g = np.ldexp(np.rint(np.ldexp(rng.normal(size=n), 20)), -20)
    h = np.ldexp(np.rint(np.ldexp(rng.random(n) * 0.25, 20)), -20)
    per = buckets // 2                          # two "features": every row in one bucket of each
    rows = np.concatenate([np.arange(n), np.arange(n)])
    bucket = np.concatenate([rng.integers(0, per, n), per + rng.integers(0, per, n)])
    keep = rng.random(rows.size) < 0.8          # some rows in no bucket (other nodes)
    rows, bucket = rows[keep], bucket[keep]
    width = min(block_width(buckets), 256)      # several blocks when there are many buckets
    blocks = [(rows[bucket // width == k], bucket[bucket // width == k] - k * width)
              for k in range(-(-buckets // width))]
    ev = HistogramEvaluator(VectorEvaluator(key.public_bytes()), encrypt_pair(key, g, h), n)
    blob = ev.block_sums(blocks, width)
    counts = [min(width, buckets - k) for k in range(0, buckets, width)]
    got = decrypt_blocks(key, blob, counts, width)
    want = np.zeros((buckets, 2))
    np.add.at(want[:, 0], bucket, g[rows])
    np.add.at(want[:, 1], bucket, h[rows])
    assert np.max(np.abs(got - want)) < 1e-7


def test_unfolded_sums_and_bad_indices_are_refused(key: VectorKey) -> None:
    n = 200
    g, h = np.linspace(-1, 1, n), np.linspace(0, 0.25, n)
    ev = HistogramEvaluator(VectorEvaluator(key.public_bytes()), encrypt_pair(key, g, h), n)
    rows = np.arange(n)
    blob = ev.block_sums([(rows, rows % 8)], 16)
    assert np.allclose(decrypt_blocks(key, blob, [8], 16)[:, 0], [g[rows % 8 == b].sum() for b in range(8)])
    # slots that do not all hold the same totals (here: read with half the period) are refused
    with pytest.raises(BlobError, match="stripes hold different totals"):
        decrypt_blocks(key, blob, [8], 8)
    with pytest.raises(HEError, match="out of range"):
        ev.block_sums([(rows, rows % 9)], 8)
    with pytest.raises(HEError, match="not a power of two"):
        ev.block_sums([(rows, rows % 6)], 6)
