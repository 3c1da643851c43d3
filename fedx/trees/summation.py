"""How the institutions' vectors (sketch counts, histograms) are summed: in plaintext, or under fedx.he.

Both are a ``Combine``: a callable from the institutions' float64 vectors to their sum. The encrypted one
runs the federation's steps in one process: each institution encrypts its vector (``kind="sum"``), the
server adds ciphertexts under the public context, and the institutions decrypt the total.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import HEError
from .engine import quantize

#: ``combine(vectors, exact=True)``: the sum of the institutions' vectors. ``exact`` says that every vector is
#: on the ``2**-quantum_bits`` grid (counts, histograms), so that the sum must come back exact; the moments
#: of the sketch are not, and need only float precision. ``what`` names the message (``gbdt-level-3``), for
#: the audit ledgers.
Combine = Callable[..., np.ndarray]


def plain_sum(vectors: Sequence[np.ndarray], exact: bool = True, what: str = "sum") -> np.ndarray:
    """The plaintext sum (exact for vectors on a common ``2**-bits`` grid)."""
    return np.sum(np.stack([np.asarray(v, dtype=np.float64) for v in vectors]), axis=0)


class PlainSum:
    """The plaintext sum, telling ``observe(what, messages, total)`` the bytes each institution sends."""

    def __init__(self, observe: Callable[[str, Sequence[bytes], bytes], None] | None = None) -> None:
        self.observe = observe

    def __call__(self, vectors: Sequence[np.ndarray], exact: bool = True, what: str = "sum") -> np.ndarray:
        arrays = [np.ascontiguousarray(v, dtype=np.float64) for v in vectors]
        total = plain_sum(arrays, exact)
        if self.observe is not None:
            self.observe(what, [a.tobytes() for a in arrays], total.tobytes())
        return total


class EncryptedSum:
    """Sum under homomorphic encryption with fedx.he, snapped back to the exact grid.

    Every vector the tree protocol sums is on the grid of multiples of ``2**-quantum_bits`` (counts, and
    the per-row rounded gradients and hessians). ``bfv-compact`` sums are exact fixed point at ``2**-24``,
    so they come back exact. ``ckks`` sums carry an error of at most ``n * 2^-27 + 2^-44 * sum(max|value|)``
    (docs/he-presets.md); while that stays below a quarter of the grid step, rounding to the grid recovers
    the exact sum. A larger error is refused, never rounded silently.

    Parameters
    ----------
    keys : fedx.he.KeySet
        The institutions' keys (the secret context encrypts and decrypts, the public one aggregates).
    quantum_bits : int
        The grid of the summed vectors.
    observe : callable, optional
        ``observe(what, blobs, total)`` after each sum: the institutions' blobs (in order) and the aggregate
        (for audit ledgers and byte counts).

    Attributes
    ----------
    bytes_up, bytes_down : int
        Bytes of every blob sent to the server, and of the aggregates sent back (one per institution).
    max_error : float
        Largest distance of a decrypted value from the grid, over every sum so far.
    """

    def __init__(self, keys: Any, quantum_bits: int,
                 observe: Callable[[str, Sequence[bytes], bytes], None] | None = None) -> None:
        self.keys = keys
        self.quantum_bits = quantum_bits
        self.observe = observe
        self.bytes_up = 0
        self.bytes_down = 0
        self.max_error = 0.0

    def __call__(self, vectors: Sequence[np.ndarray], exact: bool = True, what: str = "sum") -> np.ndarray:
        from .. import he

        blobs = [he.encrypt(self.keys.secret, [np.asarray(v, dtype=np.float64)], kind="sum") for v in vectors]
        total = he.aggregate(self.keys.public, blobs)
        if self.observe is not None:
            self.observe(what, blobs, total)
        self.bytes_up += sum(len(b) for b in blobs)
        self.bytes_down += len(total) * len(blobs)
        arrays, _ = he.decrypt(self.keys.secret, total)
        out = np.asarray(arrays[0], dtype=np.float64)
        if not exact:
            return out
        snapped = quantize(out, self.quantum_bits)
        error = float(np.max(np.abs(out - snapped))) if out.size else 0.0
        self.max_error = max(self.max_error, error)
        if error > 2.0 ** -(self.quantum_bits + 2):
            raise HEError(f"encrypted sum: a decrypted value lies {error:.3g} from the 2^-{self.quantum_bits} grid "
                          f"(more than a quarter step), so the exact sum cannot be recovered; lower "
                          f"quantum_bits or use bfv-compact")
        return snapped
