"""Homomorphic encryption of model updates and statistics: the only package of fedx that imports TenSEAL.

The institutions hold the secret key; the server holds a public context with no key at all, adds
ciphertexts it cannot read, and never decrypts.

>>> from fedx import he
>>> keys = he.keygen("bfv-compact")                           # doctest: +SKIP
>>> blob = he.encrypt(keys.secret, arrays, weight=n)          # doctest: +SKIP
>>> blob = he.encrypt(keys.secret, arrays, weight=n, total_weight=total)   # doctest: +SKIP
>>> agg = he.aggregate(keys.public, [blob1, blob2])           # doctest: +SKIP
>>> mean, weight = he.decrypt(keys.secret, agg)               # doctest: +SKIP

Both calls of ``encrypt`` give the weighted mean; ``total_weight`` (the sum of the round's weights)
lets many more clients fit a bfv-compact sum. Each update carries a random id, and ``aggregate``
refuses the same update twice.

Presets (:data:`PRESETS`): ``bfv-compact`` (quantized, seeded symmetric ciphertexts, about 4 bytes per
parameter up and down for 10 institutions; its moduli follow from ``max_clients``) and ``ckks`` (floats,
N=8192). See docs/he-presets.md.
"""

from __future__ import annotations

from .aggregate import aggregate
from .blob import BlobHeader
from .codec import decrypt, encrypt, inspect, noise_budget
from .describe import describe
from .encoding import EncodingReport
from .keys import (
    KeySet,
    PublicContext,
    SecretContext,
    fingerprint_text,
    keygen,
    load_keys,
    load_public,
    load_secret,
    public_context,
    secret_context,
)
from .schemes import KINDS, PRESETS, BfvPreset, CkksPreset, Kind, Precision, Preset, get_preset

__all__ = [
    "KINDS", "PRESETS", "BfvPreset", "BlobHeader", "CkksPreset", "EncodingReport", "KeySet", "Kind", "Precision",
    "Preset", "PublicContext", "SecretContext", "aggregate", "decrypt", "describe", "encrypt", "fingerprint_text",
    "get_preset", "inspect", "keygen", "load_keys", "load_public", "load_secret", "noise_budget", "public_context",
    "secret_context",
]
