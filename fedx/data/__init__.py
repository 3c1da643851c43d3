"""Tables and schemas, synthetic generators with known ground truth, and partitioners.

This package needs only numpy, pandas and pyarrow: no torch, Flower or TenSEAL.
"""

from __future__ import annotations

from .partition import (
    PARTITIONERS,
    dirichlet_label_skew,
    iid,
    natural,
    partition,
    quantity_skew,
    train_test_split_local,
)
from .schema import FeatureSpec, Schema
from .sources import SYNTHETIC_SOURCES, load_source
from .tables import SUPPORTED_SUFFIXES, read_table

__all__ = [
    "PARTITIONERS", "SUPPORTED_SUFFIXES", "SYNTHETIC_SOURCES", "FeatureSpec", "Schema", "dirichlet_label_skew",
    "iid", "load_source", "natural", "partition", "quantity_skew", "read_table", "train_test_split_local",
]
