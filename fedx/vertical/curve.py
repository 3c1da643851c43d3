"""X25519 blinding for ECDH-PSI, in batches of concatenated 32-byte u-coordinates.

Ids are hashed straight to a u-coordinate with a keyed BLAKE2b (keyed by the run secret): X25519 is
twist-secure (RFC 7748), so any 32 bytes are a valid input and no hash-to-curve map is needed. Blinding is
the X25519 function itself, ``X25519(k, u)``; it commutes, ``X25519(a, X25519(b, u)) == X25519(b, X25519(a,
u))``, because clamped scalars are multiples of the cofactor. A party's scalar never leaves it.

Two implementations of the same RFC 7748 function: libsodium's ``crypto_scalarmult`` through PyNaCl (the
faster, used when installed) and OpenSSL's through ``cryptography``. Batches are split across worker
processes when ``workers > 1``.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..errors import PSIError

POINT = 32
BACKENDS = ("nacl", "cryptography")
_MIN_CHUNK = 4096
_POOLS: dict[int, ProcessPoolExecutor] = {}


def available_backends() -> list[str]:
    """The X25519 implementations importable here, fastest first."""
    found = []
    try:
        import nacl.bindings  # noqa: F401

        found.append("nacl")
    except ImportError:
        pass
    found.append("cryptography")
    return found


def resolve_backend(backend: str) -> str:
    """``auto`` picks the fastest installed implementation; a named one must be installed."""
    have = available_backends()
    if backend == "auto":
        return have[0]
    if backend not in BACKENDS:
        raise PSIError(f"unknown X25519 backend {backend!r}; expected one of {('auto', *BACKENDS)}")
    if backend not in have:
        raise PSIError(f"X25519 backend {backend!r} is not installed (pip install pynacl)")
    return backend


def new_scalar() -> bytes:
    """A fresh secret blinding scalar (32 random bytes; X25519 clamps it)."""
    return os.urandom(32)


def subkey(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the run secret (BLAKE2b, domain-separated)."""
    return hashlib.blake2b(purpose.encode(), key=secret, digest_size=32, person=b"fedx-psi-subkey").digest()


def keyed_hashes(keys: list[bytes], secret: bytes, purpose: str, size: int) -> bytes:
    """Concatenated keyed BLAKE2b digests of ``size`` bytes, one per key, for one purpose."""
    k = subkey(secret, purpose)
    blake2b = hashlib.blake2b
    return b"".join([blake2b(v, key=k, digest_size=size).digest() for v in keys])


def hash_to_u(keys: list[bytes], secret: bytes) -> bytes:
    """Each id's X25519 input: its keyed hash under the run secret, as a 32-byte u-coordinate."""
    return keyed_hashes(keys, secret, "hash-to-u", POINT)


def _mul_chunk(backend: str, scalar: bytes, data: bytes) -> bytes:
    n = len(data) // POINT
    try:
        if backend == "nacl":
            from nacl.bindings import crypto_scalarmult

            return b"".join([crypto_scalarmult(scalar, data[i:i + POINT]) for i in range(0, n * POINT, POINT)])
        from cryptography.hazmat.primitives.asymmetric.x25519 import (
            X25519PrivateKey,
            X25519PublicKey,
        )

        key = X25519PrivateKey.from_private_bytes(scalar)
        load = X25519PublicKey.from_public_bytes
        return b"".join([key.exchange(load(data[i:i + POINT])) for i in range(0, n * POINT, POINT)])
    except (ValueError, RuntimeError) as exc:  # a low-order point gives the all-zero output, which both refuse
        raise PSIError("a blinded value is a low-order point (a malformed or hostile message)") from exc


def _pool(workers: int) -> ProcessPoolExecutor:
    """The worker processes for blinding (started on first use, kept for later batches)."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers,
                                                     mp_context=multiprocessing.get_context("spawn"))
    return pool


@atexit.register
def shutdown_workers() -> None:
    """Stop the blinding worker processes (also done at interpreter exit)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True)


def scalar_mult(scalar: bytes, points: bytes, *, backend: str = "auto", workers: int = 1) -> bytes:
    """``X25519(scalar, u)`` for every 32-byte ``u`` in ``points``, concatenated in the same order.

    Parameters
    ----------
    scalar : bytes
        The party's 32-byte secret.
    points : bytes
        Concatenated u-coordinates; the length must be a multiple of 32.
    backend : str
        ``auto``, ``nacl`` or ``cryptography`` (identical results).
    workers : int
        Worker processes for large batches; 1 computes in this process.
    """
    if len(points) % POINT:
        raise PSIError(f"a batch of blinded values has {len(points)} bytes; expected a multiple of {POINT}")
    name = resolve_backend(backend)
    n = len(points) // POINT
    if workers <= 1 or n < 2 * _MIN_CHUNK:
        return _mul_chunk(name, scalar, points)
    parts = max(workers * 4, 1)
    step = max(_MIN_CHUNK, -(-n // parts)) * POINT
    chunks = [points[i:i + step] for i in range(0, len(points), step)]
    out = _pool(workers).map(_mul_chunk, [name] * len(chunks), [scalar] * len(chunks), chunks)
    return b"".join(out)


def as_rows(data: bytes, width: int) -> np.ndarray:
    """View concatenated values of ``width`` bytes as a 1-D array of opaque items (sortable, comparable)."""
    return np.frombuffer(data, dtype=np.dtype((np.void, width)))


def truncate(points: bytes, width: int) -> bytes:
    """Keep the first ``width`` bytes of each 32-byte value (enough to compare, not to blind again)."""
    return np.frombuffer(points, dtype=np.uint8).reshape(-1, POINT)[:, :width].tobytes()
