"""The bytes of the vertical GLM: message framing, and the per-row vector schemes (CKKS or plaintext).

A message is one frame of :mod:`fedx.he.frame` (JSON header, byte parts, SHA-256): ``kind``, ``round``, a
JSON ``meta`` (small aggregates and coefficients, exact as JSON floats) and ``parts`` (encrypted vectors and
sums). No pickle: the bytes come from another party.

A *vector scheme* is what a key owner uses for its per-row vectors: :class:`CkksVectors` (``fedx.he.vectors``)
or :class:`PlainVectors` (encryption ``none``, for simulation: the same protocol with float64 payloads).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import BlobError, ConfigError
from ..he import frame

__all__ = ["Message", "PlainVectors", "VectorEvaluatorLike", "VectorOwner", "decode_message", "encode_message",
           "make_evaluator", "make_owner", "message_kind"]

_MAGIC = b"FXVG"
_VERSION = 1


@dataclass
class Message:
    """One protocol message: its kind, the Newton round, JSON metadata and byte parts."""

    kind: str
    round: int
    meta: dict[str, Any] = field(default_factory=dict)
    parts: list[bytes] = field(default_factory=list)


def encode_message(msg: Message) -> bytes:
    """The framed bytes of ``msg``."""
    head = {"kind": msg.kind, "round": msg.round, "meta": msg.meta, "sizes": [len(p) for p in msg.parts]}
    return frame.pack(_MAGIC, _VERSION, head, msg.parts)


def message_kind(data: bytes | memoryview) -> str:
    """The kind of a framed message, read from its header alone (for ledgers and progress; not a check)."""
    view = memoryview(data).cast("B")
    try:
        _, _, head_len, _ = frame.PREFIX.unpack_from(view)
        return str(json.loads(bytes(view[frame.PREFIX.size:frame.PREFIX.size + head_len])).get("kind", "unknown"))
    except (ValueError, struct.error, AttributeError):
        return "unknown"


def decode_message(data: bytes | memoryview, expect: str | Sequence[str], where: str) -> Message:
    """Check and split a message; ``expect`` is the kind (or kinds) allowed at this point of the protocol."""
    got = frame.unpack(data, magic=_MAGIC, version=_VERSION, error=BlobError, what=where)
    head = got.header
    kinds = [expect] if isinstance(expect, str) else list(expect)
    sizes = head.get("sizes")
    if head.get("kind") not in kinds:
        raise BlobError(f"{where}: expected a {' or '.join(kinds)} message, got {head.get('kind')!r}")
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes) \
            or sum(sizes) != len(got.payload) or not isinstance(head.get("meta"), dict):
        raise BlobError(f"{where}: malformed message header")
    parts, start = [], 0
    for size in sizes:
        parts.append(bytes(got.payload[start:start + size]))
        start += size
    return Message(head["kind"], int(head.get("round", 0)), head["meta"], parts)


class VectorOwner(Protocol):
    """A key owner's side of a vector scheme."""

    def public_bytes(self) -> bytes: ...
    def encrypt(self, values: np.ndarray) -> bytes: ...
    def decrypt_sums(self, data: bytes | memoryview, where: str = ...) -> np.ndarray: ...


class VectorEvaluatorLike(Protocol):
    """The other party's side: inner products of the owner's vectors with its plaintext vectors."""

    def load_vector(self, data: bytes | memoryview, rows: int, where: str = ..., chained: bool = ...) -> Any: ...
    def multiply_rows(self, vector: Any, plains: Sequence[np.ndarray]) -> list[bytes]: ...
    def encode(self, plains: Sequence[np.ndarray], chained: bool = ...) -> Any: ...
    def inner_sums(self, vector: Any, plains: Sequence[np.ndarray] | None = None, masks: np.ndarray | None = None,
                   *, encoded: Any = None, count: int | None = None) -> bytes: ...


class PlainVectors:
    """Encryption ``none``: the same messages with float64 payloads (simulation only; nothing is hidden)."""

    def public_bytes(self) -> bytes:
        return b"plain"

    def encrypt(self, values: np.ndarray) -> bytes:
        return np.ascontiguousarray(values, dtype="<f8").tobytes()

    def decrypt_sums(self, data: bytes | memoryview, where: str = "sums") -> np.ndarray:
        if len(data) % 8:
            raise BlobError(f"{where}: not a float64 array")
        return np.frombuffer(data, dtype="<f8").copy()

    def load_vector(self, data: bytes | memoryview, rows: int, where: str = "vector",
                    chained: bool = False) -> np.ndarray:
        if len(data) % 8:
            raise BlobError(f"{where}: not a float64 array")
        vec = np.frombuffer(data, dtype="<f8")
        if vec.shape != (rows,):
            raise BlobError(f"{where}: holds {vec.size} rows; the shared rows are {rows}")
        return vec

    def multiply_rows(self, vector: Any, plains: Sequence[np.ndarray]) -> list[bytes]:
        vec = np.asarray(vector, dtype=np.float64)
        return [np.ascontiguousarray(vec * np.asarray(f, dtype=np.float64), dtype="<f8").tobytes() for f in plains]

    def encode(self, plains: Sequence[np.ndarray], chained: bool = False) -> list[np.ndarray]:
        return [np.asarray(f, dtype=np.float64) for f in plains]

    def inner_sums(self, vector: Any, plains: Sequence[np.ndarray] | None = None, masks: np.ndarray | None = None,
                   *, encoded: Any = None, count: int | None = None) -> bytes:
        plains = encoded if plains is None else plains
        vec = vector if isinstance(vector, np.ndarray) else np.frombuffer(vector, dtype="<f8")
        sums = np.array([float(vec @ np.asarray(f, dtype=np.float64)) for f in plains])
        if masks is not None:
            sums = sums + masks[:len(sums)]
        return sums.astype("<f8").tobytes()


def make_owner(encryption: str) -> VectorOwner:
    """A fresh vector key for ``encryption`` (``ckks`` or ``none``)."""
    if encryption == "none":
        return PlainVectors()
    if encryption == "ckks":
        from ..he.vectors import VectorKey
        return VectorKey.generate()
    raise ConfigError(f"security.encryption: a vertical GLM takes 'ckks' or 'none', got {encryption!r}")


def make_evaluator(encryption: str, public: bytes) -> VectorEvaluatorLike:
    """The evaluator of another party's vectors from its :meth:`VectorOwner.public_bytes`."""
    if encryption == "none":
        if public != b"plain":
            raise BlobError("public vector context: expected a plaintext-mode context")
        return PlainVectors()
    from ..he.vectors import VectorEvaluator
    return VectorEvaluator(public)
