"""Named arrays to one encrypted blob and back: :func:`encrypt`, :func:`decrypt`, :func:`inspect`.

``encrypt`` takes a list or a dict of arrays (any shapes, including 0-d and empty) and a weight. For
``kind="mean"`` it sends ``rho * arrays`` with ``rho = weight / total_weight``, or ``rho = weight`` when
no total weight is given (the total is then known only after aggregation); ``decrypt`` of an aggregate
returns ``sum(rho_i * a_i) / sum(rho_i)``, the weighted mean, and ``sum(weight_i)``. Both ways give the
same weighted mean; the blobs of one sum must all be made the same way (``he.aggregate`` checks that
``rho / weight`` agrees). For ``kind="sum"`` the arrays are summed as they are (statistics).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from ..errors import BlobError, CapacityError, HEError, KeyFileError
from .blob import DTYPES, VERSION, BlobHeader, new_id, pack_blob, unpack_blob
from .keys import SecretContext
from .schemes import KINDS, Kind

log = logging.getLogger(__name__)

Arrays: TypeAlias = list[np.ndarray] | dict[str, np.ndarray]


def encrypt(secret: SecretContext, arrays: Sequence[Any] | Mapping[str, Any], weight: float = 1.0,
            total_weight: float | None = None, kind: Kind = "mean", value_bound: float | None = None) -> bytes:
    """Encrypt named arrays into one blob, under the institutions' secret context.

    Parameters
    ----------
    secret : SecretContext
        The institutions' keys.
    arrays : list or dict of array-like
        Bool, integer or float arrays of any shapes; NaN and infinite values are refused.
    weight : float
        This client's weight (for example its number of samples); it travels in plaintext.
    total_weight : float, optional
        Sum of the weights of the clients in the round (``kind="mean"`` only); the blob carries
        ``rho = weight / total_weight``, so the rhos of a round sum to 1 and many clients fit. Without it
        the blob carries ``rho = weight``: the aggregate still decrypts to the weighted mean, but the
        summed weights must fit the preset's range (bfv-compact at 16 bits: a sum of weights of at
        most 16.38 with the default max_clients 16), and a weight beyond it is refused with a
        CapacityError naming ``total_weight``.
    kind : {"mean", "sum"}
        Weighted mean of model updates, or plain sum of statistics.
    value_bound : float, optional
        A public bound on every |value|. With it, nothing in the header depends on the values: the
        capacity bound is derived from it, values beyond it are clipped, and the clipping and rounding
        report is replaced by the data-independent worst case (the real one is only logged here).
        Differential privacy needs this, since the server reads headers.

    Returns
    -------
    bytes
        The blob: a header readable by :func:`inspect`, and seeded ciphertexts.

    Raises
    ------
    KeyFileError
        ``secret`` is not a secret context.
    BlobError
        Malformed arrays, NaN/Inf, or a weight that gives rho > 1.
    CapacityError
        Values that the preset cannot hold, or a weight too large without ``total_weight``.
    """
    key = _require_secret(secret, "he.encrypt")
    header, rows = encode_update(key, arrays, weight, total_weight, kind, value_bound, "he.encrypt")
    chunks = key.seal_key.encrypt(rows, kind)
    return pack_blob(dataclasses.replace(header, chunk_sizes=tuple(len(c) for c in chunks)), chunks)


def encode_update(key: SecretContext, arrays: Sequence[Any] | Mapping[str, Any], weight: float = 1.0,
                  total_weight: float | None = None, kind: Kind = "mean", value_bound: float | None = None,
                  where: str = "he.encrypt") -> tuple[BlobHeader, np.ndarray]:
    """Everything of :func:`encrypt` but the encryption: the update's header (no chunk sizes yet) and its
    encoded slot rows. Masking (:mod:`fedx.he.masked`) adds masks to the rows before it encrypts them.

    Parameters and errors are those of :func:`encrypt`; ``where`` names the caller in messages.
    """
    if kind not in KINDS:
        raise HEError(f"kind must be one of {KINDS}, got {kind!r}")
    weight = _positive(weight, "weight")
    if kind == "sum":
        if total_weight is not None:
            raise HEError("total_weight applies to kind='mean' only; kind='sum' adds the arrays unweighted")
        rho = 1.0
    else:
        total = 1.0 if total_weight is None else _positive(total_weight, "total_weight")
        rho = weight / total
        if total_weight is not None and rho > 1.0:
            raise BlobError(f"weight {weight:g} exceeds total_weight {total:g} (rho = {rho:.4g} > 1): total_weight "
                            f"must be the sum of the weights of the clients in the round")
    names, shapes, dtypes, flat = _flatten(arrays)
    preset = key.preset
    if value_bound is not None:
        vb = _positive(value_bound, "value_bound")
        over = int(np.count_nonzero(np.abs(flat) > vb))
        if over:
            log.warning("%s: clipped %d of %d values to value_bound %.4g", where, over, flat.size, vb)
        flat = np.clip(flat, -vb, vb)
    encoded = preset.encode(kind, flat, rho)
    if value_bound is not None:
        encoded = preset.public_encoding(encoded, kind, rho, vb)
    per_weight = encoded.bound / rho  # the slot magnitude that one unit of weight takes
    if kind == "mean" and total_weight is None and encoded.bound > preset.capacity(kind) >= per_weight:
        raise CapacityError(f"{where}: without total_weight a blob carries weight * values, so that the "
                            f"aggregate decrypts to the weighted mean; weight={weight:g} needs |slot| up to "
                            f"{encoded.bound:.6g} > {preset.capacity(kind):.6g}, the most {preset.name} holds, so "
                            f"the weights of one sum may add up to at most {preset.capacity(kind) / per_weight:.4g}. "
                            f"Pass total_weight (the sum of the weights of the clients in the round), or scale the "
                            f"weights down")
    preset.check_capacity(kind, 1, encoded.bound, rho, where)
    report = encoded.report
    if report.clipped:
        log.warning("%s: clipped %d of %d values to the clip range (largest |value| %.4g); raise he.clip if "
                    "this is frequent", where, report.clipped, report.values, report.max_abs)
    if report.zeroed:
        log.info("%s: %d non-zero values rounded to zero (rho = %.3g)", where, report.zeroed, rho)
    header = BlobHeader(version=VERSION, preset=preset.name, params=preset.params_hash, fingerprint=key.fingerprint,
                        stage="update", kind=kind, names=names, shapes=shapes, dtypes=dtypes, weight=weight, rho=rho,
                        n_summed=1, ids=(new_id(),), bound=encoded.bound, scale=encoded.scale, report=report,
                        chunk_sizes=())
    return header, encoded.rows


def decrypt(secret: SecretContext, blob: bytes) -> tuple[Arrays, float]:
    """Decrypt a blob (usually an aggregate) with the institutions' secret context.

    Returns
    -------
    arrays, weight
        For ``kind="mean"`` the weighted mean, for ``kind="sum"`` the sum, in the structure that was
        encrypted (list or dict, same keys, order and shapes); and the summed weight. Float arrays keep
        their dtype; integer arrays come back as float64 from a mean, and as exact int64 from a BFV sum.

    Raises
    ------
    KeyFileError
        ``secret`` is not a secret context (a public context cannot decrypt).
    KeyMismatchError
        The blob was made under other keys or parameters.
    BlobError, CapacityError
        A malformed blob, or a sum beyond the preset's limits.
    """
    key = _require_secret(secret, "he.decrypt")
    preset = key.preset
    header, chunks = unpack_blob(blob)
    header.check_context(preset, key.fingerprint, "blob")
    header.check_layout(preset, "blob")
    preset.check_capacity(header.kind, header.n_summed, header.bound, header.rho, "blob")
    if header.kind == "mean" and header.rho <= 0.0:
        raise BlobError("blob: its rhos sum to 0, so it holds no weighted mean")
    rows = key.seal_key.decrypt(chunks, header.kind, header.c1, header.n_summed, "blob")
    flat = preset.decode(header.kind, rows, header.n_values, header.rho)
    if header.report.clipped:
        log.info("he.decrypt: the %d blobs summed include %d clipped values", header.n_summed, header.report.clipped)
    return _unflatten(header, flat, exact_ints=preset.exact_sums and header.kind == "sum"), header.weight


def inspect(blob: bytes) -> BlobHeader:
    """The checked header of a blob; needs no key.

    Raises
    ------
    BlobError
        Empty, foreign, truncated, tampered with, or malformed.
    """
    return unpack_blob(blob)[0]


def noise_budget(secret: SecretContext, blob: bytes) -> int:
    """The smallest remaining invariant noise budget (bits) over a BFV blob's ciphertexts; 0 means garbage."""
    key = _require_secret(secret, "he.noise_budget")
    header, chunks = unpack_blob(blob)
    header.check_context(key.preset, key.fingerprint, "blob")
    header.check_layout(key.preset, "blob")
    return key.seal_key.noise_budget(chunks, header.kind, header.c1, header.n_summed, "blob")


def _require_secret(secret: Any, who: str) -> SecretContext:
    if not isinstance(secret, SecretContext):
        raise KeyFileError(f"{who} needs the institutions' SecretContext (from he.keygen or he.load_secret), got "
                           f"{type(secret).__name__}; the server's public context cannot encrypt or decrypt")
    return secret


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BlobError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise BlobError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _flatten(arrays: Sequence[Any] | Mapping[str, Any]) -> tuple[tuple[str, ...] | None, tuple[tuple[int, ...], ...],
                                                                tuple[str, ...], np.ndarray]:
    if isinstance(arrays, Mapping):
        names: tuple[str, ...] | None = tuple(arrays)
        if not all(isinstance(n, str) for n in names):
            raise BlobError("the keys of an arrays dict must be strings")
        items, labels = list(arrays.values()), [repr(n) for n in names]
    elif isinstance(arrays, (list, tuple)):
        names, items, labels = None, list(arrays), [f"#{i}" for i in range(len(arrays))]
    else:
        raise BlobError(f"arrays must be a list or a dict of numpy arrays, got {type(arrays).__name__}")
    parts, shapes, dtypes = [], [], []
    for label, item in zip(labels, items):
        a = np.asarray(item)
        if a.dtype.name not in DTYPES:
            raise BlobError(f"array {label} has dtype {a.dtype}; expected bool, integer or float")
        values = a.astype(np.float64).ravel()
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise BlobError(f"array {label} holds {bad} NaN or infinite values, which cannot be encrypted")
        parts.append(values)
        shapes.append(tuple(a.shape))
        dtypes.append(a.dtype.name)
    flat = np.concatenate(parts) if parts else np.zeros(0)
    return names, tuple(shapes), tuple(dtypes), flat


def _unflatten(header: BlobHeader, flat: np.ndarray, exact_ints: bool) -> Arrays:
    out, offset = [], 0
    for shape, dtype in zip(header.shapes, header.dtypes):
        size = math.prod(shape)
        segment = flat[offset:offset + size].reshape(shape)
        offset += size
        kind = np.dtype(dtype).kind
        out.append(segment.astype(dtype) if kind == "f" else
                   np.rint(segment).astype(np.int64) if exact_ints else segment.astype(np.float64))
    return out if header.names is None else dict(zip(header.names, out))
