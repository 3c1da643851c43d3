"""Shared helpers of the fedx.analytics tests: synthetic institutions and independent pandas references."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedx.analytics import StatsPlan, simulate_stats
from fedx.config import StatsConfig
from fedx.privacy.policy import Policy

SIZES = (0, 37, 250, 713)  # one institution without a single row


def pooled_frame(n: int = sum(SIZES), seed: int = 0) -> pd.DataFrame:
    """A table with continuous, integer-valued (ties), boolean and categorical columns, and gaps."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 12.0, n)
    df = pd.DataFrame({
        "x": x,
        "y": 0.6 * x + rng.normal(0.0, 8.0, n),
        "claim": rng.lognormal(7.0, 1.2, n),
        "age": rng.integers(18, 90, n).astype(np.int64),
        "flag": rng.random(n) < 0.3,
        "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
        "product": rng.choice(["basic", "plus", "premium"], n, p=[0.6, 0.35, 0.05]),
        "note": rng.choice(["a", "b"], n),
    })
    for col, share in (("x", 0.05), ("y", 0.08), ("claim", 0.02), ("region", 0.03)):
        df.loc[rng.random(n) < share, col] = np.nan if col != "region" else None
    return df


def split(df: pd.DataFrame, sizes: Sequence[int] = SIZES) -> dict[str, pd.DataFrame]:
    """Consecutive slices of ``df`` as institutions ``inst0, inst1, ...`` (sizes must sum to len(df))."""
    assert sum(sizes) == len(df)
    bounds = np.cumsum([0, *sizes])
    return {f"inst{i}": df.iloc[a:b].reset_index(drop=True) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))}


def run(frames: Mapping[str, pd.DataFrame], combine: Any = None, seed: int = 0, **stats: Any) -> dict[str, Any]:
    """The federated result of a ``stats:`` section given as keywords (min_cohort 1 unless given)."""
    cfg = StatsConfig(**{"min_cohort": 1, **stats})
    return simulate_stats(StatsPlan.from_config(cfg, seed=seed), frames, Policy.from_config(cfg), combine=combine)


def assert_close(got: float | None, want: float, rel: float = 1e-6) -> None:
    """``got`` within ``rel`` relative of ``want`` (and not None)."""
    assert got is not None
    assert abs(got - want) <= rel * abs(want), f"{got!r} differs from {want!r} by more than {rel:g} relative"
