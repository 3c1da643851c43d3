"""The same statistics when every stage vector is encrypted, summed by the server blind, and decrypted."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from stats_support import assert_close, pooled_frame, run, split

import fedx.he as he
from fedx.analytics import StatsPlan
from fedx.config import StatsConfig
from fedx.errors import DataError

POOLED = pooled_frame()
FRAMES = split(POOLED)
QUERY = {"columns": ["x", "claim", "age"], "histograms": {"age": [18, 30, 50, 70, 89]},
         "quantiles": {"x": [0.1, 0.5], "age": [0.5]}, "quantile_precision": 0.01, "correlation": ["x", "y", "age"],
         "crosstabs": [["region", "product"]], "group_by": "product"}


@functools.cache
def keys(preset: str) -> he.KeySet:
    return he.keygen(preset)


class EncryptedSum:
    """Encrypts each institution's vector, aggregates with the public context only, decrypts; keeps each total."""

    def __init__(self, preset: str) -> None:
        self.keys = keys(preset)
        self.totals: list[tuple[np.ndarray, np.ndarray, float]] = []  # (decrypted, plaintext, bound)

    def __call__(self, vectors: Sequence[np.ndarray]) -> np.ndarray:
        blobs = [he.encrypt(self.keys.secret, [v], kind="sum") for v in vectors]
        total = he.decrypt(self.keys.secret, he.aggregate(self.keys.public, blobs))[0][0]
        self.totals.append((total, np.sum(vectors, axis=0), sum(float(np.abs(v).max()) for v in vectors)))
        return total


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
def test_encrypted_statistics_equal_pandas_within_the_presets_precision(preset: str) -> None:
    combine = EncryptedSum(preset)
    res = run(FRAMES, combine=combine, **QUERY)
    plain = run(FRAMES, **QUERY)
    assert len(combine.totals) == res["stages"] == 4  # age needs two refinements to reach 0.01
    for decrypted, exact, bound in combine.totals:  # each decrypted sum is within the preset's statement
        stated = combine.keys.preset.precision("sum", len(FRAMES), 1.0, bound)
        assert np.all(np.abs(decrypted - exact) <= stated.abs + stated.rel * np.abs(exact))
    assert res["histograms"] == plain["histograms"] and res["crosstabs"] == plain["crosstabs"]
    if preset == "bfv-compact":  # integer sums are exact, so the search of an integer column is bit-identical
        assert res["quantiles"]["age"] == plain["quantiles"]["age"]
    assert res["histograms"]["age"]["counts"] == np.histogram(POOLED["age"], [18, 30, 50, 70, 89])[0].tolist()
    want = pd.crosstab(POOLED["region"], POOLED["product"]).to_numpy().tolist()
    assert res["crosstabs"]["region x product"]["counts"] == want
    for col in ("x", "claim", "age"):
        s = POOLED[col].astype(float)
        assert res["columns"][col]["count"] == s.count()
        assert_close(res["columns"][col]["mean"], s.mean())
        assert_close(res["columns"][col]["variance"], s.var())
    complete = POOLED[["x", "y", "age"]].astype(float).dropna()
    np.testing.assert_allclose(res["correlation"]["matrix"], complete.corr().to_numpy(), rtol=1e-6)
    for col, probs in (("x", [0.1, 0.5]), ("age", [0.5])):
        want_q = np.quantile(POOLED[col].dropna(), probs, method="inverted_cdf")
        got = res["quantiles"][col]
        assert got["precision"] <= 0.01 * (1 + 1e-9)
        assert all(abs(got[repr(p)] - w) <= got["precision"] for p, w in zip(probs, want_q))
    for level, frame in POOLED.groupby("product"):
        assert_close(res["groups"]["levels"][level]["columns"]["claim"]["mean"], frame["claim"].mean())


def test_ckks_keeps_counts_exact_beside_huge_sums_when_counts_travel_in_their_own_blob() -> None:
    rng = np.random.default_rng(5)
    frames = split(pd.DataFrame({"amount": rng.uniform(1e7, 5e7, 400)}), [150, 250])  # sums of squares near 2^58
    query = {"columns": ["amount"], "histograms": {"amount": [1e7, 2e7, 5e7]}}
    ks = keys("ckks")

    def one_blob(vectors: Sequence[np.ndarray]) -> np.ndarray:
        blobs = [he.encrypt(ks.secret, [v], kind="sum") for v in vectors]
        return he.decrypt(ks.secret, he.aggregate(ks.public, blobs))[0][0]

    with pytest.raises(DataError, match="not whole numbers"):  # refused, never rounded to a wrong count
        run(frames, combine=one_blob, **query)

    plan = StatsPlan.from_config(StatsConfig(**query))
    mask = plan.whole_numbers(plan.first_stage())

    def two_blobs(vectors: Sequence[np.ndarray]) -> np.ndarray:
        total = np.empty(len(vectors[0]))
        for part in (mask, ~mask):
            total[part] = one_blob([v[part] for v in vectors])
        return total

    res = run(frames, combine=two_blobs, **query)
    pooled = pd.concat(frames.values())["amount"]
    assert res["histograms"]["amount"]["counts"] == np.histogram(pooled, [1e7, 2e7, 5e7])[0].tolist()
    assert_close(res["columns"]["amount"]["mean"], pooled.mean())
    assert_close(res["columns"]["amount"]["std"], pooled.std(), rel=1e-4)  # sum of squares: 2^-44 relative noise
