"""Ciphertexts on the wire: coefficients packed to the bits of their prime, and seeds instead of random halves.

A SEAL ciphertext is a pair ``(c0, c1)`` of polynomials with ``N`` coefficients per prime of its level. A
fresh symmetric encryption draws ``c1`` from a 64-byte seed, so an update carries ``c0`` and the seed.
SEAL itself stores every coefficient in 64 bits and compresses them; here each coefficient takes exactly
the bits of its prime (``ceil(log2 q)``), with no compression.

An aggregate carries the sum of the ``c0`` parts and, for ``c1``, either the seeds of every update
summed (``"seeds"``, each institution expands them) or the summed polynomial (``"poly"``): seeds for at
most :data:`SEEDS_MAX` updates when they are the smaller, :func:`c1_mode`.

This module reads and writes SEAL's serialization (``native/src/seal/ciphertext.cpp``, ``dynarray.h``,
``randomgen.cpp`` of SEAL 4): a 16-byte header, the ciphertext's metadata, a ``DynArray`` of the data,
and for a seeded ciphertext the ``UniformRandomGeneratorInfo`` (PRNG type and seed). Anything else is
refused with a :class:`~fedx.errors.BlobError`. It never imports TenSEAL.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from ..errors import BlobError

#: SEAL's serialization header: magic, header size, version major, minor, compression, reserved, total size.
SEAL_HEADER = struct.Struct("<HBBBBHQ")
SEAL_MAGIC = 0xA15E
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2
#: parms_id (4 x uint64), is_ntt_form (1 byte), size, degree, primes (uint64), scale (double), correction (uint64).
META_SIZE = 32 + 1 + 8 * 3 + 8 + 8
#: The PRNG type (1 byte: 1 = Blake2xb, 2 = SHAKE-256) and its 64-byte seed.
SEED_BYTES = 1 + 64
PRNG_TYPES = (1, 2)
SEED_MARKER = 0xFFFFFFFFFFFFFFFF


def poly_bytes(degree: int, primes: Sequence[int]) -> int:
    """Bytes of one packed polynomial: ``degree`` coefficients per prime, each in the bits of its prime."""
    return sum(-(-degree * q.bit_length() // 8) for q in primes)


#: The most seeds an aggregate carries per ciphertext. Each institution expands every seed of the aggregate
#: before it decrypts (SEAL samples a polynomial from each: benchmarks/he_bench.py measured 0.54 s per 1M
#: parameters for 10 seeds and 5.1 s for 100), so with seeds every institution pays for all the others: 32
#: seeds cost it about 1.7 s per 1M parameters and round. Beyond this many updates the server expands them
#: once as it sums, and the aggregate carries ``c1`` (twice the upload's size on the way down, whatever the
#: number of institutions).
SEEDS_MAX = 32


def c1_mode(n_summed: int, degree: int, primes: Sequence[int]) -> str:
    """``"seeds"`` for at most :data:`SEEDS_MAX` updates whose seeds take fewer bytes than one packed polynomial."""
    return "seeds" if n_summed <= SEEDS_MAX and n_summed * SEED_BYTES < poly_bytes(degree, primes) else "poly"


def chunk_size(degree: int, primes: Sequence[int], mode: str, n_summed: int) -> int:
    """Bytes of one chunk: packed ``c0``, then ``n_summed`` seeds or the packed ``c1``."""
    c0 = poly_bytes(degree, primes)
    return c0 + (n_summed * SEED_BYTES if mode == "seeds" else c0)


@functools.lru_cache(maxsize=64)
def _layout(degree: int, bits: int) -> tuple[np.ndarray, ...]:
    """Where each of ``degree`` coefficients of ``bits`` bits lies in a stream of little-endian 64-bit words.

    Coefficient ``i`` takes the stream's bits ``[i * bits, (i + 1) * bits)``: word ``i * bits // 64`` from bit
    ``i * bits % 64``, and, when it straddles a word boundary, the low bits of the next word. Since
    ``bits < 64``, every word up to the last coefficient's first holds the start of at least one coefficient:
    ``starts`` is the first coefficient that starts in each of them (a word after it holds only the tail of a
    straddling coefficient).
    """
    pos = np.arange(degree, dtype=np.int64) * bits
    word, offset = pos >> 6, (pos & 63).astype(np.uint64)
    starts = np.searchsorted(word, np.arange(int(word[-1]) + 1))
    straddle = np.flatnonzero(offset.astype(np.int64) + bits > 64)
    return word, offset, starts, straddle, (64 - offset[straddle]).astype(np.uint64)


def pack_poly(coeffs: np.ndarray, primes: Sequence[int]) -> bytes:
    """A ``(primes, degree)`` uint64 array, each row packed little-endian in the bits of its prime."""
    out = []
    for row, q in zip(np.asarray(coeffs, np.uint64), primes):
        b = q.bit_length()
        size = -(-row.size * b // 8)
        word, offset, starts, straddle, back = _layout(row.size, b)
        words = np.zeros(len(starts) + 1, np.uint64)
        words[:len(starts)] = np.bitwise_or.reduceat(row << offset, starts)
        words[word[straddle] + 1] |= row[straddle] >> back
        out.append(words.astype("<u8").tobytes()[:size])
    return b"".join(out)


def unpack_poly(data: bytes | memoryview, degree: int, primes: Sequence[int], where: str) -> np.ndarray:
    """The inverse of :func:`pack_poly`, refusing a coefficient that is not below its prime."""
    out = np.empty((len(primes), degree), np.uint64)
    view, offset = memoryview(data), 0
    for j, q in enumerate(primes):
        b = q.bit_length()
        size = -(-degree * b // 8)
        word, shift, _, straddle, back = _layout(degree, b)
        buf = np.zeros(-(-size // 8) * 8 + 8, np.uint8)  # whole words, and one past the last for straddlers
        buf[:size] = np.frombuffer(view[offset:offset + size], np.uint8)
        offset += size
        words = buf.view("<u8").astype(np.uint64)
        row = words[word] >> shift
        row[straddle] |= words[word[straddle] + 1] << back
        out[j] = row & np.uint64((1 << b) - 1)
        if int(out[j].max(initial=0)) >= q:
            raise BlobError(f"{where} is malformed: a coefficient is not below its prime {q}")
    return out


def split_chunk(data: bytes | memoryview, degree: int, primes: Sequence[int], mode: str, n_summed: int,
                where: str) -> tuple[np.ndarray, list[bytes] | np.ndarray]:
    """``c0`` and the seeds (``"seeds"``) or ``c1`` (``"poly"``) of one chunk from another party."""
    expected = chunk_size(degree, primes, mode, n_summed)
    if len(data) != expected:
        raise BlobError(f"{where} is {len(data)} bytes; a '{mode}' chunk of {n_summed} updates is {expected}")
    size = poly_bytes(degree, primes)
    view = memoryview(data)
    c0 = unpack_poly(view[:size], degree, primes, where)
    if mode == "poly":
        return c0, unpack_poly(view[size:], degree, primes, where)
    seeds = [bytes(view[size + i * SEED_BYTES:size + (i + 1) * SEED_BYTES]) for i in range(n_summed)]
    if any(s[0] not in PRNG_TYPES for s in seeds):
        raise BlobError(f"{where} is malformed: a seed names an unknown PRNG type")
    return c0, seeds


class SealFormat:
    """SEAL's serialization of the ciphertexts of one level, learnt from a probe and checked on every use.

    ``probe`` is a seeded ciphertext as SEAL serialized it (compressed or not); its version and metadata
    (parameter id, NTT form, size 2, degree, primes, scale) are what every later ciphertext must have.
    """

    def __init__(self, probe: bytes, degree: int, primes: Sequence[int]) -> None:
        self.degree, self.primes = degree, tuple(primes)
        self.words = degree * len(self.primes)
        head = self._header(probe, "SEAL's own serialization")
        self.version = head[2:4]
        if self.version[0] != 4:
            raise BlobError(f"this fedx reads SEAL 4 serializations; the installed SEAL writes version "
                            f"{self.version[0]}.{self.version[1]}")
        self.meta = self._members(probe, seeded=True, where="SEAL's own serialization")[0]

    # -------------------------------------------------------------- reading SEAL's bytes

    def _header(self, data: bytes | memoryview, where: str) -> tuple[int, ...]:
        if len(data) < SEAL_HEADER.size:
            raise BlobError(f"{where}: {len(data)} bytes, too short for a SEAL object")
        head = SEAL_HEADER.unpack_from(data)
        magic, size_of_header, _, _, compr, _, total = head
        if magic != SEAL_MAGIC or size_of_header != SEAL_HEADER.size or total != len(data) or \
                compr not in (COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD):
            raise BlobError(f"{where}: not a SEAL serialization (bad header)")
        if getattr(self, "version", None) is not None and head[2:4] != self.version:
            raise BlobError(f"{where}: SEAL version {head[2]}.{head[3]}, expected {self.version[0]}.{self.version[1]}")
        return head

    def _members(self, data: bytes | memoryview, seeded: bool, where: str) -> tuple[bytes, np.ndarray, bytes]:
        """Metadata, data words and seed record of a ciphertext as SEAL saved it."""
        compr = self._header(data, where)[4]
        words = self.words if seeded else 2 * self.words
        size = META_SIZE + SEAL_HEADER.size + 8 + 8 * words + (SEAL_HEADER.size + SEED_BYTES if seeded else 0)
        body = memoryview(data)[SEAL_HEADER.size:]
        try:
            if compr == COMPR_ZSTD:
                import pyarrow  # SEAL compresses with zstd by default; pyarrow bundles it

                raw = pyarrow.decompress(body, decompressed_size=size, codec="zstd", asbytes=True)
            elif compr == COMPR_ZLIB:
                raw = zlib.decompress(body)
            else:
                raw = bytes(body)
        except (OSError, ValueError, zlib.error) as exc:
            raise BlobError(f"{where}: its SEAL data does not decompress to the {size} bytes expected ({exc})") \
                from None
        if len(raw) != size:
            raise BlobError(f"{where}: {len(raw)} bytes of SEAL data, expected {size}")
        meta = raw[:META_SIZE]
        if hasattr(self, "meta") and meta != self.meta:
            raise BlobError(f"{where}: a ciphertext of other parameters, level or size")
        array = raw[META_SIZE:META_SIZE + SEAL_HEADER.size + 8 + 8 * words]
        head = SEAL_HEADER.unpack_from(array)
        if head[0] != SEAL_MAGIC or head[4] != COMPR_NONE or head[6] != len(array) or \
                struct.unpack_from("<Q", array, SEAL_HEADER.size)[0] != words:
            raise BlobError(f"{where}: its data array is not that of a size-2 ciphertext of these parameters")
        coeffs = np.frombuffer(array, "<u8", words, SEAL_HEADER.size + 8).astype(np.uint64)
        seed = b""
        if seeded:
            info = raw[META_SIZE + len(array):]
            head = SEAL_HEADER.unpack_from(info)
            seed = info[SEAL_HEADER.size:]
            if head[0] != SEAL_MAGIC or head[4] != COMPR_NONE or head[6] != len(info) or seed[0] not in PRNG_TYPES:
                raise BlobError(f"{where}: its seed record is not SEAL's (PRNG type and 64-byte seed)")
        return meta, coeffs.reshape(-1, len(self.primes), self.degree), seed

    def seeded_parts(self, data: bytes, where: str = "a fresh ciphertext") -> tuple[np.ndarray, bytes]:
        """``c0`` (primes, degree) and the seed record of a seeded ciphertext that SEAL saved."""
        _, coeffs, seed = self._members(data, seeded=True, where=where)
        return coeffs[0], seed

    def full_parts(self, data: bytes, where: str = "a ciphertext") -> tuple[np.ndarray, np.ndarray]:
        """``c0`` and ``c1`` (each primes x degree) of a full ciphertext that SEAL saved."""
        _, coeffs, _ = self._members(data, seeded=False, where=where)
        return coeffs[0], coeffs[1]

    # -------------------------------------------------------------- writing bytes for SEAL to load

    def _object(self, members: bytes) -> bytes:
        return SEAL_HEADER.pack(SEAL_MAGIC, SEAL_HEADER.size, *self.version, COMPR_NONE, 0,
                                SEAL_HEADER.size + len(members)) + members

    def _array(self, words: np.ndarray) -> bytes:
        flat = np.ascontiguousarray(words, "<u8").ravel()
        return self._object(struct.pack("<Q", flat.size) + flat.tobytes())

    def seeded(self, c0: np.ndarray, seed: bytes) -> bytes:
        """An uncompressed seeded ciphertext: SEAL expands ``c1`` from ``seed`` when it loads it."""
        return self._object(self.meta + self._array(c0) + self._object(seed))

    def full(self, c0: np.ndarray, c1: np.ndarray) -> bytes:
        """An uncompressed full ciphertext."""
        return self._object(self.meta + self._array(np.concatenate([np.asarray(c0).ravel(), np.asarray(c1).ravel()])))
