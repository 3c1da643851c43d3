"""The SEAL backend: the one module of fedx that imports TenSEAL.

It drives ``tenseal.sealapi`` directly, not TenSEAL's high-level vectors: SEAL's symmetric encryption
yields *seeded* ciphertexts (a 64-byte seed in place of the random half), and nothing is ever printed to
stdout. On the wire ciphertexts take the format of :mod:`fedx.he.wire`.

sealapi saves and loads objects only through file paths. Each thread of each process keeps one anonymous
in-memory file (``memfd``) and hands SEAL its ``/proc/self/fd`` path, so neither ciphertexts nor keys touch
a disk or a shared directory, and the file is emptied after every use.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from ..errors import BlobError, CapacityError, HEError, KeyFileError
from . import wire
from .schemes import KINDS, BfvPreset, CkksPreset, Kind, Preset


class _Handle:
    """Owns one scratch file descriptor, closed when the thread's locals go away or at exit."""

    def __init__(self) -> None:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("fedx-he")
            self.path = f"/proc/self/fd/{self.fd}"
        else:  # no memfd (not Linux): a 0600 file in a private 0700 directory
            self.fd, self.path = tempfile.mkstemp(dir=_private_dir())
        self.pid = os.getpid()
        weakref.finalize(self, os.close, self.fd)


class _Scratch(threading.local):
    """One private in-memory file per thread and process, reached by a path that SEAL can open."""

    handle: _Handle | None = None

    def ensure(self) -> tuple[int, str]:
        """The file descriptor and path of this thread's scratch file."""
        if self.handle is None or self.handle.pid != os.getpid():  # a forked child never shares the parent's
            self.handle = _Handle()
        return self.handle.fd, self.handle.path

    def save(self, obj: Any) -> bytes:
        """Serialize a SEAL object (or a seeded ``Serializable``) to bytes."""
        fd, path = self.ensure()
        try:
            obj.save(path)
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
        finally:
            os.ftruncate(fd, 0)
        if len(data) != size:
            raise HEError(f"short read from the SEAL scratch file: {len(data)} of {size} bytes")
        return data

    def load(self, obj: Any, context: Any, data: bytes | memoryview) -> None:
        """Load a SEAL object from bytes (``obj.load(context, path)``)."""
        fd, path = self.ensure()
        try:
            os.ftruncate(fd, 0)
            if os.pwrite(fd, data, 0) != len(data):
                raise HEError("short write to the SEAL scratch file")
            obj.load(context, path)
        finally:
            os.ftruncate(fd, 0)


@functools.cache
def _private_dir() -> str:
    path = tempfile.mkdtemp(prefix="fedx-he-")
    atexit.register(shutil.rmtree, path, True)
    return path


_scratch = _Scratch()


class Engine:
    """The SEAL objects of one parameter set: context, encoder, evaluator, and the level of each kind.

    An engine holds no key: the server builds one from the preset alone. Ciphertexts travel in the format
    of :mod:`fedx.he.wire`; the engine turns them into SEAL ciphertexts and back, and expands seeds.
    """

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self.scale = preset.scale if isinstance(preset, CkksPreset) else None
        self.ckks = self.scale is not None
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS if self.ckks else sealapi.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(preset.poly_modulus_degree)
        parms.set_coeff_modulus([sealapi.Modulus(q) for q in preset.coeff_modulus])
        if isinstance(preset, BfvPreset):
            parms.set_plain_modulus(preset.plain_modulus)
        self.context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
        if not self.context.parameters_set():
            raise HEError(f"preset {preset.name}: SEAL refuses its parameters at 128-bit security: "
                          f"{self.context.parameters_error_message()}")
        if not self.ckks and not self.context.first_context_data().qualifiers().using_batching:
            raise HEError(f"preset {preset.name}: its plain modulus does not allow batching (it must be a prime "
                          f"= 1 mod {2 * preset.poly_modulus_degree})")
        self.encoder: Any = sealapi.CKKSEncoder(self.context) if self.ckks else sealapi.BatchEncoder(self.context)
        self.evaluator = sealapi.Evaluator(self.context)
        self._levels: dict[int, Any] = {}
        data = self.context.first_context_data()
        while data is not None:
            self._levels[len(data.parms().coeff_modulus())] = data.parms_id()
            data = data.next_context_data()
        # SEAL's serialization of each kind's level, learnt from a probe under a throwaway key.
        probe = sealapi.Encryptor(self.context, sealapi.KeyGenerator(self.context).secret_key())
        self.formats: dict[str, wire.SealFormat] = {}
        for kind in KINDS:
            row = np.zeros(preset.slots, np.float64 if self.ckks else np.int64)
            self.formats[kind] = wire.SealFormat(_scratch.save(self.seal_encrypt(probe, row, kind)),
                                                 preset.poly_modulus_degree, self.primes(kind))

    def parms_id(self, kind: Kind) -> Any:
        """The SEAL parameter id of the level at which ciphertexts of ``kind`` travel."""
        return self._levels[self.preset.level_primes(kind)]

    def primes(self, kind: Kind) -> tuple[int, ...]:
        """The primes of the level at which ciphertexts of ``kind`` travel."""
        return self.preset.coeff_modulus[:self.preset.level_primes(kind)]

    def seal_encrypt(self, encryptor: Any, row: np.ndarray, kind: Kind) -> Any:
        """A seeded symmetric encryption of one row of slots (SEAL's ``Serializable``)."""
        pt = sealapi.Plaintext()
        if self.ckks:
            self.encoder.encode(row.tolist(), self.parms_id(kind), self.scale, pt)
        else:
            self.encoder.encode(row.tolist(), pt)
        return encryptor.encrypt_symmetric(pt)

    def _load(self, data: bytes, kind: Kind, where: str) -> Any:
        """Let SEAL load (and validate) a ciphertext serialized by :class:`wire.SealFormat`."""
        ct = sealapi.Ciphertext()
        try:
            _scratch.load(ct, self.context, data)
        except Exception as exc:  # a trust boundary: SEAL raises many types on malformed input
            raise BlobError(f"{where} is malformed: SEAL refused it ({exc})") from None
        ok = ct.parms_id() == self.parms_id(kind) and ct.size() == 2 and ct.is_ntt_form() == self.ckks
        if not ok or (self.ckks and ct.scale != self.scale):
            raise BlobError(f"{where} does not have the level, size or scale of a {self.preset.name} "
                            f"'{kind}' ciphertext")
        return ct

    def ciphertext(self, c0: np.ndarray, c1: list[bytes] | np.ndarray, kind: Kind, where: str) -> Any:
        """The SEAL ciphertext of ``c0`` and the seeds (expanded and added by SEAL) or the polynomial ``c1``."""
        fmt = self.formats[kind]
        if isinstance(c1, np.ndarray):
            return self._load(fmt.full(c0, c1), kind, where)
        if not c1:
            raise BlobError(f"{where} holds no seed")
        acc = self._load(fmt.seeded(c0, c1[0]), kind, where)
        zero = np.zeros_like(c0)
        for seed in c1[1:]:
            self.evaluator.add_inplace(acc, self._load(fmt.seeded(zero, seed), kind, where))
        return acc

    def parts(self, ct: Any, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
        """``c0`` and ``c1`` of a SEAL ciphertext."""
        return self.formats[kind].full_parts(_scratch.save(ct))

    def expand(self, seeds: Sequence[bytes], kind: Kind, where: str) -> np.ndarray:
        """The sum of the ``c1`` polynomials that ``seeds`` expand to (SEAL expands them)."""
        zero = np.zeros((len(self.primes(kind)), self.preset.poly_modulus_degree), np.uint64)
        return self.parts(self.ciphertext(zero, list(seeds), kind, where), kind)[1]

    def sub_plain(self, c0: np.ndarray, row: np.ndarray, kind: Kind, where: str) -> np.ndarray:
        """``c0`` of the ciphertext minus the encoded slots ``row`` (BFV; ``c1`` is unchanged)."""
        one = np.zeros_like(c0)
        one[:, 0] = 1  # any non-zero c1: SEAL refuses to compute on a transparent ciphertext
        ct = self._load(self.formats[kind].full(c0, one), kind, where)
        pt = sealapi.Plaintext()
        self.encoder.encode(row.tolist(), pt)
        self.evaluator.sub_plain_inplace(ct, pt)
        return self.parts(ct, kind)[0]

    @functools.cached_property
    def sizes(self) -> dict[str, int]:
        """Bytes of one update chunk, and of one aggregate chunk of 10 updates (at most ``max_additions``)
        and of ``max_additions`` updates, at each kind's level."""
        n = self.preset.poly_modulus_degree
        out: dict[str, int] = {}
        for kind in KINDS:
            primes = self.primes(kind)
            out[f"{kind}_upload"] = wire.chunk_size(n, primes, "seeds", 1)
            for name, count in (("aggregate", min(10, self.preset.max_additions)),
                                ("aggregate_max", self.preset.max_additions)):
                out[f"{kind}_{name}"] = wire.chunk_size(n, primes, wire.c1_mode(count, n, primes), count)
        return out


@functools.lru_cache(maxsize=16)
def engine(preset: Preset) -> Engine:
    """The engine of ``preset``, built once per process."""
    return Engine(preset)


class SecretKey:
    """A SEAL secret key with its encryptor and decryptor. Only institutions ever build one."""

    def __init__(self, engine: Engine, key: Any, data: bytes) -> None:
        self.engine = engine
        self.data = data
        self._encryptor = sealapi.Encryptor(engine.context, key)
        self._decryptor = sealapi.Decryptor(engine.context, key)

    def __repr__(self) -> str:
        return f"SecretKey({self.engine.preset.name}, <hidden>)"

    @classmethod
    def generate(cls, engine: Engine) -> SecretKey:
        """A fresh secret key."""
        key = sealapi.KeyGenerator(engine.context).secret_key()
        return cls(engine, key, _scratch.save(key))

    @classmethod
    def from_bytes(cls, engine: Engine, data: bytes | memoryview, where: str) -> SecretKey:
        """Load a serialized secret key, refusing one that does not fit the engine's parameters."""
        key = sealapi.SecretKey()
        try:
            _scratch.load(key, engine.context, data)
        except Exception as exc:  # malformed key bytes: SEAL raises many types
            raise KeyFileError(f"{where}: the secret key does not load under {engine.preset.name} ({exc})") from None
        return cls(engine, key, bytes(data))

    def encrypt(self, rows: np.ndarray, kind: Kind) -> list[bytes]:
        """Encrypt each row (one ciphertext's slots) symmetrically; returns wire chunks (packed c0, seed)."""
        eng = self.engine
        fmt, primes = eng.formats[kind], eng.primes(kind)
        out = []
        for row in rows:
            c0, seed = fmt.seeded_parts(_scratch.save(eng.seal_encrypt(self._encryptor, row, kind)))
            out.append(wire.pack_poly(c0, primes) + seed)
        return out

    def _ciphertexts(self, chunks: Sequence[bytes | memoryview], kind: Kind, mode: str, n_summed: int,
                     where: str) -> list[Any]:
        eng = self.engine
        n, primes = eng.preset.poly_modulus_degree, eng.primes(kind)
        out = []
        for i, data in enumerate(chunks):
            what = f"{where}, ciphertext {i}"
            c0, c1 = wire.split_chunk(data, n, primes, mode, n_summed, what)
            out.append(eng.ciphertext(c0, c1, kind, what))
        return out

    def decrypt(self, chunks: Sequence[bytes | memoryview], kind: Kind, mode: str, n_summed: int,
                where: str) -> np.ndarray:
        """Decrypt and decode wire chunks into a ``(chunks, slots)`` array (int64 for BFV, float64 for CKKS).

        ``mode`` is how the chunks carry ``c1`` (:func:`fedx.he.wire.c1_mode`). A BFV ciphertext whose
        noise budget is exhausted is refused: it would decrypt to garbage.
        """
        eng = self.engine
        out = np.empty((len(chunks), eng.preset.slots), np.float64 if eng.ckks else np.int64)
        for i, ct in enumerate(self._ciphertexts(chunks, kind, mode, n_summed, where)):
            if not eng.ckks and self._decryptor.invariant_noise_budget(ct) == 0:
                raise CapacityError(f"{where}, ciphertext {i}: its noise budget is exhausted, so it cannot be "
                                    f"decrypted correctly; sum at most {eng.preset.max_additions} blobs per aggregate")
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            out[i] = eng.encoder.decode_double(pt) if eng.ckks else eng.encoder.decode_int64(pt)
        return out

    def noise_budget(self, chunks: Sequence[bytes | memoryview], kind: Kind, mode: str, n_summed: int,
                     where: str) -> int:
        """The smallest invariant noise budget (bits) over BFV ciphertexts."""
        if self.engine.ckks:
            raise HEError(f"{self.engine.preset.name} is CKKS, which has no invariant noise budget")
        if not chunks:
            raise BlobError(f"{where} holds no ciphertext")
        return min(self._decryptor.invariant_noise_budget(ct)
                   for ct in self._ciphertexts(chunks, kind, mode, n_summed, where))
