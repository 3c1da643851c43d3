"""The wire format of encrypted blobs: a versioned plaintext header, then one SEAL ciphertext per chunk.

The header (JSON, inside a :mod:`fedx.he.frame`) holds the preset and its parameter hash, the key
fingerprint, the stage (``update`` or ``aggregate``), the kind (``mean`` or ``sum``), array names, shapes
and dtypes, weight, rho, number of blobs summed, the ids of the updates summed, the capacity bound, the
encoding scale, the clipping and quantization report, and the size of every ciphertext. Every field is
checked with bounds before use.

Each update carries a random id; an aggregate carries the ids of every update in it, so that
:func:`fedx.he.aggregate` refuses to add the same update twice, even when it was re-serialized.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import BlobError, KeyMismatchError
from . import frame, wire
from .encoding import EncodingReport
from .schemes import KINDS, Kind, Preset

MAGIC = b"FXHE"
VERSION = 3  # 2: the ids of the updates summed; 3: packed c0, and c1 as seeds or packed (fedx.he.wire)
ID_HEX = 32  # an update id: 128 random bits, as hex
MAX_ARRAYS = 1_000_000
MAX_NDIM = 32
MAX_VALUES = 1 << 36
MAX_CHUNK = 64 << 20
MAX_CHUNKS = 1 << 24
MAX_SUMMED = 1 << 31
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")

Stage = Literal["update", "aggregate"]
C1_MODES = ("seeds", "poly")


@dataclass(frozen=True)
class BlobHeader:
    """The plaintext header of a blob, readable without keys (see :func:`fedx.he.inspect`).

    Attributes
    ----------
    version : int
        Blob format version.
    preset, params, fingerprint : str
        Preset name, hash of its parameters, and fingerprint of the keys it was encrypted under.
    stage : {"update", "aggregate"}
        One client's blob, or a sum made by :func:`fedx.he.aggregate`.
    kind : {"mean", "sum"}
        Weighted mean of model updates, or plain sum of statistics.
    names : tuple of str or None
        Keys of a dict input, or None for a list input.
    shapes, dtypes : tuple
        Shape and dtype of each array.
    weight, rho : float
        The client's weight and ``rho = weight / total_weight`` (``rho = weight`` when the total weight
        is known only after aggregation); summed in an aggregate.
    n_summed : int
        Number of client blobs summed into this one (1 for an update).
    ids : tuple of str
        The random id of each update summed into this one (one for an update), sorted.
    bound : float
        The largest |slot| the blob can hold (summed in an aggregate), checked against the preset's capacity.
    scale : float
        Encoding scale: slot = value * scale.
    report : EncodingReport
        Clipping and quantization: counts and magnitudes, summed over clients.
    chunk_sizes : tuple of int
        Byte size of each ciphertext.
    c1 : {"seeds", "poly"}
        How the chunks carry ``c1``: the seeds of the ``n_summed`` updates, or the summed polynomial
        (:mod:`fedx.he.wire`).
    """

    version: int
    preset: str
    params: str
    fingerprint: str
    stage: Stage
    kind: Kind
    names: tuple[str, ...] | None
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    weight: float
    rho: float
    n_summed: int
    ids: tuple[str, ...]
    bound: float
    scale: float
    report: EncodingReport
    chunk_sizes: tuple[int, ...]
    c1: str = "seeds"

    @property
    def chunks(self) -> int:
        """Number of ciphertexts."""
        return len(self.chunk_sizes)

    @property
    def n_values(self) -> int:
        """Number of values over all arrays."""
        return sum(math.prod(s) for s in self.shapes)

    def to_json(self) -> dict[str, Any]:
        """The header as a JSON object (without the version, which the frame carries)."""
        r = self.report
        return {"preset": self.preset, "params": self.params, "fingerprint": self.fingerprint, "stage": self.stage,
                "kind": self.kind, "names": None if self.names is None else list(self.names),
                "shapes": [list(s) for s in self.shapes], "dtypes": list(self.dtypes), "weight": self.weight,
                "rho": self.rho, "n_summed": self.n_summed, "ids": list(self.ids), "bound": self.bound,
                "scale": self.scale,
                "report": {"values": r.values, "clipped": r.clipped, "max_abs": r.max_abs, "zeroed": r.zeroed,
                           "rounding": r.rounding},
                "chunks": list(self.chunk_sizes), "c1": self.c1}

    @classmethod
    def from_json(cls, version: int, doc: dict[str, Any], what: str) -> BlobHeader:
        """Parse and bound-check a header that came from another party."""
        f = frame.Fields(doc, BlobError, what)
        shapes = tuple(_shape(f, s) for s in f.items("shapes", MAX_ARRAYS))
        n_values = sum(math.prod(s) for s in shapes)
        if n_values > MAX_VALUES:
            f.fail("shapes", f"at most {MAX_VALUES} values in total")
        raw_names = f.get("names")
        if raw_names is not None:
            names = f.items("names", len(shapes))
            if len(names) != len(shapes) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
                f.fail("names", "null or one distinct string per array")
        dtypes = f.items("dtypes", len(shapes))
        if len(dtypes) != len(shapes) or any(d not in DTYPES for d in dtypes):
            f.fail("dtypes", f"one of {DTYPES} per array")
        n_summed = f.integer("n_summed", 1, MAX_SUMMED)
        stage = f.text("stage", ("update", "aggregate"))
        if stage == "update" and n_summed != 1:
            f.fail("n_summed", "1 in an update")
        ids = f.items("ids", n_summed)
        if not all(isinstance(u, str) and len(u) == ID_HEX and all(c in "0123456789abcdef" for c in u) for u in ids):
            f.fail("ids", f"update ids of {ID_HEX} hex digits")
        if len(ids) != n_summed or len(set(ids)) < n_summed or ids != sorted(ids):
            f.fail("ids", f"{n_summed} distinct update ids (n_summed), sorted")
        r = f.sub("report")
        report = EncodingReport(values=r.integer("values", n_values, n_values),
                                clipped=r.integer("clipped", 0, n_values * n_summed),
                                max_abs=r.number("max_abs", 0.0), zeroed=r.integer("zeroed", 0, n_values * n_summed),
                                rounding=r.number("rounding", 0.0))
        return cls(version=version, preset=f.text("preset", max_len=64), params=f.hexdigits("params", 32),
                   fingerprint=f.hexdigits("fingerprint", 64), stage=stage,  # type: ignore[arg-type]
                   kind=f.text("kind", KINDS),  # type: ignore[arg-type]
                   names=None if raw_names is None else tuple(raw_names), shapes=shapes, dtypes=tuple(dtypes),
                   weight=f.number("weight", 0.0), rho=f.number("rho", 0.0), n_summed=n_summed, ids=tuple(ids),
                   bound=f.number("bound", 0.0), scale=f.number("scale", 1e-300), report=report,
                   chunk_sizes=tuple(f.check_int("chunks", c, 16, MAX_CHUNK) for c in f.items("chunks", MAX_CHUNKS)),
                   c1=f.text("c1", ("seeds",) if stage == "update" else C1_MODES))

    def check_context(self, preset: Preset, fingerprint: str, what: str) -> None:
        """Refuse a blob made under another preset, other parameters, or other keys.

        Raises
        ------
        KeyMismatchError
        """
        if self.preset != preset.name:
            raise KeyMismatchError(f"{what} is under preset {self.preset!r}, the context is {preset.name!r}")
        if self.params != preset.params_hash:
            raise KeyMismatchError(f"{what} was made with other {preset.name} parameters (for example other "
                                   f"he.bits or he.clip): parameter hash {self.params[:12]}, the context has "
                                   f"{preset.params_hash[:12]}")
        if self.fingerprint != fingerprint:
            raise KeyMismatchError(f"{what} is under keys {self.fingerprint[:12]}, the context's keys are "
                                   f"{fingerprint[:12]} (foreign or stale keys)")

    def check_layout(self, preset: Preset, what: str) -> None:
        """Refuse a blob whose ciphertext count does not fit its shapes, or whose chunks have the wrong size."""
        expected = preset.chunks_for(self.n_values, self.kind)
        if self.chunks != expected:
            raise BlobError(f"{what} holds {self.chunks} ciphertexts, but {self.n_values} values of kind "
                            f"'{self.kind}' need {expected}")
        primes = preset.coeff_modulus[:preset.level_primes(self.kind)]
        size = wire.chunk_size(preset.poly_modulus_degree, primes, self.c1, self.n_summed)
        if any(c != size for c in self.chunk_sizes):
            raise BlobError(f"{what}: its ciphertexts must be {size} bytes each ({self.kind!r}, c1 as "
                            f"{self.c1}, {self.n_summed} updates), the header lists {sorted(set(self.chunk_sizes))}")

    def check_same(self, first: BlobHeader, what: str) -> None:
        """Refuse a blob that cannot be added to ``first``.

        Kind, names, shapes or dtypes differ; or, for a mean, the blobs were weighted under different
        total weights (``rho / weight`` differs), so that the sum would not be a weighted mean.
        """
        for field in ("kind", "names", "shapes", "dtypes"):
            if getattr(self, field) != getattr(first, field):
                raise BlobError(f"{what} does not match blob 0: its {field} differ "
                                f"({_brief(getattr(self, field))} vs {_brief(getattr(first, field))})")
        if self.kind == "mean" and not math.isclose(self.rho * first.weight, first.rho * self.weight, rel_tol=1e-9):
            mine = self.rho / self.weight if self.weight else math.inf
            theirs = first.rho / first.weight if first.weight else math.inf
            raise BlobError(f"{what} was encrypted under another total_weight than blob 0 (rho / weight is "
                            f"{mine:.6g}, blob 0 has {theirs:.6g}): the blobs of one sum need the same "
                            f"total_weight, or none at all, for the sum to be their weighted mean")

    def check_disjoint(self, seen: dict[str, int], what: str) -> None:
        """Refuse a blob holding an update already summed; ``seen`` maps update ids to the blob that held them."""
        for uid in self.ids:
            if uid in seen:
                raise BlobError(f"{what} holds an update that blob {seen[uid]} already holds (update id "
                                f"{uid[:12]}): the same update added twice would count its weight twice")


def new_id() -> str:
    """A fresh random update id."""
    return secrets.token_hex(ID_HEX // 2)


def _shape(f: frame.Fields, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_NDIM:
        f.fail("shapes", f"lists of at most {MAX_NDIM} dimensions")
    return tuple(f.check_int("shapes", d, 0, MAX_VALUES) for d in raw)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def pack_blob(header: BlobHeader, chunks: Sequence[bytes]) -> bytes:
    """Serialize a header and its ciphertexts."""
    return frame.pack(MAGIC, header.version, header.to_json(), chunks)


def unpack_blob(blob: bytes | bytearray | memoryview, what: str = "blob") -> tuple[BlobHeader, list[memoryview]]:
    """Check a blob from another party and split it into its header and ciphertexts (views, no copies).

    Raises
    ------
    BlobError
        Empty, foreign, truncated, tampered with, of an unknown version, or with a malformed header.
    """

    def truncated(doc: dict[str, Any], found: int) -> str:
        sizes = BlobHeader.from_json(VERSION, doc, what).chunk_sizes
        complete, used = 0, 0
        while complete < len(sizes) and used + sizes[complete] <= found:
            used += sizes[complete]
            complete += 1
        return (f"{what} is truncated: its header says {len(sizes)} ciphertexts ({sum(sizes)} bytes), found "
                f"{complete} complete ({found} bytes{', but no checksum' if complete == len(sizes) else ''})")

    fr = frame.unpack(blob, magic=MAGIC, version=VERSION, error=BlobError, what=what, truncated=truncated)
    header = BlobHeader.from_json(fr.version, fr.header, what)
    if sum(header.chunk_sizes) != len(fr.payload):
        raise BlobError(f"{what}: its header lists {sum(header.chunk_sizes)} bytes of ciphertexts, the body has "
                        f"{len(fr.payload)}")
    chunks, offset = [], 0
    for size in header.chunk_sizes:
        chunks.append(fr.payload[offset:offset + size])
        offset += size
    return header, chunks
