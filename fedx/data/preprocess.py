"""Feature preprocessing fitted from summed per-institution statistics, never from pooled rows.

Each institution computes, on its own training rows, the statistics of the schema's moments plan
(:func:`fedx.analytics.moments_plan`, the same engine as ``fedx stats``): for every numeric feature
its count of present values, sum and sum of squares, and for every categorical feature the count of
each level and of missing cells. The vectors are added across institutions (under encryption when it
is on), and every institution fits the same :class:`Preprocessor` from the sum. Categorical levels
come from the config, or from each institution's level names united by :func:`merge_levels`.

The design matrix uses treatment coding: the first level of a categorical feature is the reference,
every other level gets a ``col[T.level]`` column, as statsmodels names them. Numeric features are
imputed with the federated mean and, when ``standardize`` is on, scaled by the federated mean and
standard deviation. Where a feature has gaps anywhere in the federation, a ``col[missing]`` indicator
column records them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, SchemaError
from .schema import FeatureSpec, Schema

log = logging.getLogger(__name__)

MISSING = "missing"


def merge_levels(parts: Sequence[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """The union of several institutions' level lists, sorted."""
    merged: dict[str, set[str]] = {}
    for part in parts:
        for name, levels in part.items():
            merged.setdefault(name, set()).update(str(v) for v in levels)
    return {name: sorted(levels) for name, levels in merged.items()}


def with_levels(schema: Schema, levels: Mapping[str, Sequence[str]]) -> Schema:
    """``schema`` with the given levels filled in for categorical features that had none."""
    feats = []
    for spec in schema.features:
        if spec.kind == "categorical" and spec.levels is None:
            if spec.name not in levels:
                raise SchemaError(f"feature {spec.name}: no levels declared or discovered")
            spec = FeatureSpec(spec.name, "categorical", tuple(str(v) for v in levels[spec.name]))
        feats.append(spec)
    return Schema(features=tuple(feats), target=schema.target, exposure=schema.exposure,
                  weight=schema.weight, split_by=schema.split_by)


@dataclass(frozen=True)
class Preprocessor:
    """Turns an institution's DataFrame into the shared design matrix.

    Build it with :meth:`fit` from summed moments; every institution that fits from the same sum
    gets the same preprocessor (compare :attr:`digest`).
    """

    schema: Schema
    means: dict[str, float]
    scales: dict[str, float]
    indicators: tuple[str, ...]
    level_counts: dict[str, dict[str, float]] = field(default_factory=dict)
    n_rows: float = 0.0

    @classmethod
    def fit(cls, schema: Schema, sums: Mapping[str, Any], *, standardize: bool = True,
            missing_indicators: bool = True) -> Preprocessor:
        """Fit from summed statistics of every institution's training rows.

        ``sums`` is what :meth:`fedx.analytics.StatsPlan.sufficient_statistics` returns for the
        schema's moments plan: ``rows``, ``moments`` {numeric feature: {count, sum, sumsq}} and
        ``frequencies`` {categorical feature: {counts: {level: n}, missing}}.
        """
        try:
            n_rows = float(sums["rows"])
            moments, freqs = sums["moments"], sums["frequencies"]
        except (KeyError, TypeError):
            raise DataError("summed statistics lack rows, moments or frequencies") from None
        means: dict[str, float] = {}
        scales: dict[str, float] = {}
        indicators: list[str] = []
        counts: dict[str, dict[str, float]] = {}
        for spec in schema.features:
            if spec.kind == "numeric":
                m = moments.get(spec.name)
                if m is None:
                    raise DataError(f"feature {spec.name}: no summed statistics for it")
                n, s1, s2 = float(m["count"]), float(m["sum"]), float(m["sumsq"])
                if not all(np.isfinite([n, s1, s2])):
                    raise DataError(f"feature {spec.name}: summed statistics hold NaN or Inf")
                if n <= 0:
                    raise DataError(f"feature {spec.name}: no institution has a single value of it")
                mean = s1 / n
                std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
                means[spec.name] = mean
                scales[spec.name] = std if std > 1e-12 else 1.0
                if missing_indicators and n < n_rows:
                    indicators.append(spec.name)
            else:
                _require_levels(spec)
                f = freqs.get(spec.name)
                if f is None:
                    raise DataError(f"feature {spec.name}: no summed level counts for it")
                counts[spec.name] = {lvl: float(f["counts"].get(lvl, 0.0)) for lvl in spec.levels or ()}
                if missing_indicators and float(f["missing"]) > 0:
                    indicators.append(spec.name)
        return cls(schema=schema, means=means, scales=scales if standardize else {},
                   indicators=tuple(indicators), level_counts=counts, n_rows=n_rows)

    @property
    def standardize(self) -> bool:
        """Whether numeric features are centred and scaled."""
        return bool(self.scales)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the design-matrix columns, in order."""
        names: list[str] = []
        for spec in self.schema.features:
            if spec.kind == "numeric":
                names.append(spec.name)
            else:
                names += [f"{spec.name}[T.{lvl}]" for lvl in (spec.levels or ())[1:]]
            if spec.name in self.indicators:
                names.append(f"{spec.name}[{MISSING}]")
        return tuple(names)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The float32 design matrix of ``df`` (no intercept column)."""
        cols: list[np.ndarray] = []
        n = len(df)
        for spec in self.schema.features:
            if spec.name not in df.columns:
                raise SchemaError(f"column {spec.name} is missing from the data")
            col = df[spec.name]
            if spec.kind == "numeric":
                x = _numeric(col, spec.name)
                miss = np.isnan(x)
                x = np.where(miss, self.means[spec.name], x)
                if self.standardize:
                    x = (x - self.means[spec.name]) / self.scales[spec.name]
                cols.append(x)
            else:
                levels = list(spec.levels or ())
                s = col.astype("string")
                miss = col.isna().to_numpy()
                known = s.isin(levels).to_numpy() | miss
                if not known.all():
                    bad = sorted(set(s[~known].astype(str)))[:5]
                    log.warning("feature %s: %d rows hold levels outside the shared levels %s; they are "
                                "coded as the reference level", spec.name, int((~known).sum()), bad)
                for lvl in levels[1:]:
                    cols.append((s == lvl).fillna(False).to_numpy(dtype=np.float64))
            if spec.name in self.indicators:
                cols.append(miss.astype(np.float64))
        if not cols:
            return np.zeros((n, 0), dtype=np.float32)
        return np.column_stack(cols).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, from which :meth:`from_dict` rebuilds the preprocessor."""
        return {
            "features": [{"name": s.name, "kind": s.kind, "levels": list(s.levels) if s.levels else None}
                         for s in self.schema.features],
            "target": self.schema.target, "exposure": self.schema.exposure, "weight": self.schema.weight,
            "means": self.means, "scales": self.scales, "indicators": list(self.indicators),
            "level_counts": self.level_counts, "n_rows": self.n_rows,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`."""
        try:
            feats = tuple(FeatureSpec(f["name"], f["kind"], tuple(f["levels"]) if f["levels"] else None)
                          for f in d["features"])
            schema = Schema(features=feats, target=d["target"], exposure=d.get("exposure"),
                            weight=d.get("weight"))
            return cls(schema=schema, means=dict(d["means"]), scales=dict(d["scales"]),
                       indicators=tuple(d["indicators"]), level_counts=dict(d.get("level_counts", {})),
                       n_rows=float(d.get("n_rows", 0.0)))
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed preprocessor description: {exc}") from None

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal digests mean identical preprocessing."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _require_levels(spec: FeatureSpec) -> None:
    if spec.levels is None:
        raise SchemaError(f"feature {spec.name}: categorical levels must be declared or discovered first")
    if len(spec.levels) == 0:
        raise SchemaError(f"feature {spec.name}: no institution holds a single level of it")


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    try:
        x = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise SchemaError(f"feature {name}: expected numbers, found {col.dropna().astype(str).iloc[0]!r}") from None
    if np.isinf(x).any():
        raise SchemaError(f"feature {name}: holds an infinite value")
    return x
