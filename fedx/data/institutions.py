"""The institutions of a simulated federation: one table each, from the config's data source.

Only simulations use this: in a real deployment each institution reads its own table and nothing
else exists in one place.
"""

from __future__ import annotations

import pandas as pd

from ..config import Config
from ..errors import ConfigError
from .partition import natural, partition
from .sources import load_source


def institution_tables(cfg: Config) -> dict[str, pd.DataFrame]:
    """Each institution's rows: split by ``data.split_by``, or partitioned as ``data.institutions`` says."""
    d = cfg.data
    if d.source is None:
        raise ConfigError(f"{cfg.source}: data.source: missing (the table to split among simulated institutions)")
    df = load_source(d.source, params=d.params, seed=cfg.seed, base_dir=cfg.base_dir)
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
