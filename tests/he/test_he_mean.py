"""Encrypted aggregation equals NumPy's weighted mean, within each preset's stated precision."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from he_support import assert_within, copies, keys, weighted_mean

import fedx.he as he
from fedx.he import wire
from fedx.errors import BlobError, CapacityError

SHAPES = [(), (0,), (7,), (4096,), (4097,), (3, 1500, 2), (2, 0, 3)]


def _updates(rng: np.random.Generator, n: int, scale: float = 0.9) -> list[list[np.ndarray]]:
    return [[rng.uniform(-scale, scale, s) for s in SHAPES] for _ in range(n)]


def _stated_abs(preset: he.Preset, n: int, rho_sum: float, updates: list[list[np.ndarray]], rhos: list[float]) -> float:
    # The bound of CKKS depends on sum(rho * max|value|): computed here from the inputs, not from the blob.
    bound = sum(r * max((float(np.abs(a).max()) for a in u if a.size), default=0.0) for r, u in zip(rhos, updates))
    return preset.precision("mean", n, rho_sum, bound).abs


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
@pytest.mark.parametrize("n_clients", [1, 2, 5, 64])
def test_weighted_mean_matches_numpy(preset: str, n_clients: int) -> None:
    rng = np.random.default_rng(n_clients)
    ks = keys(preset, max_clients=64) if preset == "bfv-compact" and n_clients > 16 else keys(preset)
    updates = _updates(rng, n_clients)
    weights = list(rng.lognormal(3.0, 2.0, n_clients))
    total = float(sum(weights))
    blobs = (he.encrypt(ks.secret, u, weight=w, total_weight=total) for u, w in zip(updates, weights))
    got, weight = he.decrypt(ks.secret, he.aggregate(ks.public, blobs))
    assert isinstance(got, list) and len(got) == len(SHAPES)
    assert weight == pytest.approx(total, rel=1e-12)
    rhos = [w / total for w in weights]
    tol = _stated_abs(ks.preset, n_clients, sum(rhos), updates, rhos)
    for g, want in zip(got, weighted_mean(updates, weights)):
        assert g.shape == want.shape and g.dtype == np.float64
        assert_within(g, want, tol, 2.0**-52)


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
def test_very_unequal_weights_and_dict_input_keep_keys_order_and_dtype(preset: str) -> None:
    rng = np.random.default_rng(7)
    ks = keys(preset)
    names = ["z.weight", "a.bias", "m.scalar"]
    shapes = [(5, 9000), (4095,), ()]
    updates = [{n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in zip(names, shapes)} for _ in range(3)]
    weights = [1.0, 1e6, 2.5]
    total = sum(weights)
    agg = he.aggregate(ks.public, [he.encrypt(ks.secret, u, weight=w, total_weight=total)
                                   for u, w in zip(updates, weights)])
    got, weight = he.decrypt(ks.secret, agg)
    assert isinstance(got, dict) and list(got) == names
    assert weight == pytest.approx(total)
    want = weighted_mean([[u[n] for n in names] for u in updates], weights)
    tol = _stated_abs(ks.preset, 3, 1.0, [[u[n] for n in names] for u in updates], [w / total for w in weights])
    for n, w in zip(names, want):
        assert got[n].dtype == np.float32 and got[n].shape == w.shape
        assert_within(got[n], w, tol, np.finfo(np.float32).eps)
    # The heavy client dominates: the mean is within 1e-5 of its update.
    assert_within(got["z.weight"], updates[1]["z.weight"], 1e-5 + tol)


def test_bfv_clipping_is_applied_counted_and_reported() -> None:
    ks = keys("bfv-compact", clip=0.5)
    rng = np.random.default_rng(3)
    updates = [[rng.normal(0.0, 0.4, 5000)] for _ in range(4)]
    weights = [1.0, 2.0, 3.0, 4.0]
    blobs = [he.encrypt(ks.secret, u, weight=w, total_weight=10.0) for u, w in zip(updates, weights)]
    for b, u in zip(blobs, updates):
        report = he.inspect(b).report
        assert report.clipped == int(np.count_nonzero(np.abs(u[0]) > 0.5)) > 0
        assert report.max_abs == pytest.approx(float(np.abs(u[0]).max()))
    agg = he.aggregate(ks.public, blobs)
    assert he.inspect(agg).report.clipped == sum(int(np.count_nonzero(np.abs(u[0]) > 0.5)) for u in updates)
    got, _ = he.decrypt(ks.secret, agg)
    want = weighted_mean([[np.clip(u[0], -0.5, 0.5)] for u in updates], weights)[0]
    assert_within(got[0], want, ks.preset.precision("mean", 4, 1.0, 0.0).abs)


@pytest.mark.parametrize("preset, weights", [
    ("bfv-compact", [1.0, 2.5, 7.0, 4.0]),      # at 16 bits (max_clients 16) the weights of one sum may add up to 16.38
    ("ckks", [120.0, 30.0, 850.0, 4.0]),
])
def test_without_total_weight_the_aggregate_is_the_true_weighted_mean(preset: str, weights: list[float]) -> None:
    """DESIGN's call, ``he.encrypt(secret, arrays, weight=n)`` with no total: the weighted mean, and sum(n)."""
    ks = keys(preset)
    rng = np.random.default_rng(12)
    updates = [[rng.uniform(-0.9, 0.9, 300), rng.uniform(-0.9, 0.9, (4, 5))] for _ in weights]
    blobs = [he.encrypt(ks.secret, u, weight=w) for u, w in zip(updates, weights)]
    got, weight = he.decrypt(ks.secret, he.aggregate(ks.public, blobs))
    assert weight == pytest.approx(sum(weights))
    tol = _stated_abs(ks.preset, len(weights), sum(weights), updates, weights)
    assert tol < 1e-4  # within the quantization step (bfv-compact) or CKKS noise: far below the weighting's effect
    want = weighted_mean(updates, weights)
    unweighted = [np.mean([u[j] for u in updates], axis=0) for j in range(2)]
    for g, w, uw in zip(got, want, unweighted):
        assert_within(g, w, tol)
        assert np.abs(w - uw).max() > 100 * tol  # the unweighted mean would fail this test


def test_bfv_without_total_weight_refuses_weights_beyond_its_range_naming_total_weight() -> None:
    ks = keys("bfv-compact")
    room = ks.preset.half_t / ks.preset.levels  # the weights that fit without total_weight
    assert 16 <= room < 17  # the default preset holds 16 updates at rho = 1
    with pytest.raises(CapacityError, match=rf"weight=500 needs .*at most {room:.4g}\. Pass total_weight"):
        he.encrypt(ks.secret, [np.ones(10)], weight=500.0)
    blobs = [he.encrypt(ks.secret, [np.ones(10)], weight=10.0) for _ in range(2)]  # 10 + 10 > room
    with pytest.raises(CapacityError, match=r"blob 1: plain-modulus limit.*total_weight"):
        he.aggregate(ks.public, blobs)
    # With total_weight, the same weights fit, and give the same weighted mean.
    rng = np.random.default_rng(4)
    updates = [[rng.uniform(-1, 1, 50)] for _ in range(2)]
    got, _ = he.decrypt(ks.secret, he.aggregate(ks.public, [he.encrypt(ks.secret, u, weight=w, total_weight=510.0)
                                                            for u, w in zip(updates, (10.0, 500.0))]))
    assert_within(got[0], weighted_mean(updates, [10.0, 500.0])[0], ks.preset.precision("mean", 2, 1.0, 0.0).abs)


def test_blobs_weighted_under_different_total_weights_are_refused() -> None:
    """Mixing totals (or a total and none) would silently give a wrongly weighted mean."""
    ks = keys("ckks")
    a = he.encrypt(ks.secret, [np.ones(10)], weight=2.0, total_weight=10.0)
    b = he.encrypt(ks.secret, [np.ones(10)], weight=3.0, total_weight=20.0)
    c = he.encrypt(ks.secret, [np.ones(10)], weight=3.0)
    for other in (b, c):
        with pytest.raises(BlobError, match=r"blob 1 was encrypted under another total_weight than blob 0"):
            he.aggregate(ks.public, [a, other])
    d = he.encrypt(ks.secret, [np.ones(10)], weight=8.0, total_weight=10.0)
    assert he.inspect(he.aggregate(ks.public, [a, d])).rho == pytest.approx(1.0)


def test_max_clients_updates_fit_at_rho_1_and_one_more_is_refused() -> None:
    ks = keys("bfv-compact")
    n = ks.preset.max_clients
    x = np.linspace(-1.0, 1.0, 10)
    blob = he.encrypt(ks.secret, [x])
    with pytest.raises(CapacityError, match=rf"blob {n}: summing {n + 1} blobs exceeds the {n} additions.*"
                                            rf"raise he.max_clients"):
        he.aggregate(ks.public, copies(blob, n + 1))
    agg = he.aggregate(ks.public, copies(blob, n))
    got, weight = he.decrypt(ks.secret, agg)
    levels = ks.preset.levels
    assert weight == n and np.array_equal(got[0], np.rint(x * levels) / levels)  # exact on the quantized values
    # At 14 bits the same keys' modulus is smaller, and holds the same number of updates.
    small = keys("bfv-compact", bits=14)
    assert small.preset.plain_modulus < ks.preset.plain_modulus
    assert he.describe(small.preset)["max_clients"]["mean_at_rho_1"] == n


def test_1000_clients_at_16_bits_sum_exactly_at_rho_1() -> None:
    ks = keys("bfv-compact", max_clients=1000)
    levels = ks.preset.levels
    assert ks.preset.bits == 16 and ks.preset.half_t >= 1000 * levels
    rng = np.random.default_rng(11)
    updates = [rng.uniform(-1.0, 1.0, 50) for _ in range(1000)]
    agg = he.aggregate(ks.public, (he.encrypt(ks.secret, [u]) for u in updates))
    assert he.inspect(agg).c1 == "poly"  # the server expanded the seeds as it summed (more than SEEDS_MAX)
    got, weight = he.decrypt(ks.secret, agg)
    want = np.sum([np.rint(u * levels) for u in updates], axis=0) / levels / 1000
    assert weight == 1000 and np.array_equal(got[0], want)
    assert he.noise_budget(ks.secret, agg) >= 1


def test_past_seeds_max_the_server_expands_the_seeds_and_the_sum_stays_exact() -> None:
    ks = keys("bfv-compact", max_clients=64)
    levels, n = ks.preset.levels, wire.SEEDS_MAX + 1
    rng = np.random.default_rng(13)
    updates = [rng.uniform(-1.0, 1.0, 5000) for _ in range(n)]
    blobs = [he.encrypt(ks.secret, [u]) for u in updates]
    few = he.aggregate(ks.public, blobs[:-1])
    assert he.inspect(few).c1 == "seeds"
    want = np.sum([np.rint(u * levels) for u in updates], axis=0) / levels / n
    # Summed in one pass, or as the aggregate of SEEDS_MAX seeds plus one more update: c1 travels, exactly.
    for agg in (he.aggregate(ks.public, blobs), he.aggregate(ks.public, [few, blobs[-1]])):
        assert he.inspect(agg).c1 == "poly"
        got, weight = he.decrypt(ks.secret, agg)
        assert weight == n and np.array_equal(got[0], want)


def test_ckks_refuses_a_sum_beyond_its_modulus() -> None:
    ks = keys("ckks")
    blob = he.encrypt(ks.secret, [np.full(4, 1e5)])
    with pytest.raises(CapacityError, match=r"blob 2: modulus limit.*sum\(rho \* max\|value\|\)"):
        he.aggregate(ks.public, copies(blob, 3))
    with pytest.raises(CapacityError, match="modulus limit"):
        he.encrypt(ks.secret, [np.full(4, 3e5)])


def test_aggregate_streams_a_generator_and_sums_aggregates() -> None:
    ks = keys("bfv-compact")
    rng = np.random.default_rng(5)
    updates = [[rng.uniform(-1, 1, 9000)] for _ in range(6)]
    blobs = [he.encrypt(ks.secret, u, weight=1.0, total_weight=6.0) for u in updates]
    first, second = he.aggregate(ks.public, iter(blobs[:4])), he.aggregate(ks.public, iter(blobs[4:]))
    both = he.aggregate(ks.public, iter([first, second]))
    header = he.inspect(both)
    assert (header.stage, header.n_summed, header.rho, header.weight) == ("aggregate", 6, pytest.approx(1.0), 6.0)
    got, _ = he.decrypt(ks.secret, both)
    assert_within(got[0], np.mean([u[0] for u in updates], axis=0), ks.preset.precision("mean", 6, 1.0, 0.0).abs)


def test_bfv_wire_sizes_meet_the_goals() -> None:
    ks = keys("bfv-compact", max_clients=10)
    n = 10 * 4096
    blob = he.encrypt(ks.secret, [np.zeros(n)], weight=1.0, total_weight=10.0)
    agg = he.aggregate(ks.public, copies(blob, 10))
    assert he.inspect(agg).c1 == "seeds"
    assert len(blob) / n <= 4.5  # c0 at the bits of one small prime, and a seed
    assert len(agg) / n <= 4.6  # the sum of c0 and ten seeds
    # Past SEEDS_MAX updates (or where the seeds outgrow c1), an aggregate carries c1 and stops growing.
    wide = keys("bfv-compact", max_clients=1000)
    one = he.encrypt(wide.secret, [np.zeros(4096)], weight=1.0, total_weight=1000.0)
    (chunk,) = he.inspect(one).chunk_sizes
    sizes = {k: he.inspect(he.aggregate(wide.public, copies(one, k))).chunk_sizes[0]
             for k in (wire.SEEDS_MAX, wire.SEEDS_MAX + 1, 400, 1000)}
    assert sizes[wire.SEEDS_MAX] == chunk + (wire.SEEDS_MAX - 1) * 65
    assert sizes[wire.SEEDS_MAX + 1] == sizes[400] == sizes[1000] == 2 * (chunk - 65)


def test_threads_encrypt_concurrently_without_mixing_their_scratch_files() -> None:
    ks = keys("bfv-compact")
    rng = np.random.default_rng(9)
    updates = [[rng.uniform(-1, 1, 9000)] for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        blobs = list(pool.map(lambda u: he.encrypt(ks.secret, u, weight=1.0, total_weight=8.0), updates))
    got, _ = he.decrypt(ks.secret, he.aggregate(ks.public, blobs))
    assert_within(got[0], np.mean([u[0] for u in updates], axis=0), ks.preset.precision("mean", 8, 1.0, 0.0).abs)
