"""CKKS vectors of per-row values and their inner products with another party's plaintext vectors.

The vertical GLM (:mod:`fedx.vertical`) needs one operation: the *owner* of a key encrypts per-row vectors
``c`` (n rows), another party multiplies them by its own plaintext per-row vectors ``f`` and sums over the
rows, and the owner decrypts ``sum_i c_i f_i``. The other party never sees ``c``; the owner sees only the
totals.

- Every vector is padded with zeros to a whole number of ciphertexts of the full slot count (4096), so a
  sum covers every slot: after the rotation sum each slot holds the same total, and no partial sum over a
  subset of rows exists anywhere in the returned ciphertext. :meth:`VectorKey.decrypt_sums` checks this
  (it refuses a ciphertext whose slots differ).
- Two plaintext vectors ride in one product as the real and imaginary parts of a complex plaintext, so a
  returned ciphertext holds two totals (half the products, rotations and bytes).
- The owner encrypts with its secret key (seeded symmetric ciphertexts: half the bytes on the wire).
  The evaluating party gets only the parameters and the Galois keys of the rotations (:meth:`public_bytes`),
  never a key that decrypts.
- SEAL tracks the exact scale through the rescale (``scale^2 / q``). :meth:`VectorKey.scale_bias` measures
  what is left with the owner's key on a known product, and :meth:`decrypt_sums` divides it out.

- *Chains* (more than one feature party): a party that is not the last on a vector's path multiplies the
  owner's vector row by row by its plaintext (:meth:`VectorEvaluator.multiply_rows`) and passes the product
  on, and the next party sums it. A product is *re-randomised*: an encryption of zero under the owner's
  public key is added, so that the product cannot be divided by the ciphertext it came from (whoever saw
  both would otherwise read the plaintext factor off them).

Parameters: N = 8192, coefficient modulus [60, 49, 49, 60], scale 2^49; one ciphertext-plaintext product
and a rescale leave 2^59 of headroom above the scale. In a chain the row-wise product multiplies by
plaintexts at scale 2^40 and is not rescaled (it sits at 2^89 at the top level, where the noise of the
re-randomisation is negligible); the next party multiplies by plaintexts at 2^49, as for a fresh vector, and
rescales, so chained totals sit at 2^89 under a 109-bit modulus and must stay below :data:`CHAIN_BOUND` in
absolute value (masks included). The label party's vectors are normalised to a sum of absolute values of 1
and each feature party scales its factors to at most 1, so a chained total is at most 1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from tenseal import sealapi

from ..errors import BlobError, HEError
from . import frame
from .seal import _scratch

__all__ = ["CHAIN_BOUND", "CHAIN_SCALE", "VECTOR_BITS", "VECTOR_DEGREE", "VECTOR_SCALE", "VectorEvaluator",
           "VectorKey", "slot_count"]

VECTOR_DEGREE = 8192
VECTOR_BITS = (60, 49, 49, 60)
VECTOR_SCALE = 2.0 ** 49
#: Scale of the plaintexts of a row-wise product (a chain).
CHAIN_SCALE = 2.0 ** 40
#: A chained total (mask included) must stay below this in absolute value (2^108 / 2^89, with room for noise).
CHAIN_BOUND = 2.0 ** 18
_MAGIC_VEC = b"FXV1"
_MAGIC_PUB = b"FXP1"
_VERSION = 1
#: Relative spread allowed between the slots of a summed ciphertext (CKKS noise is ~1e-12 of the largest value).
SLOT_SPREAD = 1e-6


def slot_count() -> int:
    """Slots per ciphertext (N / 2)."""
    return VECTOR_DEGREE // 2


class _Engine:
    """Context, encoder and evaluator of the vector parameters (no key)."""

    def __init__(self) -> None:
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(VECTOR_DEGREE)
        parms.set_coeff_modulus(sealapi.CoeffModulus.Create(VECTOR_DEGREE, list(VECTOR_BITS)))
        self.context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
        self.encoder = sealapi.CKKSEncoder(self.context)
        self.evaluator = sealapi.Evaluator(self.context)
        self.top = self.context.first_parms_id()
        self.summed = self.context.first_context_data().next_context_data().parms_id()

    def load(self, data: bytes | memoryview, where: str, summed: bool) -> Any:
        """A ciphertext at the top level (a fresh vector) or, ``summed``, one level down (sums, chained vectors)."""
        ct = sealapi.Ciphertext()
        try:
            _scratch.load(ct, self.context, data)
        except Exception as exc:  # a trust boundary: SEAL raises many types on malformed input
            raise BlobError(f"{where}: not a ciphertext of the vector parameters ({exc})") from None
        if ct.size() != 2 or ct.parms_id() != (self.summed if summed else self.top):
            raise BlobError(f"{where}: a ciphertext at the wrong level or of the wrong size")
        return ct



@functools.cache
def _engine() -> _Engine:
    return _Engine()


@functools.cache
def _ones(chained: bool = False) -> Any:
    """The constant 1 as a plaintext at the top level: at scale 2^49, or at the chain's 2^40."""
    pt = sealapi.Plaintext()
    _engine().encoder.encode(1.0, _engine().top, CHAIN_SCALE if chained else VECTOR_SCALE, pt)
    return pt


def _is_chained(ct: Any) -> bool:
    """A row-wise product (scale 2^89) rather than a fresh vector (scale 2^49)."""
    return ct.scale > VECTOR_SCALE * 2.0 ** 20


def _rotation_steps() -> list[int]:
    return [1 << k for k in range(int(np.log2(slot_count())))]


def _galois_elements() -> list[int]:
    """SEAL's Galois elements of the left rotations by ``_rotation_steps`` (3^step mod 2N)."""
    return [pow(3, step, 2 * VECTOR_DEGREE) for step in _rotation_steps()]


def _chunks(values: np.ndarray) -> np.ndarray:
    """``values`` (n,) padded with zeros to whole ciphertexts: shape (chunks, slots)."""
    slots = slot_count()
    n = values.shape[0]
    rows = max(1, -(-n // slots))
    out = np.zeros(rows * slots, dtype=values.dtype)
    out[:n] = values
    return out.reshape(rows, slots)


def _pack_parts(kind: str, parts: Sequence[bytes], **extra: Any) -> bytes:
    return frame.pack(_MAGIC_VEC, _VERSION, {"kind": kind, "sizes": [len(p) for p in parts], **extra}, parts)


def _unpack_parts(data: bytes | memoryview, kind: str, where: str) -> tuple[dict[str, Any], list[memoryview]]:
    got = frame.unpack(data, magic=_MAGIC_VEC, version=_VERSION, error=BlobError, what=where)
    head = got.header
    sizes = head.get("sizes")
    if head.get("kind") != kind or not isinstance(sizes, list) or sum(sizes) != len(got.payload):
        raise BlobError(f"{where}: expected an encrypted {kind} blob, got {head.get('kind')!r}")
    out, start = [], 0
    for size in sizes:
        out.append(got.payload[start:start + size])
        start += size
    return head, out


class VectorKey:
    """A party's own CKKS key for per-row vectors: it encrypts and decrypts; others only evaluate.

    Use :meth:`generate`; :meth:`public_bytes` is what the other party needs to evaluate.
    """

    def __init__(self) -> None:
        eng = _engine()
        keygen = sealapi.KeyGenerator(eng.context)
        self._secret = keygen.secret_key()
        self._encryptor = sealapi.Encryptor(eng.context, self._secret)
        self._decryptor = sealapi.Decryptor(eng.context, self._secret)
        public_key = sealapi.PublicKey()
        keygen.create_public_key(public_key)
        galois = _scratch.save(keygen.create_galois_keys(_galois_elements()))
        encryption = _scratch.save(public_key)
        self._public = frame.pack(_MAGIC_PUB, _VERSION, {"degree": VECTOR_DEGREE, "bits": list(VECTOR_BITS),
                                                         "steps": _rotation_steps(),
                                                         "sizes": [len(galois), len(encryption)]},
                                  [galois, encryption])
        self._bias = 0.0
        self._bias = self.scale_bias()

    def __repr__(self) -> str:
        return "VectorKey(ckks N=8192, <secret>)"

    @classmethod
    def generate(cls) -> VectorKey:
        """A fresh key (and Galois keys for the rotation sum)."""
        return cls()

    def public_bytes(self) -> bytes:
        """The parameters, the Galois keys and the public key: lets another party evaluate and re-randomise
        (encrypt zeros), never decrypt (sent once)."""
        return self._public

    def encrypt(self, values: np.ndarray) -> bytes:
        """One real per-row vector (n,), padded to whole ciphertexts of the full slot count."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or not np.all(np.isfinite(arr)):
            raise HEError("vector encryption: expected a finite 1-D array")
        eng = _engine()
        parts = []
        # The rows' ciphertexts, then one encryption of zeros: the start of every sum (a product of an
        # all-zero plaintext would be a transparent ciphertext, which SEAL refuses).
        for row in [*_chunks(arr), np.zeros(slot_count())]:
            pt = sealapi.Plaintext()
            eng.encoder.encode(row.tolist(), VECTOR_SCALE, pt)
            parts.append(_scratch.save(self._encryptor.encrypt_symmetric(pt)))
        return _pack_parts("vector", parts, rows=int(arr.shape[0]))

    def decrypt_sums(self, data: bytes | memoryview, where: str = "encrypted sums") -> np.ndarray:
        """The totals in a blob of :meth:`VectorEvaluator.inner_sums` (real parts then imaginary parts, in order).

        Raises
        ------
        BlobError
            A ciphertext whose slots do not all hold the same total (a vector that was not summed over every
            slot), or one at the wrong level.
        """
        head, parts = _unpack_parts(data, "sums", where)
        count = head.get("count")
        if not isinstance(count, int) or not 0 <= count <= 2 * len(parts):
            raise BlobError(f"{where}: bad count of totals")
        eng = _engine()
        out = np.empty(2 * len(parts))
        for i, part in enumerate(parts):
            ct = eng.load(part, f"{where}, ciphertext {i}", summed=True)
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            slots = np.asarray(eng.encoder.decode_complex(pt))
            spread = np.max(np.abs(slots - slots[0]))
            if spread > SLOT_SPREAD * (np.max(np.abs(slots)) + 1.0):
                raise BlobError(f"{where}, ciphertext {i}: its slots hold different values (spread {spread:.3g}); "
                                f"every slot of a sum must hold the same total, so it was not summed over all rows")
            total = slots.mean()
            out[2 * i], out[2 * i + 1] = total.real, total.imag
        return out[:count] / (1.0 + self._bias)

    def decrypt_slots(self, data: bytes | memoryview, where: str = "encrypted sums") -> np.ndarray:
        """Every slot of every ciphertext of a sums blob, (ciphertexts, slots) complex: what the owner could read."""
        _, parts = _unpack_parts(data, "sums", where)
        eng = _engine()
        out = []
        for i, part in enumerate(parts):
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(eng.load(part, f"{where}, ciphertext {i}", summed=True), pt)
            out.append(np.asarray(eng.encoder.decode_complex(pt)))
        return np.array(out)

    def scale_bias(self) -> float:
        """Relative bias of a decrypted product after the rescale, measured on ones times ones."""
        ones = np.ones(slot_count())
        evaluator = VectorEvaluator(self._public)
        blob = evaluator.inner_sums(self.encrypt(ones), [ones])
        _, parts = _unpack_parts(blob, "sums", "scale probe")
        eng = _engine()
        pt = sealapi.Plaintext()
        self._decryptor.decrypt(eng.load(parts[0], "scale probe", summed=True), pt)
        measured = float(np.mean(np.real(eng.encoder.decode_complex(pt)))) / slot_count()
        return measured - 1.0


class VectorEvaluator:
    """The other party's side: products of the owner's encrypted vectors with its own plaintext vectors.

    Parameters
    ----------
    public : bytes
        :meth:`VectorKey.public_bytes` of the owner.
    """

    def __init__(self, public: bytes | memoryview) -> None:
        got = frame.unpack(public, magic=_MAGIC_PUB, version=_VERSION, error=BlobError, what="public vector context")
        if got.header.get("degree") != VECTOR_DEGREE or got.header.get("bits") != list(VECTOR_BITS) \
                or got.header.get("steps") != _rotation_steps():
            raise BlobError("public vector context: other parameters than this fedx's (N=8192, [60,49,49,60])")
        sizes = got.header.get("sizes")
        if not isinstance(sizes, list) or len(sizes) != 2 or not all(isinstance(x, int) and x > 0 for x in sizes) \
                or sum(sizes) != len(got.payload):
            raise BlobError("public vector context: malformed (expected the Galois keys and the public key)")
        eng = _engine()
        self._galois = sealapi.GaloisKeys()
        public_key = sealapi.PublicKey()
        try:
            _scratch.load(self._galois, eng.context, got.payload[:sizes[0]])
            _scratch.load(public_key, eng.context, got.payload[sizes[0]:])
        except Exception as exc:  # bytes from another party
            raise BlobError(f"public vector context: the Galois keys or the public key do not load ({exc})") from None
        self._zeros = sealapi.Encryptor(eng.context, public_key)

    def load_vector(self, data: bytes | memoryview, rows: int, where: str = "encrypted vector",
                    chained: bool = False) -> list[Any]:
        """The ciphertexts of an encrypted vector, checked to cover ``rows`` rows at the top level.

        ``chained``: a product of :meth:`multiply_rows` (from the previous party of a chain), not a fresh
        vector of the owner.
        """
        head, parts = _unpack_parts(data, "vector", where)
        if head.get("rows") != rows or len(parts) != _chunks(np.zeros(rows)).shape[0] + 1:
            raise BlobError(f"{where}: encrypts {head.get('rows')} rows in {len(parts)} ciphertexts; the shared rows "
                            f"are {rows}")
        if bool(head.get("chained", False)) != chained:
            raise BlobError(f"{where}: expected {'a row-wise product' if chained else 'a fresh vector'}, got "
                            f"{'a row-wise product' if head.get('chained') else 'a fresh vector'}")
        eng = _engine()
        cts = [eng.load(p, f"{where}, ciphertext {i}", summed=False) for i, p in enumerate(parts)]
        if any(_is_chained(ct) != chained for ct in cts):
            raise BlobError(f"{where}: a ciphertext at the wrong scale")
        return cts

    def multiply_rows(self, vector: list[Any], plains: Sequence[np.ndarray]) -> list[bytes]:
        """``c_i f_i`` row by row for each plaintext ``f``: encrypted vectors for the next party of a chain.

        ``vector`` is a fresh vector from :meth:`load_vector`. Each product stays at the top level (scale
        2^89) and is re-randomised with an encryption of zero under the owner's public key; an all-zero
        chunk of ``f`` gives an encryption of zero (SEAL refuses a product that is transparent).
        """
        eng = _engine()
        n_chunks = len(vector) - 1
        out = []
        for f in plains:
            chunks = _chunks(np.asarray(f, dtype=np.float64))
            if chunks.shape[0] != n_chunks:
                raise HEError("row-wise product: the plaintext vector and the encrypted vector have different lengths")
            parts = []
            for ct, row in [*zip(vector[:-1], chunks), (vector[-1], None)]:
                prod = sealapi.Ciphertext()
                if row is None or not row.any():
                    eng.evaluator.multiply_plain(vector[-1], _ones(chained=True), prod)
                else:
                    pt = sealapi.Plaintext()
                    eng.encoder.encode(row.tolist(), eng.top, CHAIN_SCALE, pt)
                    eng.evaluator.multiply_plain(ct, pt, prod)
                parts.append(_scratch.save(self._rerandomised(prod)))
            out.append(_pack_parts("vector", parts, rows=int(np.asarray(f).shape[0]), chained=True))
        return out

    def _rerandomised(self, ct: Any) -> Any:
        zero = sealapi.Ciphertext()
        self._zeros.encrypt_zero(ct.parms_id(), zero)
        zero.scale = ct.scale
        _engine().evaluator.add_inplace(ct, zero)
        return ct

    def encode(self, plains: Sequence[np.ndarray], chained: bool = False) -> list[list[Any]]:
        """The plaintexts of :meth:`inner_sums`, encoded once (two vectors per complex plaintext, per chunk).

        An all-zero chunk is ``None`` (it adds nothing to a sum). The same encoding serves fresh and chained
        vectors (``chained`` is accepted for the plaintext scheme's signature).
        """
        eng = _engine()
        scale = VECTOR_SCALE
        plains = [np.asarray(f, dtype=np.float64) for f in plains]
        out = []
        for start in range(0, len(plains), 2):
            pair = plains[start:start + 2]
            packed = pair[0].astype(np.complex128)
            if len(pair) == 2:
                packed = packed + 1j * pair[1]
            chunk_pts = []
            for row in _chunks(packed):
                if not row.any():
                    chunk_pts.append(None)
                    continue
                pt = sealapi.Plaintext()
                eng.encoder.encode(row.tolist(), eng.top, scale, pt)
                chunk_pts.append(pt)
            out.append(chunk_pts)
        return out

    def inner_sums(self, vector: bytes | memoryview | list[Any], plains: Sequence[np.ndarray] | None = None,
                   masks: np.ndarray | None = None, *, encoded: list[list[Any]] | None = None,
                   count: int | None = None) -> bytes:
        """``sum_i c_i f_i`` for each plaintext vector ``f`` in ``plains``, under the owner's key.

        Two plaintext vectors share one ciphertext (real and imaginary part). ``masks`` (one real number per
        total) are added to the totals, for the decrypting owner to see only masked totals. ``encoded`` (from
        :meth:`encode`, with ``count`` totals) saves encoding the same plaintexts again for another vector.

        A row-wise product of :meth:`multiply_rows` (a chain) takes the same plaintexts; its totals must stay
        below :data:`CHAIN_BOUND`.
        """
        eng = _engine()
        if not isinstance(vector, list):
            head = _unpack_parts(vector, "vector", "encrypted vector")[0]
            vector = self.load_vector(vector, int(head["rows"]), chained=bool(head.get("chained", False)))
        if encoded is None:
            if plains is None:
                raise HEError("inner sums: give the plaintext vectors or their encoding")
            encoded, count = self.encode(plains), len(plains)
        assert count is not None
        parts = []
        for index, chunk_pts in enumerate(encoded):
            if len(chunk_pts) != len(vector) - 1:
                raise HEError("inner sums: the plaintext vectors and the encrypted vector have different lengths")
            acc = sealapi.Ciphertext()
            eng.evaluator.multiply_plain(vector[-1], _ones(), acc)
            for ct, pt in zip(vector, chunk_pts):
                if pt is None:
                    continue
                prod = sealapi.Ciphertext()
                eng.evaluator.multiply_plain(ct, pt, prod)
                eng.evaluator.add_inplace(acc, prod)
            eng.evaluator.rescale_to_next_inplace(acc)
            if any(pt is not None for pt in chunk_pts):  # a sum of zeros needs no rotation
                for step in _rotation_steps():
                    rotated = sealapi.Ciphertext()
                    eng.evaluator.rotate_vector(acc, step, self._galois, rotated)
                    eng.evaluator.add_inplace(acc, rotated)
            if masks is not None:
                start = 2 * index
                mask = complex(masks[start], masks[start + 1] if start + 1 < count else 0.0)
                pm = sealapi.Plaintext()
                eng.encoder.encode(mask, acc.parms_id(), acc.scale, pm)
                eng.evaluator.add_plain_inplace(acc, pm)
            parts.append(_scratch.save(acc))
        return _pack_parts("sums", parts, count=count)
