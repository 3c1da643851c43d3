"""Per-institution profiles of the synthetic generators: share checks and resizing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from ...errors import ConfigError

P = TypeVar("P")


def check_shares(values: Sequence[float], n: int, where: str) -> None:
    """Raise ConfigError unless ``values`` are ``n`` finite non-negative numbers with a positive sum."""
    if len(values) != n or any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f"{where}: expected {n} non-negative numbers with a positive sum, got {tuple(values)}")


def resized(profiles: Sequence[P], sizes: Sequence[Any], size_field: str, scaled: Sequence[str] = ()) -> list[P]:
    """Copies of ``profiles`` with ``size_field`` set from ``sizes``; ``scaled`` fields follow in proportion.

    Raises
    ------
    ConfigError
        When there is not one positive whole size per profile.
    """
    if len(sizes) != len(profiles):
        raise ConfigError(f"sizes: expected {len(profiles)} sizes (one per profile), got {len(sizes)}")
    out = []
    for profile, size in zip(profiles, sizes):
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not float(size).is_integer() or size < 1:
            raise ConfigError(f"sizes: expected positive whole numbers, got {size!r}")
        ratio = int(size) / getattr(profile, size_field)
        changes = {f: max(1, round(getattr(profile, f) * ratio)) for f in scaled}
        out.append(replace(profile, **{size_field: int(size)}, **changes))  # type: ignore[type-var]
    return out
