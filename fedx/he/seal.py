"""The SEAL backend: the one module of fedx that imports TenSEAL.

It drives ``tenseal.sealapi`` directly, not TenSEAL's high-level vectors: SEAL's symmetric encryption
yields *seeded* ciphertexts (half the size on the wire), and nothing is ever printed to stdout.

sealapi saves and loads objects only through file paths. Each thread of each process keeps one anonymous
in-memory file (``memfd``) and hands SEAL its ``/proc/self/fd`` path, so neither ciphertexts nor keys touch
a disk or a shared directory, and the file is emptied after every use.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import struct
import tempfile
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from ..errors import BlobError, CapacityError, HEError, KeyFileError

from .schemes import BfvPreset, CkksPreset, Kind, Preset

#: SEAL's own serialization header: magic, header size, version, compression mode, reserved, total size.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E


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

    An engine holds no key: the server builds one from the preset alone, loads ciphertexts and adds them.
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

    def parms_id(self, kind: Kind) -> Any:
        """The SEAL parameter id of the level at which ciphertexts of ``kind`` travel."""
        return self._levels[self.preset.level_primes(kind)]

    def load(self, data: bytes | memoryview, kind: Kind, where: str) -> Any:
        """Load and validate one ciphertext of ``kind`` that came from another party."""
        if len(data) < _SEAL_HEADER.size:
            raise BlobError(f"{where} is {len(data)} bytes, too short for a SEAL ciphertext")
        magic, header_size, _, _, compression, _, size = _SEAL_HEADER.unpack_from(data)
        if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or size != len(data) or compression > 2:
            raise BlobError(f"{where} is not a SEAL ciphertext (bad SEAL header)")
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

    def add_inplace(self, acc: Any, ct: Any) -> None:
        """``acc += ct``."""
        self.evaluator.add_inplace(acc, ct)

    @staticmethod
    def save(obj: Any) -> bytes:
        """Serialize a ciphertext (or any SEAL object) to bytes."""
        return _scratch.save(obj)

    @functools.cached_property
    def sizes(self) -> dict[str, int]:
        """Measured bytes of one seeded (upload) and one full (aggregate) ciphertext at each kind's level."""
        key = SecretKey.generate(self)
        kinds: tuple[Kind, ...] = ("mean", "sum")
        out: dict[str, int] = {}
        for kind in kinds:
            (seeded,) = key.encrypt(np.zeros((1, self.preset.slots), np.float64 if self.ckks else np.int64), kind)
            out[f"{kind}_upload"] = len(seeded)
            out[f"{kind}_aggregate"] = len(self.save(self.load(seeded, kind, "size probe")))
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
        """Encrypt each row (one ciphertext's slots) symmetrically; returns seeded serialized ciphertexts."""
        eng = self.engine
        parms_id = eng.parms_id(kind)
        out = []
        for row in rows:
            pt = sealapi.Plaintext()
            if eng.ckks:
                eng.encoder.encode(row.tolist(), parms_id, eng.scale, pt)
            else:
                eng.encoder.encode(row.tolist(), pt)
            out.append(_scratch.save(self._encryptor.encrypt_symmetric(pt)))
        return out

    def decrypt(self, chunks: Sequence[bytes | memoryview], kind: Kind, where: str) -> np.ndarray:
        """Decrypt and decode ciphertexts into a ``(chunks, slots)`` array (int64 for BFV, float64 for CKKS).

        A BFV ciphertext whose noise budget is exhausted is refused: it would decrypt to garbage.
        """
        eng = self.engine
        out = np.empty((len(chunks), eng.preset.slots), np.float64 if eng.ckks else np.int64)
        for i, data in enumerate(chunks):
            ct = eng.load(data, kind, f"{where}, ciphertext {i}")
            if not eng.ckks and self._decryptor.invariant_noise_budget(ct) == 0:
                raise CapacityError(f"{where}, ciphertext {i}: its noise budget is exhausted, so it cannot be "
                                    f"decrypted correctly; sum at most {eng.preset.max_additions} blobs per aggregate")
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            out[i] = eng.encoder.decode_double(pt) if eng.ckks else eng.encoder.decode_int64(pt)
        return out

    def noise_budget(self, chunks: Sequence[bytes | memoryview], kind: Kind, where: str) -> int:
        """The smallest invariant noise budget (bits) over BFV ciphertexts."""
        if self.engine.ckks:
            raise HEError(f"{self.engine.preset.name} is CKKS, which has no invariant noise budget")
        if not chunks:
            raise BlobError(f"{where} holds no ciphertext")
        return min(self._decryptor.invariant_noise_budget(self.engine.load(c, kind, f"{where}, ciphertext {i}"))
                   for i, c in enumerate(chunks))
