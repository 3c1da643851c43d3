"""kind="sum": exact integer statistics and fixed-point floats in BFV, stated precision in CKKS."""

from __future__ import annotations

import math

import numpy as np
import pytest
from he_support import assert_within, copies, keys

import fedx.he as he
from fedx.errors import CapacityError, HEError
from fedx.he.encoding import from_limbs, to_limbs


def test_bfv_integer_counts_are_exact_up_to_1e9() -> None:
    ks = keys("bfv-compact", max_clients=64)
    rng = np.random.default_rng(0)
    counts = [{"n": rng.integers(0, 20_000_000, (3, 4)), "flag": rng.random(5) < 0.5} for _ in range(50)]
    got, weight = he.decrypt(ks.secret, he.aggregate(ks.public, [he.encrypt(ks.secret, c, kind="sum") for c in counts]))
    want_n = np.sum([c["n"] for c in counts], axis=0)
    assert want_n.max() > 5e8
    assert got["n"].dtype == np.int64 and np.array_equal(got["n"], want_n)
    assert np.array_equal(got["flag"], np.sum([c["flag"] for c in counts], axis=0))
    assert weight == 50.0


def test_bfv_sums_of_squares_near_1e12_to_1e_6_relative() -> None:
    ks = keys("bfv-compact", max_clients=64)
    rng = np.random.default_rng(1)
    parts = [rng.normal(0.0, 3e4, (40, 25)) for _ in range(20)]  # 20 institutions, 40 records, 25 columns
    stats = [[np.sum(p * p, axis=0), np.sum(p, axis=0)] for p in parts]
    got, _ = he.decrypt(ks.secret, he.aggregate(ks.public, [he.encrypt(ks.secret, s, kind="sum") for s in stats]))
    for j in range(2):
        want = np.array([math.fsum(s[j][k] for s in stats) for k in range(25)])  # correctly rounded sums
        if j == 0:
            assert want.min() > 5e11
        assert_within(got[j], want, 0.0, 1e-6)
        assert_within(got[j], want, **_stated(ks.preset, len(stats)))


def test_bfv_float_sums_are_within_the_fixed_point_bound_at_every_magnitude() -> None:
    ks = keys("bfv-compact")
    rng = np.random.default_rng(2)
    values = [rng.normal(0.0, 1.0, 2000) * 10.0 ** rng.integers(-9, 15, 2000) for _ in range(7)]
    got, _ = he.decrypt(ks.secret, he.aggregate(ks.public, [he.encrypt(ks.secret, [v], kind="sum") for v in values]))
    want = np.array([math.fsum(v[k] for v in values) for k in range(2000)])
    assert_within(got[0], want, **_stated(ks.preset, 7))


def _stated(preset: he.Preset, n: int) -> dict[str, float]:
    p = preset.precision("sum", n, float(n), 0.0)
    return {"abs_tol": p.abs, "rel_tol": p.rel}


def test_limbs_recombine_exactly_like_python_integers() -> None:
    x = np.array([0.0, 1.0, -1.0, 2.0**52 - 1, -(2.0**52 - 1), 123456.789, -1e-9, 2.0**-30, 3.5e15, -7.25])
    digits, _ = to_limbs(x, 24, 10, 8)
    assert np.abs(digits).max() <= 512
    fixed = [int(d) for d in np.rint(np.ldexp(x, 24))]  # exact: scaling by 2**24 and rounding
    recombined = [sum(int(digits[j, k]) << (10 * j) for j in range(8)) for k in range(x.size)]
    assert recombined == fixed
    # 1008 clients at the largest digits still recombine to the correctly rounded sum.
    sums = digits * 1008
    got = from_limbs(sums, 24, 10)
    want = [float(1008 * f) / 2.0**24 for f in fixed]  # Python int -> float rounds correctly
    assert got.tolist() == want


def test_bfv_sum_refuses_values_that_would_lose_exactness_and_too_many_blobs() -> None:
    ks = keys("bfv-compact", max_clients=1008)
    with pytest.raises(CapacityError, match=r"2\^52"):
        he.encrypt(ks.secret, [np.array([2.0**52])], kind="sum")
    blob = he.encrypt(ks.secret, [np.array([2.0**40, -(2.0**40), 3.0])], kind="sum")
    # max_clients blobs at the largest limbs: the most that fit
    full = he.aggregate(ks.public, [he.aggregate(ks.public, copies(blob, 504)) for _ in range(2)])
    got, _ = he.decrypt(ks.secret, full)
    assert np.array_equal(got[0], 1008 * np.array([2**40, -(2**40), 3]))
    with pytest.raises(CapacityError, match=r"blob 1: summing 1009 blobs exceeds the 1008 additions"):
        he.aggregate(ks.public, [full, blob])
    with pytest.raises(HEError, match="total_weight applies to kind='mean'"):
        he.encrypt(ks.secret, [np.arange(3)], total_weight=3.0, kind="sum")


def test_ckks_sums_within_stated_precision_and_refused_beyond_capacity() -> None:
    ks = keys("ckks")
    rng = np.random.default_rng(4)
    stats = [[rng.uniform(0, 1e12, 300), rng.integers(0, 1000, 300)] for _ in range(9)]
    got, _ = he.decrypt(ks.secret, he.aggregate(ks.public, [he.encrypt(ks.secret, s, kind="sum") for s in stats]))
    bound = [sum(float(np.abs(s[j]).max()) for s in stats) for j in range(2)]
    for j in range(2):
        want = np.sum([np.asarray(s[j], np.float64) for s in stats], axis=0)
        assert got[j].dtype == np.float64  # CKKS is approximate: integers come back as floats
        p = ks.preset.precision("sum", 9, 9.0, max(bound))
        assert_within(got[j], want, p.abs, p.rel)
    assert_within(got[0], np.sum([s[0] for s in stats], axis=0), 0.0, 1e-6)
    with pytest.raises(CapacityError, match="modulus limit"):
        he.encrypt(ks.secret, [np.array([1e30])], kind="sum")
