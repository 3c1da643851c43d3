"""Tables and schemas, synthetic generators with known ground truth, and partitioners.

This package needs only numpy, pandas and pyarrow: no torch, Flower or TenSEAL.
"""

from __future__ import annotations

from .local import derive_seed, local_split, prepare_table
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
    "PARTITIONERS", "SUPPORTED_SUFFIXES", "SYNTHETIC_SOURCES", "FeatureSpec", "Schema", "derive_seed",
    "dirichlet_label_skew", "iid", "load_source", "local_split", "natural", "partition", "prepare_table",
    "quantity_skew", "read_table", "train_test_split_local",
]
