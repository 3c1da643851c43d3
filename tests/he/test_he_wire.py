"""The wire format of ciphertexts: bit packing against NumPy, and SEAL serializations that are refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from he_support import keys

import fedx.he as he
from fedx.errors import BlobError
from fedx.he import seal, wire
from fedx.he.blob import unpack_blob


@pytest.mark.parametrize("degree", [4096, 100])
@pytest.mark.parametrize("primes", [(737281,), (1268170753,), (11284873510913,), (2**60 - 2**14 + 1, 7),
                                    (2**61 - 1,), (3,)])
def test_packing_round_trips_and_takes_the_bits_of_each_prime(primes: tuple[int, ...], degree: int) -> None:
    rng = np.random.default_rng(len(primes))
    coeffs = np.stack([rng.integers(0, q, degree, dtype=np.uint64) for q in primes])
    coeffs[:, 0] = [q - 1 for q in primes]  # the largest coefficient of each prime
    packed = wire.pack_poly(coeffs, primes)
    assert len(packed) == sum(-(-degree * q.bit_length() // 8) for q in primes) == wire.poly_bytes(degree, primes)
    assert np.array_equal(wire.unpack_poly(packed, degree, primes, "test"), coeffs)
    # The bits are the coefficients' own, little-endian (an independent reading with Python integers).
    first = int.from_bytes(packed[:-(-degree * primes[0].bit_length() // 8)], "little")
    b = primes[0].bit_length()
    assert [(first >> (b * i)) & ((1 << b) - 1) for i in range(degree)] == coeffs[0].tolist()
    assert first >> (b * degree) == 0  # the padding bits of the last byte are zero


def test_seeds_while_few_and_smaller_than_c1() -> None:
    primes = (1268170753,)  # 31 bits: c1 takes 15872 bytes, a seed 65
    assert wire.c1_mode(wire.SEEDS_MAX, 4096, primes) == "seeds"
    assert wire.c1_mode(wire.SEEDS_MAX + 1, 4096, primes) == "poly"  # each institution would expand them all
    assert wire.c1_mode(30, 1024, (2**13 + 1,)) == "poly"  # 30 seeds (1950 bytes) outweigh c1 (1792)
    assert wire.c1_mode(20, 1024, (2**13 + 1,)) == "seeds"  # 20 (1300 bytes) do not
    assert wire.chunk_size(4096, primes, "seeds", 10) == 15872 + 650
    assert wire.chunk_size(4096, primes, "poly", 1000) == 2 * 15872


def test_seal_serializations_of_another_version_or_shape_are_refused() -> None:
    ks = keys("bfv-compact")
    engine = seal.engine(ks.preset)
    fmt = engine.formats["mean"]
    c0, seeds = wire.split_chunk(unpack_blob(he.encrypt(ks.secret, [np.ones(3)]))[1][0], 4096,
                                 engine.primes("mean"), "seeds", 1, "test")
    good = fmt.seeded(c0, seeds[0])
    assert np.array_equal(fmt.seeded_parts(good)[0], c0)
    other_version = good[:3] + bytes([3]) + good[4:]
    with pytest.raises(BlobError, match="SEAL version 3"):
        fmt.seeded_parts(other_version)
    with pytest.raises(BlobError, match="not a SEAL serialization"):
        fmt.seeded_parts(struct.pack("<H", 0x1234) + good[2:])
    with pytest.raises(BlobError, match="other parameters, level or size"):
        engine.formats["mean"].seeded_parts(seal.engine(keys("bfv-compact", max_clients=64).preset)
                                            .formats["mean"].seeded(np.zeros((1, 4096), np.uint64), seeds[0]))
    with pytest.raises(BlobError, match="seed record"):
        fmt.seeded_parts(good[:-65] + b"\x09" + good[-64:])
