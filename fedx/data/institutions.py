"""The institutions of a simulated federation: one table each, from the config's data source or
from the caller's DataFrames (``fedx.run(config, tables=...)``).

Only simulations use this: in a real deployment each institution reads its own table and nothing
else exists in one place.

The column that names the institution is never a feature, however the tables arrive: it is
``data.split_by``, and is left out of the features wherever they are inferred.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping

import pandas as pd

from ..config import Config
from ..errors import ConfigError, DataError
from .partition import natural, partition
from .sources import load_source

log = logging.getLogger(__name__)


def institution_tables(cfg: Config) -> dict[str, pd.DataFrame]:
    """Each institution's rows: split by ``data.split_by``, or partitioned as ``data.institutions`` says."""
    d = cfg.data
    if d.source is None:
        raise ConfigError(f"{cfg.source}: data.source: missing (the table to split among simulated institutions)")
    try:
        df = load_source(d.source, params=d.params, seed=cfg.seed, base_dir=cfg.base_dir)
    except DataError as exc:   # the file cannot be read: name the key that names it
        raise type(exc)(f"{_where(cfg)}data.source: {exc}") from None
    if d.split_by is not None:
        if d.split_by not in df.columns:
            raise ConfigError(f"data.split_by: column {d.split_by!r} is not in {d.source} "
                              f"(columns: {', '.join(map(str, df.columns[:20]))})")
        return natural(df, d.split_by)
    if d.institutions is None:
        raise ConfigError("data: give split_by (a column naming each institution) or institutions "
                          "(how many, or their sizes)")
    sizes = d.institutions
    kwargs: dict = {"seed": cfg.seed}
    method = d.partition.method
    if method == "dirichlet":
        n = sizes if isinstance(sizes, int) else len(sizes)
        return partition(df, "dirichlet", label=d.target, n=n, alpha=d.partition.alpha, **kwargs)
    if method == "quantity":
        n = sizes if isinstance(sizes, int) else len(sizes)
        return partition(df, "quantity", n=n, alpha=d.partition.alpha, **kwargs)
    if isinstance(sizes, int):
        return partition(df, "iid", n=sizes, **kwargs)
    return partition(df, "iid", sizes=sizes, **kwargs)


def given_tables(cfg: Config, tables: pd.DataFrame | Mapping[str, pd.DataFrame]
                 ) -> tuple[Config, dict[str, pd.DataFrame]]:
    """The institutions' tables that the caller passes, and the config that names their institution column.

    Parameters
    ----------
    cfg : Config
        The run's config; its ``data.source`` is not read.
    tables : pandas.DataFrame, or mapping of str to pandas.DataFrame
        One table, split by the config's ``data.split_by`` column as ``data.source`` would be (rows
        keep their position in it, which errors name); or each institution's table by name (rows are
        numbered by their position in it).

    Returns
    -------
    (Config, dict of str to pandas.DataFrame)
        The config, with ``data.split_by`` set when it was not and a column of every table holds
        exactly that table's name (the column that ``df.groupby(column)`` split by): that column names
        the institution and is not a feature. And each institution's table.

    Raises
    ------
    ConfigError
        For something other than a DataFrame or a mapping of names to non-empty DataFrames, or one
        DataFrame without ``data.split_by``.
    DataError
        For a ``data.split_by`` column that is missing from the table or has gaps.
    """
    d = cfg.data
    if isinstance(tables, pd.DataFrame):
        if d.split_by is None:
            raise ConfigError(f"{_where(cfg)}data.split_by: missing; one table passed as tables= is split by the "
                              f"column that names each institution (or pass tables={{name: DataFrame, ...}})")
        if tables.empty:
            raise ConfigError("tables: expected a non-empty pandas DataFrame")
        if d.split_by not in tables.columns:
            raise ConfigError(f"{_where(cfg)}data.split_by: column {d.split_by!r} is not in tables "
                              f"(columns: {', '.join(map(str, tables.columns[:20]))})")
        try:
            return cfg, natural(tables.reset_index(drop=True), d.split_by)
        except DataError as exc:
            raise DataError(f"tables: {exc}") from None
    if not isinstance(tables, Mapping) or not tables:
        raise ConfigError(f"tables: expected a pandas DataFrame, or a mapping of institution name to pandas "
                          f"DataFrame with at least one, got {type(tables).__name__}")
    out = {}
    for name, df in tables.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tables: institution names must be non-empty strings, got {name!r}")
        if not isinstance(df, pd.DataFrame) or df.empty:
            raise ConfigError(f"tables[{name!r}]: expected a non-empty pandas DataFrame")
        out[name] = df.reset_index(drop=True)
    if d.split_by is None and d.institutions is None:
        column = naming_column(out, skip={c for c in (d.target, d.exposure, d.weight) if c})
        if column is not None:
            log.info("tables: column %r holds each table's name: it names the institution (data.split_by) and is "
                     "not a feature", column)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, split_by=column))
    return cfg, out


def naming_column(tables: Mapping[str, pd.DataFrame], skip: Collection[str] = ()) -> str | None:
    """The first column that every table has and whose every value, as text, is that table's name."""
    first = next(iter(tables.values()))
    for col in first.columns:
        if col in skip or not all(col in df.columns for df in tables.values()):
            continue
        if all(df[col].notna().all() and (df[col].astype(str) == name).all() for name, df in tables.items()):
            return str(col)
    return None


def _where(cfg: Config) -> str:
    """The config file, as errors start: ``examples/x/fedx.yaml: `` (nothing for a dict)."""
    return "" if cfg.source == "<dict>" else f"{cfg.source}: "
