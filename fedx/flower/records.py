"""fedx values <-> Flower records.

A message's content holds at most these records:

- ``"fedx"`` (ConfigRecord): one JSON document with the phase, the round and small values.
- ``"payload"`` (ArrayRecord): plaintext arrays (keys ``"0000"``, ``"0001"``, ... in order), or
  ciphertext blobs as byte arrays tagged with :data:`STYPE_HE` (keys name what they are).
- ``"stats"`` (ArrayRecord): additive evaluation statistics, keyed by name.
- ``"metrics"`` (MetricRecord): scalars such as the number of examples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from ..errors import FederationError

STYPE_HE = "fedx-he/1"
JSON_KEY = "json"


def json_record(doc: Mapping[str, Any]) -> ConfigRecord:
    """A ConfigRecord that carries one JSON document."""
    return ConfigRecord({JSON_KEY: json.dumps(doc, separators=(",", ":"))})


def read_json(content: RecordDict, key: str = "fedx") -> dict[str, Any]:
    """The JSON document of ``content[key]``; a clear error when it is missing or malformed."""
    if key not in content.config_records:
        raise FederationError(f"message has no '{key}' record")
    text = content.config_records[key].get(JSON_KEY)
    if not isinstance(text, str):
        raise FederationError(f"message record '{key}' has no JSON document")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FederationError(f"message record '{key}' holds malformed JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise FederationError(f"message record '{key}' holds {type(doc).__name__}, expected an object")
    return doc


def arrays_record(arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Plaintext arrays, in order."""
    return ArrayRecord({f"{i:04d}": Array(np.ascontiguousarray(a)) for i, a in enumerate(arrays)})


def named_arrays_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Plaintext arrays, by name."""
    return ArrayRecord({k: Array(np.ascontiguousarray(np.asarray(v))) for k, v in arrays.items()})


def blobs_record(blobs: Mapping[str, bytes]) -> ArrayRecord:
    """Ciphertext blobs, by name, as opaque byte arrays."""
    return ArrayRecord({k: Array(dtype="bytes", shape=(len(b),), stype=STYPE_HE, data=bytes(b))
                        for k, b in blobs.items()})


def payload_record(payload: Sequence[np.ndarray] | bytes) -> ArrayRecord:
    """A plaintext update (arrays) or an encrypted one (one blob named ``"blob"``)."""
    if isinstance(payload, (bytes, bytearray)):
        return blobs_record({"blob": bytes(payload)})
    return arrays_record(payload)


def read_blobs(record: ArrayRecord) -> dict[str, bytes]:
    """The ciphertext blobs of a record; non-blob entries are an error."""
    out = {}
    for key, arr in record.items():
        if arr.stype != STYPE_HE:
            raise FederationError(f"record entry '{key}' is {arr.stype}, expected ciphertext ({STYPE_HE})")
        out[key] = bytes(arr.data)
    return out


def read_arrays(record: ArrayRecord) -> list[np.ndarray]:
    """Plaintext arrays in key order; anything but numpy arrays is an error."""
    out = []
    for key in sorted(record.keys()):
        arr = record[key]
        if arr.stype != "numpy.ndarray":
            raise FederationError(f"record entry '{key}' is {arr.stype}, expected a plaintext array")
        try:
            out.append(arr.numpy())
        except (ValueError, TypeError, OSError) as exc:
            raise FederationError(f"record entry '{key}' is not a readable array: {exc}") from None
    return out


def read_named_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Plaintext arrays by name."""
    return dict(zip(sorted(record.keys()), read_arrays(record)))


def stats_record(stats: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Additive statistics; mostly-zero arrays (score histograms) travel as indices and values."""
    out: dict[str, np.ndarray] = {}
    for name, value in stats.items():
        a = np.asarray(value)
        nz = np.flatnonzero(a)
        if a.size >= 64 and nz.size * 3 < a.size:
            out[f"{name}#shape"] = np.asarray(a.shape, dtype=np.int64)
            out[f"{name}#idx"] = nz.astype(np.int32 if a.size < 2**31 else np.int64)
            out[f"{name}#val"] = a.ravel()[nz]
        else:
            out[name] = a
    return named_arrays_record(out)


def read_stats(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Inverse of :func:`stats_record`, with bounds checks on the sparse parts."""
    raw = read_named_arrays(record)
    out: dict[str, np.ndarray] = {k: v for k, v in raw.items() if "#" not in k}
    for key in [k for k in raw if k.endswith("#shape")]:
        name = key[: -len("#shape")]
        shape = tuple(int(d) for d in raw[key])
        idx, val = raw.get(f"{name}#idx"), raw.get(f"{name}#val")
        size = int(np.prod(shape)) if shape else 1
        if idx is None or val is None or idx.shape != val.shape or size > 1 << 28 \
                or (idx.size and (idx.min() < 0 or idx.max() >= size)):
            raise FederationError(f"statistics entry '{name}' is malformed")
        dense = np.zeros(size, dtype=val.dtype)
        dense[idx] = val
        out[name] = dense.reshape(shape)
    return out


def read_payload(record: ArrayRecord) -> list[np.ndarray] | bytes:
    """Inverse of :func:`payload_record`."""
    if any(arr.stype == STYPE_HE for arr in record.values()):
        blobs = read_blobs(record)
        if set(blobs) != {"blob"}:
            raise FederationError(f"encrypted payload must hold one blob, found {sorted(blobs)}")
        return blobs["blob"]
    return read_arrays(record)


def content_bytes(content: RecordDict) -> int:
    """Size of a message's content as Flower serializes it (protobuf), in bytes."""
    return int(recorddict_to_proto(content).ByteSize())


def payload_parts(content: RecordDict) -> list[bytes]:
    """The raw bytes of every array and document in ``content``, in a stable order (for audit hashes)."""
    parts: list[bytes] = []
    for name in sorted(content.config_records):
        parts.append(content.config_records[name].get(JSON_KEY, "").encode())
    for name in sorted(content.array_records):
        rec = content.array_records[name]
        for key in sorted(rec.keys()):
            parts.append(bytes(rec[key].data))
    for name in sorted(content.metric_records):
        parts.append(json.dumps(dict(content.metric_records[name]), sort_keys=True).encode())
    return parts
