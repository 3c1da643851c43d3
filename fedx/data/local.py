"""One institution's own table: read it, clean it as the config says, and split it into train and test.

Every part of fedx that needs an institution's rows goes through here, so they all see the same rows:
the node itself (:class:`fedx.institution.Institution`), the centralized and local baselines, the
in-process runner, and a bank that wants to score the rows its run held out (:func:`local_split`).
The split is deterministic: it depends on the run's seed, the institution's name and the table alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .partition import train_test_split_local
from .tables import mask_na_codes, read_table

if TYPE_CHECKING:
    from ..config import Config


def derive_seed(*parts: object) -> int:
    """A 31-bit seed derived from the given parts (stable across processes and machines)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def prepare_table(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """An institution's raw table, cleaned as the config says.

    ``data.na_values`` marks codes that mean "missing" (for example a cholesterol of 0); with
    ``data.target_above`` the target becomes 1 where it exceeds that value and 0 elsewhere.
    """
    return _clean(df, cfg.data.na_values, cfg.data.target, cfg.data.target_above)


def local_split(df: pd.DataFrame, cfg: Config, name: str, task: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild the (train, test) rows that a run used at institution ``name``, from its raw table.

    A run holds out part of each institution's rows (``data.test_fraction``) and scores every model
    on them. This gives back exactly those rows, so that an institution can score its own held-out
    rows with the federated model (``fedx.load_model``) after the run, for example::

        from fedx.tasks import get_task

        cfg = fedx.load_config("fedx.yaml")
        train, test = fedx.local_split(df, cfg, "bank_a", get_task(cfg.task))
        p = fedx.load_model("runs/.../institutions/bank_a/model.pt").predict_proba(test)[:, 1]

    Parameters
    ----------
    df : pandas.DataFrame
        The institution's raw table, as read from its file (before ``data.na_values`` and
        ``data.target_above`` apply); the rows keep its index.
    cfg : Config
        The run's config: ``seed``, ``data.test_fraction``, the target and weight columns.
    name : str
        The institution's name in the run (the split's seed depends on it).
    task : Task
        The run's task (``fedx.tasks.get_task(cfg.task)``): a binary target is split stratified,
        and for claim severity only the rows with claims (positive weight) are kept.

    Returns
    -------
    (train, test)
        The cleaned table (:func:`prepare_table`) split into the two parts, in the run's row order.
    """
    d = cfg.data
    return _split(prepare_table(df, cfg), name, cfg.seed, d.test_fraction, d.target, d.weight, task.name,
                  task.target_kind)


def read_cached(path: Path) -> pd.DataFrame:
    """The table at ``path`` as read, once per process (read again when the file changes)."""
    p = Path(path)
    return _read_cached(str(p.resolve()), p.stat().st_mtime)


def prepared_cached(path: Path, cfg: Config) -> pd.DataFrame:
    """:func:`prepare_table` of the table at ``path``, once per process and config."""
    p = Path(path)
    return _prepared_cached(str(p.resolve()), p.stat().st_mtime, _prep_key(cfg))


def split_cached(path: Path, cfg: Config, name: str, task: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`local_split` of the table at ``path``, once per process, config and institution."""
    p, d = Path(path), cfg.data
    return _split_cached(str(p.resolve()), p.stat().st_mtime, _prep_key(cfg), name, cfg.seed, d.test_fraction,
                         d.target, d.weight, task.name, task.target_kind)


def _clean(df: pd.DataFrame, na_values: Mapping[str, list[Any]], target: str | None,
           target_above: float | None) -> pd.DataFrame:
    missing = [col for col in na_values if col not in df.columns]
    if missing:
        raise DataError(f"data.na_values: column {missing[0]!r} is not in the data")
    df = mask_na_codes(df, na_values)
    if target_above is not None and target in df.columns:
        y = pd.to_numeric(df[target], errors="coerce")
        if y.isna().any():
            raise DataError(f"data.target_above: column {target!r} holds values that are not numbers")
        df = df.assign(**{target: (y > target_above).astype(np.int64)})
    return df


def _split(df: pd.DataFrame, name: str, seed: int, test_fraction: float, target: str, weight: str | None,
           task_name: str, target_kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if task_name == "claim_severity" and weight is not None:
        df = df[df[weight] > 0]
    stratify = target if target_kind == "binary" else None
    return train_test_split_local(df, test_fraction, seed=derive_seed(seed, name, "split"), stratify=stratify)


def _prep_key(cfg: Config) -> str:
    d = cfg.data
    return json.dumps({"na": d.na_values, "above": d.target_above, "target": d.target}, sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _read_cached(path: str, mtime: float) -> pd.DataFrame:
    return read_table(path)


@lru_cache(maxsize=16)
def _prepared_cached(path: str, mtime: float, prep_key: str) -> pd.DataFrame:
    spec = json.loads(prep_key)
    return _clean(_read_cached(path, mtime), spec["na"], spec["target"], spec["above"])


@lru_cache(maxsize=64)
def _split_cached(path: str, mtime: float, prep_key: str, name: str, seed: int, test_fraction: float, target: str,
                  weight: str | None, task_name: str, target_kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _split(_prepared_cached(path, mtime, prep_key), name, seed, test_fraction, target, weight, task_name,
                  target_kind)
