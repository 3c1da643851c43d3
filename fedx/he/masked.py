"""Masked bfv-compact blobs: updates whose quantized slots carry pairwise masks that cancel in the sum.

The masking protocol itself lives in :mod:`fedx.secagg`; this module is its HE side:

- :func:`quantize`: arrays to the integer slots that :func:`fedx.he.encrypt` would encrypt, with a header
  whose fields depend only on public settings (no magnitude, clipping count or rounding of the values);
- :func:`encrypt_masked`: encrypt already-masked slots (integers mod t) under the institutions' key;
- :func:`aggregate_masked`: the server's sum of masked blobs (it still reads nothing);
- :func:`unmask`: the server subtracts the residual mask from the encrypted sum (``sub_plain``, no key),
  which yields an ordinary aggregate that :func:`fedx.he.decrypt` reads;
- :func:`decrypt_residues`: decrypt any blob to its slots mod t (audits and tests).

A masked blob is an ordinary blob wrapped in a frame of its own (magic ``FXMB``), so a masked update
cannot be summed with plain ones by mistake, and a masked aggregate whose masks were not removed is
refused by :func:`fedx.he.decrypt` instead of decrypting to noise.

Only BFV can carry such masks: its slots are exact integers mod t, so uniform masks mod t cancel
exactly. CKKS slots are approximate reals; a mask large enough to hide a value would swamp its precision.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import MaskingError
from . import frame, seal, wire
from .aggregate import aggregate
from .blob import BlobHeader, pack_blob, unpack_blob
from .codec import _require_secret, encode_update
from .keys import PublicContext, SecretContext
from .schemes import BfvPreset, Kind, Preset, get_preset

log = logging.getLogger(__name__)

MAGIC = b"FXMB"
MASKED_VERSION = 1
MAX_TAG = 256

MaskedStage = Literal["update", "aggregate"]


@dataclass(frozen=True)
class Quantized:
    """One institution's update as integer slots, before masking.

    Attributes
    ----------
    header : BlobHeader
        The header the blob will carry (``chunk_sizes`` filled in at encryption).
    rows : np.ndarray
        int64 slots, shape ``(chunks, slots)``, centred in ``[-(t-1)/2, (t-1)/2]``.
    modulus : int
        The plain modulus t: masks are added mod t.
    """

    header: BlobHeader
    rows: np.ndarray
    modulus: int


def require_maskable(preset: Preset, where: str) -> BfvPreset:
    """``preset`` if it can carry masks (BFV); otherwise a :class:`MaskingError` that says why not."""
    if not isinstance(preset, BfvPreset):
        raise MaskingError(f"{where}: security.masking: pairwise needs bfv-compact, not {preset.name}: masks must "
                           f"cancel exactly, which needs integer slots mod t; {preset.name} slots are approximate "
                           f"reals (set security.encryption: bfv-compact, or turn masking off)")
    return preset


def quantize(secret: SecretContext, arrays: Sequence[Any] | Mapping[str, Any], weight: float = 1.0,
             total_weight: float | None = None, kind: Kind = "mean", value_bound: float | None = None) -> Quantized:
    """Encode arrays as :func:`fedx.he.encrypt` does, but stop before encryption.

    The header is data-independent: its capacity bound and encoding report follow from the preset and
    ``rho`` alone (as with ``value_bound`` in :func:`fedx.he.encrypt`), since a mask hides the slots but
    not the header. Values beyond ``clip`` are clipped; the count is only logged here.

    Raises
    ------
    MaskingError
        The keys are not BFV.
    BlobError, CapacityError
        As :func:`fedx.he.encrypt`.
    """
    key = _require_secret(secret, "he.masked.quantize")
    preset = require_maskable(key.preset, "he.masked.quantize")
    if value_bound is None:
        value_bound = preset.max_sum_value if kind == "sum" else preset.clip
    bound = value_bound
    header, rows = encode_update(key, arrays, weight, total_weight, kind, bound, "he.masked.quantize")
    return Quantized(header, rows, preset.plain_modulus)


def encrypt_masked(secret: SecretContext, quantized: Quantized, masked_rows: np.ndarray, tag: str) -> bytes:
    """Encrypt masked slots (integers, any representative mod t) into a masked update blob.

    Parameters
    ----------
    secret : SecretContext
        The institutions' keys (those that made ``quantized``).
    quantized : Quantized
        From :func:`quantize`: gives the header.
    masked_rows : np.ndarray
        ``quantized.rows`` plus the masks, mod t, of the same shape.
    tag : str
        Names the masking round (run and round); only blobs of one tag are summed together.
    """
    key = _require_secret(secret, "he.masked.encrypt_masked")
    preset = require_maskable(key.preset, "he.masked.encrypt_masked")
    rows = np.asarray(masked_rows)
    if rows.shape != quantized.rows.shape or rows.dtype.kind not in "iu":
        raise MaskingError(f"he.masked.encrypt_masked: masked rows must be integers of shape "
                           f"{quantized.rows.shape}, got {rows.dtype} {rows.shape}")
    if quantized.header.fingerprint != key.fingerprint:
        raise MaskingError("he.masked.encrypt_masked: the update was quantized under other keys")
    chunks = key.seal_key.encrypt(centre(rows, preset.plain_modulus), quantized.header.kind)
    header = dataclasses.replace(quantized.header, chunk_sizes=tuple(len(c) for c in chunks))
    return _wrap("update", tag, pack_blob(header, chunks))


def aggregate_masked(public: PublicContext | SecretContext, blobs: Iterable[bytes]) -> bytes:
    """Sum masked update blobs of one tag (server side, public context only) into a masked aggregate.

    Raises
    ------
    MaskingError
        A blob that is not a masked update, or one of another masking round.
    KeyMismatchError, BlobError, CapacityError
        As :func:`fedx.he.aggregate`.
    """
    tags: list[str] = []

    def inner() -> Iterable[bytes]:
        for i, blob in enumerate(blobs):
            stage, tag, body = unwrap(blob, f"masked blob {i}")
            if stage != "update":
                raise MaskingError(f"masked blob {i} is a masked {stage}, expected a masked update")
            if tags and tag != tags[0]:
                raise MaskingError(f"masked blob {i} belongs to masking round {tag!r}, blob 0 to {tags[0]!r}: "
                                   f"masks of different rounds never cancel")
            tags.append(tag)
            yield body

    total = aggregate(public, inner())
    return _wrap("aggregate", tags[0], total)


def unmask(public: PublicContext | SecretContext, masked_aggregate: bytes, residual: np.ndarray) -> bytes:
    """Subtract the residual mask (integers mod t, one per slot) from a masked aggregate, under encryption.

    The server does this with the public context alone (SEAL's ``sub_plain``): it never sees the sum.
    The result is an ordinary aggregate blob for :func:`fedx.he.decrypt`.

    Raises
    ------
    MaskingError
        Not a masked aggregate, or a residual of the wrong shape.
    """
    if isinstance(public, SecretContext):
        public = public.public
    stage, _, body = unwrap(masked_aggregate, "masked aggregate")
    if stage != "aggregate":
        raise MaskingError("he.masked.unmask needs a masked aggregate (from aggregate_masked), got a masked update")
    header, chunks = unpack_blob(body, "masked aggregate")
    preset = require_maskable(public.preset, "he.masked.unmask")
    header.check_context(preset, public.fingerprint, "masked aggregate")
    header.check_layout(preset, "masked aggregate")
    rows = np.asarray(residual)
    if rows.shape != (len(chunks), preset.slots) or rows.dtype.kind not in "iu":
        raise MaskingError(f"he.masked.unmask: the residual mask must be integers of shape "
                           f"{(len(chunks), preset.slots)}, got {rows.dtype} {rows.shape}")
    engine = seal.engine(preset)
    kind = header.kind
    n, primes = preset.poly_modulus_degree, engine.primes(kind)
    out = []
    for j, (data, row) in enumerate(zip(chunks, centre(rows, preset.plain_modulus), strict=True)):
        where = f"masked aggregate, ciphertext {j}"
        c0, c1 = wire.split_chunk(data, n, primes, header.c1, header.n_summed, where)
        rest = b"".join(c1) if isinstance(c1, list) else wire.pack_poly(c1, primes)
        out.append(wire.pack_poly(engine.sub_plain(c0, row, kind, where), primes) + rest)
    return pack_blob(dataclasses.replace(header, chunk_sizes=tuple(len(c) for c in out)), out)


def decrypt_residues(secret: SecretContext, blob: bytes) -> np.ndarray:
    """Decrypt a blob (masked or not) to its slots as integers in ``[0, t)``, shape ``(chunks, slots)``."""
    key = _require_secret(secret, "he.masked.decrypt_residues")
    preset = require_maskable(key.preset, "he.masked.decrypt_residues")
    body = unwrap(blob, "blob")[2] if bytes(blob[:4]) == MAGIC else blob
    header, chunks = unpack_blob(body)
    header.check_context(preset, key.fingerprint, "blob")
    header.check_layout(preset, "blob")
    return np.mod(key.seal_key.decrypt(chunks, header.kind, header.c1, header.n_summed, "blob"), preset.plain_modulus)


def slot_shape(blob: bytes) -> tuple[int, int]:
    """``(chunks, slots)`` of a masked or plain blob: the shape of its masks. Needs no key."""
    body = unwrap(blob, "blob")[2] if bytes(blob[:4]) == MAGIC else blob
    header, chunks = unpack_blob(body)
    return len(chunks), get_preset(header.preset).slots


def centre(rows: np.ndarray, modulus: int) -> np.ndarray:
    """Integers mod ``modulus`` (odd) as int64 representatives in ``[-(modulus-1)/2, (modulus-1)/2]``."""
    half = (modulus - 1) // 2
    return np.mod(np.asarray(rows, np.int64) + half, modulus) - half


def unwrap(blob: bytes | bytearray | memoryview, what: str) -> tuple[MaskedStage, str, memoryview]:
    """The stage, tag and inner blob of a masked blob.

    Raises
    ------
    MaskingError
        Not a masked blob, or a malformed one.
    """
    try:
        fr = frame.unpack(blob, magic=MAGIC, version=MASKED_VERSION, error=MaskingError, what=what)
    except MaskingError as exc:
        raise MaskingError(f"{exc} (a masked blob comes from he.masked.encrypt_masked or aggregate_masked; "
                           f"a masked aggregate needs he.masked.unmask before he.decrypt)") from None
    f = frame.Fields(fr.header, MaskingError, what)
    stage = f.text("stage", ("update", "aggregate"))
    return stage, f.text("tag", max_len=MAX_TAG), fr.payload  # type: ignore[return-value]


def _wrap(stage: MaskedStage, tag: str, body: bytes) -> bytes:
    if not isinstance(tag, str) or len(tag) > MAX_TAG:
        raise MaskingError(f"a masking tag must be a string of at most {MAX_TAG} characters, got {tag!r}")
    return frame.pack(MAGIC, MASKED_VERSION, {"stage": stage, "tag": tag}, [body])
