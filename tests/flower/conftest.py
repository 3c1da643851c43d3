"""Shared fixtures: a small CSV federation that simulations can run on in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def make_table(seed: int = 0) -> pd.DataFrame:
    """Three institutions of unequal size; a binary target with signal in numeric and categorical features."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, n, shift in (("north", 900, 0.0), ("south", 500, 0.5), ("east", 250, -0.5)):
        x1 = rng.normal(shift, 1.0, n)
        x2 = rng.normal(0.0, 2.0, n)
        cat = rng.choice(["a", "b", "c"] if name != "east" else ["a", "d"], n)
        logit = -2.0 + 1.5 * x1 - 0.5 * x2 + np.where(cat == "b", 1.0, 0.0) + np.where(cat == "d", -1.0, 0.0)
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        x2[rng.random(n) < 0.05] = np.nan
        parts.append(pd.DataFrame({"site": name, "x1": x1, "x2": x2, "cat": cat, "label": y}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sites.csv"
    make_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_config():
    """``small_config(csv, section={...})``: a config dict for the small federation."""
    return _small_config


def _small_config(csv: Path, **sections: dict) -> dict:
    doc = {
        "name": "small",
        "seed": 3,
        "task": "disease_risk",
        "model": {"kind": "logistic"},
        "data": {"source": str(csv), "split_by": "site", "target": "label"},
        "train": {"lr": 0.05, "batch_size": 64},
        "federation": {"rounds": 2, "local_epochs": 1, "min_clients": 3},
        "security": {"encryption": "none"},
        "report": {"baselines": ["local", "centralized"]},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value}
    return doc
