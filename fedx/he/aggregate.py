"""The server's side: sum blobs under the public context, streaming, without ever decrypting."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from ..errors import HEError, KeyFileError
from . import seal
from .blob import BlobHeader, pack_blob, unpack_blob
from .keys import PublicContext, SecretContext

log = logging.getLogger(__name__)


def aggregate(public: PublicContext | SecretContext, blobs: Iterable[bytes]) -> bytes:
    """Sum encrypted blobs into one aggregate blob, with no secret key.

    Blobs are read one at a time (a generator is fine) and added into a running accumulator, so memory
    does not grow with their number. Every blob is checked before any of it is added: format and checksum,
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
    acc: list[Any] = []
    seen: dict[str, int] = {}
    for i, blob in enumerate(blobs):
        what = f"blob {i}"
        header, chunks = unpack_blob(blob, what)
        header.check_context(preset, public.fingerprint, what)
        header.check_layout(preset, what)
        header.check_disjoint(seen, what)
        seen.update(dict.fromkeys(header.ids, i))
        if total is not None:
            header.check_same(total, what)
            header = _add(total, header)
        preset.check_capacity(header.kind, header.n_summed, header.bound, header.rho, what)
        for j, data in enumerate(chunks):
            ct = engine.load(data, header.kind, f"{what}, ciphertext {j}")
            if total is None:
                acc.append(ct)
            else:
                engine.add_inplace(acc[j], ct)
        total = header
        log.debug("he.aggregate: added %s (%d ciphertexts)", what, len(chunks))
    if total is None:
        raise HEError("he.aggregate got no blobs")
    out = [engine.save(ct) for ct in acc]
    return pack_blob(dataclasses.replace(total, stage="aggregate", chunk_sizes=tuple(len(c) for c in out)), out)


def _add(total: BlobHeader, header: BlobHeader) -> BlobHeader:
    """The header of ``total + header`` (plaintext fields only)."""
    return dataclasses.replace(total, weight=total.weight + header.weight, rho=total.rho + header.rho,
                               n_summed=total.n_summed + header.n_summed, ids=tuple(sorted(total.ids + header.ids)),
                               bound=total.bound + header.bound,
                               report=total.report.merge(header.report))
