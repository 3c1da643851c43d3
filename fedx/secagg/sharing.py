"""Shamir t-of-n shares of 16- or 32-byte secrets, with pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir``.

pycryptodome shares 16-byte secrets over GF(2^128); a 32-byte secret (an X25519 private key) is split
into two 16-byte blocks, each shared with the same indices, as Flower's SecAgg+ does. A share is
``index (2 bytes, big-endian)`` followed by one 16-byte share per block. Rebuilding costs one pure-Python
Lagrange interpolation per block, which dominates the server's time at large federations, so self-mask
seeds are 16 bytes (one block, 128-bit security like the rest of the protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

from Crypto.Protocol.SecretSharing import Shamir

from ..errors import MaskingError

BLOCK = 16
SECRET_SIZES = (16, 32)


def split(secret: bytes, threshold: int, indices: Sequence[int]) -> dict[int, bytes]:
    """Shares of a 16- or 32-byte ``secret``, any ``threshold`` of which rebuild it: one per index (1-based)."""
    if len(secret) not in SECRET_SIZES:
        raise MaskingError(f"a shared secret must be 16 or 32 bytes, got {len(secret)}")
    n = max(indices)
    if not 2 <= threshold <= len(indices) or min(indices) < 1 or len(set(indices)) != len(indices):
        raise MaskingError(f"cannot share {threshold}-of-{len(indices)} over indices {list(indices)}")
    blocks = [dict(Shamir.split(threshold, n, secret[i:i + BLOCK], ssss=False)) for i in range(0, len(secret), BLOCK)]
    return {idx: idx.to_bytes(2, "big") + b"".join(block[idx] for block in blocks) for idx in indices}


def share_bytes(secret_bytes: int) -> int:
    """The size of one share of a secret of ``secret_bytes`` bytes."""
    return 2 + secret_bytes


def combine(shares: Sequence[bytes], threshold: int, what: str, secret_bytes: int) -> bytes:
    """The ``secret_bytes``-byte secret from at least ``threshold`` shares of distinct indices.

    Raises
    ------
    MaskingError
        Too few shares, malformed shares, or repeated indices.
    """
    if len(shares) < threshold:
        raise MaskingError(f"{what}: {len(shares)} shares cannot rebuild a {threshold}-of-n secret")
    parsed: list[tuple[int, bytes]] = []
    for share in shares:
        if not isinstance(share, bytes) or len(share) != share_bytes(secret_bytes):
            raise MaskingError(f"{what}: a share must be {share_bytes(secret_bytes)} bytes")
        parsed.append((int.from_bytes(share[:2], "big"), share[2:]))
    if len({i for i, _ in parsed}) != len(parsed) or any(i < 1 for i, _ in parsed):
        raise MaskingError(f"{what}: shares with repeated or invalid indices")
    chosen = parsed[:threshold]
    return b"".join(Shamir.combine([(i, s[b:b + BLOCK]) for i, s in chosen], ssss=False)
                    for b in range(0, secret_bytes, BLOCK))
