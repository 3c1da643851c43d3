"""Seeds to masks: a deterministic, cryptographic expansion of a 16- or 32-byte seed into integers mod t.

The keystream is ChaCha20 (from ``cryptography``, i.e. OpenSSL) under a key derived from the seed and a
context by HKDF-SHA256, so one seed never yields the same stream for two purposes. Each mask value is a
little-endian 64-bit word of the stream reduced mod t. Reduction of a uniform 64-bit word is off uniform
by at most ``t / 2**64`` in statistical distance per value (about 6e-14 for t of 20 bits), so 10^6 values
are within 6e-8 of uniform: the mask hides the update as a one-time pad mod t does.

Not numpy's generators: PCG64 and Philox are fast and well distributed but not cryptographic (PCG64's
state can be recovered from its output), and Flower's SecAgg+ seeds ``RandomState`` with 32 bits, which a
server can search exhaustively.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import MaskingError

SEED_BYTES = 32
SEED_SIZES = (16, 32)  # self-mask seeds are 16 bytes, pairwise seeds 32
_NONCE = bytes(16)  # ChaCha20 counter and nonce; the key is fresh for every (seed, context)


def derive(secret: bytes, info: bytes, length: int = SEED_BYTES) -> bytes:
    """HKDF-SHA256 of ``secret`` for the purpose named by ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def expand(seed: bytes, n: int, modulus: int, context: bytes) -> np.ndarray:
    """``n`` pseudo-random integers in ``[0, modulus)`` (int64) from a 16- or 32-byte ``seed``, for ``context``.

    Raises
    ------
    MaskingError
        A seed that is not 16 or 32 bytes, or a modulus that does not fit.
    """
    if not isinstance(seed, bytes) or len(seed) not in SEED_SIZES:
        raise MaskingError(f"a mask seed must be 16 or 32 bytes, got {type(seed).__name__} of length "
                           f"{len(seed) if isinstance(seed, bytes) else '?'}")
    if not 2 <= modulus < 2**62 or n < 0:
        raise MaskingError(f"cannot expand a mask of {n} values mod {modulus}")
    key = derive(seed, b"fedx-secagg/prg/chacha20/v1\0" + context)
    stream = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor().update(bytes(8 * n))
    words = np.frombuffer(stream, dtype="<u8")
    return (words % np.uint64(modulus)).astype(np.int64)
