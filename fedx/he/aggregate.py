"""The server's side: sum blobs under the public context, streaming, without ever decrypting."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

from ..errors import HEError, KeyFileError
from . import seal, wire
from .blob import BlobHeader, pack_blob, unpack_blob
from .keys import PublicContext, SecretContext

log = logging.getLogger(__name__)


def aggregate(public: PublicContext | SecretContext, blobs: Iterable[bytes]) -> bytes:
    """Sum encrypted blobs into one aggregate blob, with no secret key.

    Blobs are read one at a time (a generator is fine) and added into a running accumulator: the ``c0``
    parts are added modulo the coefficient primes, and the seeds of ``c1`` are collected while they are
    smaller than ``c1`` itself, then expanded and added (:mod:`fedx.he.wire`). Memory is bounded by the
    larger of the two, not by the number of blobs. Every blob is checked before any of it is added: format and checksum,
    preset, parameters and key fingerprint against ``public``, and kind, names, shapes and dtypes against
    the first blob; the running sum is checked against the preset's capacity and noise budget.

    Parameters
    ----------
    public : PublicContext
        The server's context (a SecretContext is accepted and reduced to its public part).
    blobs : iterable of bytes
        Updates from :func:`fedx.he.encrypt`, or earlier aggregates.

    Returns
    -------
    bytes
        An aggregate blob for :func:`fedx.he.decrypt`: weights, rhos and clipping counts summed.

    Raises
    ------
    KeyMismatchError
        A blob under another preset, other parameters or other keys (the message names its index).
    BlobError
        A malformed, truncated or tampered blob; one that does not match the first (layout, or another
        ``total_weight``); or one holding an update that an earlier blob already holds (the same blob
        twice, or a re-serialized copy: each update carries a random id).
    CapacityError
        The sum could overflow or exhaust the noise budget; the message says which limit and what to change.
    """
    if isinstance(public, SecretContext):
        public = public.public
    if not isinstance(public, PublicContext):
        raise KeyFileError(f"he.aggregate needs a PublicContext (from he.load_public), got {type(public).__name__}")
    preset = public.preset
    engine = seal.engine(preset)
    total: BlobHeader | None = None
    acc: list[_Chunk] = []
    seen: dict[str, int] = {}
    for i, blob in enumerate(blobs):
        what = f"blob {i}"
        header, chunks = unpack_blob(blob, what)
        header.check_context(preset, public.fingerprint, what)
        header.check_layout(preset, what)
        header.check_disjoint(seen, what)
        seen.update(dict.fromkeys(header.ids, i))
        summed = header
        if total is not None:
            header.check_same(total, what)
            summed = _add(total, header)
        preset.check_capacity(summed.kind, summed.n_summed, summed.bound, summed.rho, what)
        kind = summed.kind
        primes = engine.primes(kind)
        n = preset.poly_modulus_degree
        # c1 stays a list of seeds while all the blobs carry seeds and the seeds are smaller than c1.
        poly = bool(acc) and acc[0].c1 is not None or header.c1 == "poly" or \
            wire.c1_mode(summed.n_summed, n, primes) == "poly"
        if not acc:
            acc = [_Chunk(np.zeros((len(primes), n), np.uint64)) for _ in chunks]
        modulus = np.array(primes, np.uint64)[:, None]
        for j, data in enumerate(chunks):
            where = f"{what}, ciphertext {j}"
            c0, c1 = wire.split_chunk(data, n, primes, header.c1, header.n_summed, where)
            slot = acc[j]
            slot.c0 = _add_mod(slot.c0, c0, modulus)
            if isinstance(c1, list):
                slot.seeds.extend(c1)
            else:
                slot.add_poly(c1, modulus)
            if poly and slot.seeds:
                slot.add_poly(engine.expand(slot.seeds, kind, where), modulus)
                slot.seeds = []
        total = summed
        log.debug("he.aggregate: added %s (%d ciphertexts)", what, len(chunks))
    if total is None:
        raise HEError("he.aggregate got no blobs")
    primes = engine.primes(total.kind)
    mode = "poly" if acc and acc[0].c1 is not None else "seeds"
    out = [wire.pack_poly(a.c0, primes) + (b"".join(a.seeds) if mode == "seeds" else wire.pack_poly(a.c1, primes))
           for a in acc]
    return pack_blob(dataclasses.replace(total, stage="aggregate", c1=mode, chunk_sizes=tuple(len(c) for c in out)),
                     out)


class _Chunk:
    """The running sum of one ciphertext: ``c0``, and ``c1`` as seeds still to expand or as a polynomial."""

    def __init__(self, c0: np.ndarray) -> None:
        self.c0 = c0
        self.seeds: list[bytes] = []
        self.c1: np.ndarray | None = None

    def add_poly(self, c1: np.ndarray, modulus: np.ndarray) -> None:
        self.c1 = c1.copy() if self.c1 is None else _add_mod(self.c1, c1, modulus)


def _add_mod(a: np.ndarray, b: np.ndarray, modulus: np.ndarray) -> np.ndarray:
    """``(a + b) mod q`` per prime row, for coefficients below primes of at most 61 bits."""
    s = a + b
    return np.where(s >= modulus, s - modulus, s)


def _add(total: BlobHeader, header: BlobHeader) -> BlobHeader:
    """The header of ``total + header`` (plaintext fields only)."""
    return dataclasses.replace(total, weight=total.weight + header.weight, rho=total.rho + header.rho,
                               n_summed=total.n_summed + header.n_summed, ids=tuple(sorted(total.ids + header.ids)),
                               bound=total.bound + header.bound,
                               report=total.report.merge(header.report))
