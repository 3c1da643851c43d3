"""Presets: parameters checked independently, stated limits, validation of overrides, noise budget."""

from __future__ import annotations

import numpy as np
import pytest
from he_support import assert_within, copies, keys

import fedx.he as he
from fedx.errors import CapacityError, HEError


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24."""
    if n < 2:
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        if a % n == 0:
            continue
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


# The HE standard's largest total coefficient modulus at 128-bit classical security, per ring degree.
MAX_MODULUS_BITS_128 = {4096: 109, 8192: 218}


@pytest.mark.parametrize("name", ["bfv-compact", "ckks"])
def test_parameters_are_ntt_friendly_primes_within_128_bit_security(name: str) -> None:
    p = he.PRESETS[name]
    n = p.poly_modulus_degree
    assert all(_is_prime(q) and q % (2 * n) == 1 for q in p.coeff_modulus)
    assert sum(q.bit_length() for q in p.coeff_modulus) <= MAX_MODULUS_BITS_128[n]
    d = he.describe(p)
    assert d["security_bits"] == 128 and d["poly_modulus_degree"] == n


@pytest.mark.parametrize("max_clients", [1, 10, 16, 100, 1000])
def test_bfv_compact_moduli_are_the_smallest_that_hold_max_clients(max_clients: int) -> None:
    p = he.get_preset("bfv-compact", max_clients=max_clients)
    levels, step = 2**15 - 1, 8192
    t, (q,) = p.plain_modulus, p.coeff_modulus
    # t: the smallest batching prime whose range holds max_clients updates of 16 bits at rho = 1.
    assert _is_prime(t) and t % step == 1 and (t - 1) // 2 >= max_clients * levels
    assert not any(_is_prime(c) for c in range(t - step, 2 * max_clients * levels, -step))
    # q: one prime, the smallest above 2 t n * 21.5 (the worst-case noise of n fresh ciphertexts) * 2^margin.
    floor = 2 * t * max_clients * 21.5 * 2**p.noise_margin_bits
    assert _is_prime(q) and q % step == 1 and q >= floor
    assert not any(_is_prime(c) for c in range(q - step, int(floor), -step))
    assert p.max_additions == max_clients and q.bit_length() <= MAX_MODULUS_BITS_128[4096]


def test_bfv_compact_describe_states_its_limits() -> None:
    d = he.describe("bfv-compact")
    p = he.PRESETS["bfv-compact"]
    assert d["plain_modulus"] == p.plain_modulus and d["coeff_modulus_bits"] == [32]
    assert d["bits"] == 16 and d["clip"] == 1.0 and d["max_clients"]["mean_at_rho_1"] == 16 == p.max_clients
    assert d["quantization_step"] == pytest.approx(1.0 / 32767)
    assert d["max_clients"] == {"mean_at_rho_1": 16, "mean_with_total_weight": 16, "sum": 16}
    assert d["bytes_per_param"]["upload"] <= 4.1 and d["bytes_per_param"]["aggregate"] <= 4.2
    assert d["bytes_per_param"]["aggregate_max"] == pytest.approx((32 * 4096 / 8 + 16 * 65) / 4096, abs=1e-3)
    assert "n * 1.53e-05 / sum(rho)" in d["precision"]["mean"]


def test_ckks_describe_states_its_limits() -> None:
    d = he.describe("ckks")
    assert d["poly_modulus_degree"] == 8192 and d["coeff_modulus_bits"] == [60, 40, 40, 60] and d["scale_bits"] == 40
    assert d["capacity"]["mean_sum_of_rho_times_max_abs"] == pytest.approx(2.0**18, rel=1e-6)
    # c0 at 60 bits and a seed up, c0 and ten seeds down.
    assert 15 <= d["bytes_per_param"]["upload"] <= d["bytes_per_param"]["aggregate"] < 15.5
    assert d["bytes_per_param"]["aggregate_max"] == 30.0  # 4096 seeds would outgrow c1


@pytest.mark.parametrize("overrides, error, message", [
    ({"bits": 31}, CapacityError, r"he.bits=31 is more than bfv-compact quantizes to; use he.bits <= 30"),
    ({"max_clients": 0}, HEError, r"he.max_clients must be an integer in \[1, 1048576\], got 0"),
    ({"max_clients": 2.5}, HEError, "he.max_clients must be an integer"),
    ({"bits": 30, "max_clients": 100000}, CapacityError,
     r"he.max_clients=100000 at he.bits=30 needs a \d+-bit coefficient prime, and SEAL allows at most 60"),
    ({"bits": 1}, HEError, "he.bits must be an integer >= 2"),
    ({"bits": 16.5}, HEError, "he.bits must be an integer"),
    ({"clip": -1.0}, HEError, "he.clip must be a positive finite number"),
    ({"clip": float("inf")}, HEError, "he.clip must be a positive finite number"),
    ({"scale": 3}, HEError, "preset bfv-compact has no setting scale; it takes bits, clip, max_clients"),
])
def test_bad_overrides_are_refused(overrides: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        he.get_preset("bfv-compact", **overrides)


def test_preset_lookup_and_ckks_overrides() -> None:
    with pytest.raises(HEError, match="unknown HE preset 'bfv'; expected one of bfv-compact, ckks"):
        he.keygen("bfv")
    with pytest.raises(HEError, match="bits, clip and max_clients apply to bfv-compact"):
        he.get_preset("ckks", bits=16)
    custom = he.get_preset("bfv-compact", bits=np.int64(19), clip="0.5")
    assert (custom.bits, custom.clip) == (19, 0.5)
    assert custom.params_hash != he.PRESETS["bfv-compact"].params_hash
    assert he.get_preset("bfv-compact", bits=16, clip=1.0) == he.PRESETS["bfv-compact"]


@pytest.mark.parametrize("max_clients", [16, 1000])
def test_bfv_noise_budget_covers_max_additions_even_when_noise_adds_coherently(max_clients: int) -> None:
    ks = keys("bfv-compact", max_clients=max_clients)
    preset = ks.preset
    n = preset.max_additions
    x = np.array([1.0, -1.0, 0.5, -0.25, 0.0])  # at the clip: the largest plaintexts
    blob = he.encrypt(ks.secret, [x], weight=1.0, total_weight=float(n))
    fresh = he.noise_budget(ks.secret, blob)
    assert fresh >= preset.noise_margin_bits + int(np.log2(n))  # measured by SEAL, not assumed
    # The same ciphertext added to itself: its noise grows linearly, the worst case.
    agg = he.aggregate(ks.public, copies(blob, n))
    budget = he.noise_budget(ks.secret, agg)
    assert budget >= 1, f"noise budget exhausted after {n} additions"
    got, _ = he.decrypt(ks.secret, agg)
    assert_within(got[0], x, preset.precision("mean", n, 1.0, 0.0).abs)
    with pytest.raises(CapacityError, match=rf"summing {n + 1} blobs exceeds the {n} additions.*noise budget"):
        he.aggregate(ks.public, [agg, blob])
    with pytest.raises(HEError, match="no invariant noise budget"):
        he.noise_budget(keys("ckks").secret, he.encrypt(keys("ckks").secret, [x]))
