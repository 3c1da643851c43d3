"""The schema that a run's config declares for its data (or that is inferred from one table)."""

from __future__ import annotations

import pandas as pd

from ..config import Config
from .schema import FeatureSpec, Schema


def non_feature_columns(cfg: Config) -> set[str]:
    """The columns that are never features: the target, exposure, weight and split_by columns, and ``data.drop``."""
    d = cfg.data
    return {c for c in (d.target, d.exposure, d.weight, d.split_by) if c} | set(d.drop)


def schema_for(cfg: Config, df: pd.DataFrame | None = None) -> Schema:
    """The run's schema.

    Features come from ``data.features`` (with ``data.levels``) when declared. Otherwise they are
    inferred from ``df``, leaving out the target, exposure, weight, split_by and ``data.drop``
    columns; inferred categorical levels are left undiscovered, so that the federation discovers
    them across institutions instead of each institution using only its own.
    """
    d = cfg.data
    if d.features is not None:
        feats = tuple(FeatureSpec(name, kind, tuple(str(v) for v in d.levels[name]) if name in d.levels else None)
                      for name, kind in d.features.items())
    else:
        if df is None:
            raise ValueError("schema_for: data.features is not declared, so a table is needed to infer it")
        inferred = Schema.infer(df, target=d.target, exclude=non_feature_columns(cfg))
        feats = tuple(FeatureSpec(f.name, f.kind, tuple(str(v) for v in d.levels[f.name])
                                  if f.name in d.levels else None) for f in inferred.features)
    return Schema(features=feats, target=d.target, exposure=d.exposure, weight=d.weight, split_by=d.split_by)
