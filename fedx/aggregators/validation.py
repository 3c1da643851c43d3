"""Server-side checks of each client's update, for every aggregator.

A check returns ``None`` when the update is acceptable, or a one-line reason to drop it. Dropping a
client's update never stops the round by itself: the round goes on when at least ``min_clients``
valid updates remain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def check_plain_update(update: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]],
                       max_norm: float | None = None) -> str | None:
    """Reason to refuse a plaintext delta: wrong count or shape, NaN/Inf, or an absurd L2 norm."""
    if len(update) != len(shapes):
        return f"update has {len(update)} arrays, the model has {len(shapes)}"
    sq = 0.0
    for i, (a, shape) in enumerate(zip(update, shapes)):
        if tuple(a.shape) != tuple(shape):
            return f"array {i} has shape {tuple(a.shape)}, expected {tuple(shape)}"
        if not np.issubdtype(a.dtype, np.floating):
            return f"array {i} has dtype {a.dtype}, expected floating point"
        if not np.all(np.isfinite(a)):
            return f"array {i} holds NaN or Inf"
        sq += float(np.sum(np.square(a, dtype=np.float64)))
    norm = float(np.sqrt(sq))
    if max_norm is not None and norm > max_norm:
        return f"update norm {norm:.4g} exceeds federation.max_update_norm {max_norm:.4g}"
    return None


def check_blob_header(header: Any, expected: Mapping[str, Any]) -> str | None:
    """Reason to refuse an encrypted update from its header alone (no key needed).

    ``expected`` holds ``preset``, ``params`` (the preset's parameter hash), ``fingerprint``,
    ``shapes`` and ``kind`` ("mean" or "sum"); ``header`` is what :func:`fedx.he.inspect` returned.
    """
    if header.stage != "update":
        return f"blob is an {header.stage}, expected one client's update"
    if header.preset != expected["preset"] or header.params != expected["params"]:
        return (f"blob is under preset {header.preset!r} (parameters {header.params[:12]}), the run uses "
                f"{expected['preset']!r} ({expected['params'][:12]})")
    if header.fingerprint != expected["fingerprint"]:
        return (f"blob is under keys {header.fingerprint[:12]}, the run's keys are "
                f"{expected['fingerprint'][:12]} (wrong or foreign keys)")
    shapes = [tuple(s) for s in header.shapes]
    want = [tuple(s) for s in expected["shapes"]]
    if shapes != want:
        return f"blob holds shapes {shapes}, the model has {want}"
    if header.kind != expected["kind"]:
        return f"blob is of kind {header.kind!r}, expected {expected['kind']!r}"
    return None
