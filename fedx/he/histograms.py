"""Encrypted histograms: per-bucket sums of another party's encrypted per-row values, many per ciphertext.

The owner of a :class:`~fedx.he.vectors.VectorKey` encrypts two per-row vectors as one complex vector
``c = g + i h`` (:func:`encrypt_pair`; rows in the slots, padded to whole ciphertexts). The evaluating party
holds a 0/1 matrix ``M`` (buckets x rows: which rows fall in which bucket, e.g. the bins of its features in a
tree node) and returns ``M c``: every bucket's sum of ``g`` (real part) and of ``h`` (imaginary part), up to
``P`` buckets per ciphertext (``P`` a power of two, at most the 4096 slots).

The product is the diagonal method for a ``P x S`` matrix (``S`` slots), with baby and giant steps:
``M c = fold(sum_d diag_d * rot(c, d))`` where ``diag_d[j] = M[j mod P, j + d]``. Only the diagonals that hold
a 1 are multiplied, so a block costs at most one plaintext product per row and chunk, and about
``sqrt(P) + log2(S / P)`` rotations. The fold over the ``S / P`` stripes adds every stripe, so each slot ends
with a complete bucket total (slot ``j`` holds bucket ``j mod P``): no partial sum over a subset of a bucket's
rows is left anywhere in the ciphertext. :meth:`decrypt_blocks` checks that every stripe holds the same totals.

The baby-step rotations of ``c`` are made once per encrypted vector (:class:`HistogramEvaluator`) and serve
every block of every level of a tree. Results are re-randomised with an encryption of zero under the owner's
public key. Rotations use the owner's Galois keys of the power-of-two steps (those of :mod:`fedx.he.vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tenseal import sealapi

from ..errors import BlobError, HEError
from .seal import _scratch
from .vectors import (
    SLOT_SPREAD,
    VECTOR_SCALE,
    VectorEvaluator,
    VectorKey,
    _chunks,
    _engine,
    _ones,
    _pack_parts,
    _unpack_parts,
    slot_count,
)

__all__ = ["HistogramEvaluator", "block_width", "decrypt_blocks", "encrypt_pair"]

#: Most baby-step rotations kept in memory per encrypted vector (chunks x baby steps).
MAX_BABY_CIPHERTEXTS = 256


def block_width(buckets: int) -> int:
    """Buckets per ciphertext for ``buckets`` in all: the next power of two, at most the slot count."""
    return int(min(slot_count(), 1 << max(0, int(buckets - 1).bit_length())))


def encrypt_pair(key: VectorKey, g: np.ndarray, h: np.ndarray) -> bytes:
    """``g + i h`` (two real per-row vectors of the same length) under ``key``, padded to whole ciphertexts."""
    g, h = np.asarray(g, dtype=np.float64), np.asarray(h, dtype=np.float64)
    if g.ndim != 1 or g.shape != h.shape or not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
        raise HEError("pair encryption: expected two finite 1-D arrays of the same length")
    eng = _engine()
    parts = []
    for row in [*_chunks(g + 1j * h), np.zeros(slot_count(), dtype=np.complex128)]:
        pt = sealapi.Plaintext()
        eng.encoder.encode(row.tolist(), VECTOR_SCALE, pt)
        parts.append(_scratch.save(key._encryptor.encrypt_symmetric(pt)))
    return _pack_parts("vector", parts, rows=int(g.shape[0]))


def decrypt_blocks(key: VectorKey, data: bytes | memoryview, counts: Sequence[int], width: int,
                   where: str = "encrypted histograms") -> np.ndarray:
    """The bucket totals of :meth:`HistogramEvaluator.block_sums` blobs: ``(sum(counts), 2)`` (g sums, h sums).

    Raises
    ------
    BlobError
        A ciphertext whose stripes differ (not folded over every slot), or the wrong number of ciphertexts.
    """
    _, parts = _unpack_parts(data, "sums", where)
    if len(parts) != len(counts):
        raise BlobError(f"{where}: {len(parts)} ciphertexts, expected {len(counts)}")
    eng = _engine()
    out = []
    for i, (part, count) in enumerate(zip(parts, counts)):
        ct = eng.load(part, f"{where}, ciphertext {i}", summed=True)
        pt = sealapi.Plaintext()
        key._decryptor.decrypt(ct, pt)
        slots = np.asarray(eng.encoder.decode_complex(pt)).reshape(-1, width)
        spread = np.max(np.abs(slots - slots[0]))
        if spread > SLOT_SPREAD * (np.max(np.abs(slots)) + 1.0):
            raise BlobError(f"{where}, ciphertext {i}: its stripes hold different totals (spread {spread:.3g}); the "
                            f"sums were not folded over every slot")
        out.append(slots.mean(axis=0)[:count])
    totals = np.concatenate(out) / (1.0 + key._bias) if out else np.zeros(0, dtype=np.complex128)
    return np.stack([totals.real, totals.imag], axis=1)


class HistogramEvaluator:
    """The evaluating party's side for one encrypted pair vector (one tree): bucket sums, block by block.

    Parameters
    ----------
    evaluator : VectorEvaluator
        Built from the owner's public vector context.
    vector : bytes
        The owner's :func:`encrypt_pair` blob.
    rows : int
        The rows it must cover.
    """

    def __init__(self, evaluator: VectorEvaluator, vector: bytes | memoryview, rows: int,
                 where: str = "encrypted gradients") -> None:
        self._ev = evaluator
        self._cts = evaluator.load_vector(vector, rows, where)
        self.rows = rows
        self._baby: dict[int, list[list[Any]]] = {}

    def _babies(self, step: int) -> list[list[Any]]:
        """``rot(c, b)`` for ``b < step`` of every chunk (made once per baby-step size)."""
        if step not in self._baby:
            eng = _engine()
            out = []
            for ct in self._cts[:-1]:
                row = [ct]
                for _ in range(1, step):
                    nxt = sealapi.Ciphertext()
                    eng.evaluator.rotate_vector(row[-1], 1, self._ev._galois, nxt)
                    row.append(nxt)
                out.append(row)
            self._baby[step] = out
        return self._baby[step]

    def block_sums(self, blocks: Sequence[tuple[np.ndarray, np.ndarray]], width: int) -> bytes:
        """``M c`` of each block: ``(rows, buckets)`` index pairs, each bucket in ``[0, width)``.

        Returns one ciphertext per block, each slot ``j`` holding the total of bucket ``j mod width``.
        """
        S = slot_count()
        if width < 1 or width > S or width & (width - 1):
            raise HEError(f"encrypted histograms: block width {width} is not a power of two up to {S}")
        chunks = len(self._cts) - 1
        baby = 1 << (int(np.sqrt(width)).bit_length() - 1) if width > 1 else 1
        while chunks * baby > MAX_BABY_CIPHERTEXTS and baby > 1:
            baby //= 2
        eng = _engine()
        parts = []
        for rows, buckets in blocks:
            rows = np.asarray(rows, dtype=np.int64)
            buckets = np.asarray(buckets, dtype=np.int64)
            if rows.shape != buckets.shape or (rows.size and (rows.min() < 0 or rows.max() >= self.rows
                                                              or buckets.min() < 0 or buckets.max() >= width)):
                raise HEError("encrypted histograms: row or bucket indices out of range")
            parts.append(_scratch.save(self._block(rows, buckets, width, baby, eng)))
        return _pack_parts("sums", parts, count=len(parts), width=width)

    def _block(self, rows: np.ndarray, buckets: np.ndarray, width: int, baby: int, eng: Any) -> Any:
        S = slot_count()
        chunk, slot = rows // S, rows % S
        d = (slot - buckets) % width            # the diagonal of each (row, bucket) pair
        j = (slot - d) % S                      # its position in that diagonal
        giant_of = d // baby
        babies = self._babies(baby) if rows.size else []
        acc = None
        for a in range(width // baby - 1, -1, -1):      # Horner over the giant steps: acc = rot(acc, baby) + Y_a
            sel = np.flatnonzero(giant_of == a)
            y = None
            if sel.size:
                key = chunk[sel] * width + d[sel]
                order = np.argsort(key, kind="stable")
                sel, key = sel[order], key[order]
                starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
                ends = np.r_[starts[1:], key.size]
                for s0, s1 in zip(starts, ends):
                    c, dd = int(chunk[sel[s0]]), int(d[sel[s0]])
                    diag = np.zeros(S)
                    diag[j[sel[s0:s1]]] = 1.0
                    pt = sealapi.Plaintext()
                    eng.encoder.encode(np.roll(diag, a * baby).tolist(), eng.top, VECTOR_SCALE, pt)
                    prod = sealapi.Ciphertext()
                    eng.evaluator.multiply_plain(babies[c][dd - a * baby], pt, prod)
                    if y is None:
                        y = prod
                    else:
                        eng.evaluator.add_inplace(y, prod)
                eng.evaluator.rescale_to_next_inplace(y)
            if acc is not None:
                rotated = sealapi.Ciphertext()
                eng.evaluator.rotate_vector(acc, baby, self._ev._galois, rotated)
                acc = rotated
                if y is not None:
                    eng.evaluator.add_inplace(acc, y)
            else:
                acc = y
        if acc is None:                                  # an empty block: an encryption of zeros
            acc = sealapi.Ciphertext()
            eng.evaluator.multiply_plain(self._cts[-1], _ones(), acc)
            eng.evaluator.rescale_to_next_inplace(acc)
        step = width
        while step < S:                                  # fold the stripes: every slot gets its bucket's total
            rotated = sealapi.Ciphertext()
            eng.evaluator.rotate_vector(acc, step, self._ev._galois, rotated)
            eng.evaluator.add_inplace(acc, rotated)
            step *= 2
        return self._ev._rerandomised(acc)
