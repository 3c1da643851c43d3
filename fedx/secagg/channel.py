"""Key agreement and authenticated encryption between two institutions, with ``cryptography``.

X25519 gives two institutions the same 32-byte secret from one's private key and the other's public key.
HKDF-SHA256 turns it into a key for one purpose (a pairwise mask seed, or the key of their share channel),
bound to the run, the round and the pair. Shares travel under AES-256-GCM with that channel key; the
associated data names run, round, sender and recipient, so the server that relays them can neither read
them nor move one to another pair or round without the recipient noticing.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import MaskingError
from .prg import derive

KEY_BYTES = 32
NONCE_BYTES = 12


def new_private() -> X25519PrivateKey:
    """A fresh X25519 private key (one per purpose, run and round)."""
    return X25519PrivateKey.generate()


def public_bytes(private: X25519PrivateKey) -> bytes:
    """The 32-byte public key of ``private``."""
    return private.public_key().public_bytes_raw()


def private_bytes(private: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``private`` (what is Shamir-shared for a mask key)."""
    return private.private_bytes_raw()


def load_private(data: bytes, what: str) -> X25519PrivateKey:
    """An X25519 private key from 32 raw bytes."""
    try:
        return X25519PrivateKey.from_private_bytes(data)
    except ValueError:
        raise MaskingError(f"{what}: not an X25519 private key") from None


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes, what: str) -> bytes:
    """A 32-byte key that ``private``'s owner and the owner of ``peer_public`` both derive, for ``info``."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise MaskingError(f"{what}: not a valid X25519 public key") from None
    return derive(shared, info, KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption: a random 12-byte nonce, then ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, data: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt and authenticate what :func:`seal` made.

    Raises
    ------
    MaskingError
        Tampered with, truncated, or sealed for another pair, run or round.
    """
    if len(data) < NONCE_BYTES + 16:
        raise MaskingError(f"{what} is truncated")
    try:
        return AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
    except InvalidTag:
        raise MaskingError(f"{what} fails authentication: tampered with, or sealed for another pair or round") from None
