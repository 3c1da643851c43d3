"""The statistics that feature preprocessing needs, from the same engine as ``fedx stats``.

:func:`moments_plan` asks for the count, sum and sum of squares of every numeric feature and the level
counts (and missing count) of every categorical one. Run its first stage like any other (no policy
applies: the sums are decrypted by the institutions and never released), and read the sums with
:meth:`StatsPlan.sufficient_statistics`.
"""

from __future__ import annotations

from ..data.schema import Schema
from .plan import StatsPlan


def moments_plan(schema: Schema) -> StatsPlan:
    """A plan of the moments of a schema's numeric features and the level counts of its categorical ones.

    Categorical features without declared levels appear in :meth:`StatsPlan.needs_levels`.
    """
    numeric = tuple(f.name for f in schema.features if f.kind == "numeric")
    categorical = tuple(f.name for f in schema.features if f.kind == "categorical")
    levels = {f.name: f.levels for f in schema.features if f.kind == "categorical" and f.levels is not None}
    return StatsPlan(columns=numeric, frequencies=categorical, levels=levels)
