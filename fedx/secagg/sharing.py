"""Shamir t-of-n shares of 32-byte secrets, with pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir``.

pycryptodome shares 16-byte secrets over GF(2^128); a 32-byte secret is split into two 16-byte blocks,
each shared with the same indices, as Flower's SecAgg+ does. A share is ``index (2 bytes, big-endian)``
followed by one 16-byte share per block.
"""

from __future__ import annotations

from collections.abc import Sequence

from Crypto.Protocol.SecretSharing import Shamir

from ..errors import MaskingError

BLOCK = 16
SECRET_BYTES = 32
SHARE_BYTES = 2 + SECRET_BYTES


def split(secret: bytes, threshold: int, indices: Sequence[int]) -> dict[int, bytes]:
    """Shares of a 32-byte ``secret``, any ``threshold`` of which rebuild it: one per index (1-based)."""
    if len(secret) != SECRET_BYTES:
        raise MaskingError(f"a shared secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    n = max(indices)
    if not 2 <= threshold <= len(indices) or min(indices) < 1 or len(set(indices)) != len(indices):
        raise MaskingError(f"cannot share {threshold}-of-{len(indices)} over indices {list(indices)}")
    blocks = [dict(Shamir.split(threshold, n, secret[i:i + BLOCK], ssss=False)) for i in range(0, SECRET_BYTES, BLOCK)]
    return {idx: idx.to_bytes(2, "big") + b"".join(block[idx] for block in blocks) for idx in indices}


def combine(shares: Sequence[bytes], threshold: int, what: str) -> bytes:
    """The secret from at least ``threshold`` shares of distinct indices.

    Raises
    ------
    MaskingError
        Too few shares, malformed shares, or repeated indices.
    """
    if len(shares) < threshold:
        raise MaskingError(f"{what}: {len(shares)} shares cannot rebuild a {threshold}-of-n secret")
    parsed: list[tuple[int, bytes]] = []
    for share in shares:
        if not isinstance(share, bytes) or len(share) != SHARE_BYTES:
            raise MaskingError(f"{what}: a share must be {SHARE_BYTES} bytes")
        parsed.append((int.from_bytes(share[:2], "big"), share[2:]))
    if len({i for i, _ in parsed}) != len(parsed) or any(i < 1 for i, _ in parsed):
        raise MaskingError(f"{what}: shares with repeated or invalid indices")
    chosen = parsed[:threshold]
    return b"".join(Shamir.combine([(i, s[b:b + BLOCK]) for i, s in chosen], ssss=False)
                    for b in range(0, SECRET_BYTES, BLOCK))
