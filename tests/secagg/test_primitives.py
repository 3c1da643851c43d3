"""The PRG and the Shamir shares, against independent checks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedx.errors import MaskingError
from fedx.secagg import prg, sharing

T = 1032193


def test_prg_is_deterministic_separated_by_context_and_in_range():
    seed = os.urandom(32)
    a = prg.expand(seed, 10_000, T, b"self")
    np.testing.assert_array_equal(a, prg.expand(seed, 10_000, T, b"self"))
    b = prg.expand(seed, 10_000, T, b"pair")
    assert np.mean(a == b) < 0.001
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < T
    assert a.max() > T * 0.99 and a.min() < T * 0.01


def test_prg_is_chacha20_words_mod_t():
    seed = bytes(range(32))
    key = prg.derive(seed, b"fedx-secagg/prg/chacha20/v1\0" + b"self")
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(80))
    want = [int.from_bytes(stream[8 * i:8 * i + 8], "little") % T for i in range(10)]
    assert prg.expand(seed, 10, T, b"self").tolist() == want


def test_prg_refuses_a_short_seed():
    with pytest.raises(MaskingError, match="32 bytes"):
        prg.expand(b"short", 4, T, b"self")


def test_any_threshold_of_shares_rebuilds_and_fewer_do_not():
    for size in (16, 32):
        secret = os.urandom(size)
        shares = sharing.split(secret, 3, [1, 2, 3, 4, 5])
        assert all(len(s) == 2 + size for s in shares.values())
        assert sharing.combine([shares[5], shares[2], shares[4]], 3, "test", size) == secret
        with pytest.raises(MaskingError, match="2 shares cannot rebuild a 3-of-n"):
            sharing.combine([shares[1], shares[2]], 3, "test", size)
        with pytest.raises(MaskingError, match="repeated"):
            sharing.combine([shares[1], shares[1], shares[2]], 3, "test", size)
