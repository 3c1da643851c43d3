"""The centralized baseline: one model trained on the pooled data, in simulation only.

It answers "how much does federation give up against pooling?" and exists only where pooling is
possible at all: in a simulation, where every institution's table is on one machine. It uses the
same task code, the same train/test splits and the same number of epochs as the federated run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from .aggregators import make_rule
from .config import Config
from .data.local import local_split
from .data.spec import schema_for
from .institution import fit_model, fit_preprocessor
from .tasks import TabularData, get_task


@contextmanager
def _one_thread() -> Iterator[None]:
    """Train with one torch thread, as each simulated institution does (Ray gives each one CPU).

    The models are small: a second thread gains little, and on a busy machine threads that wait
    for each other burn more time than they save.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def centralized(cfg: Config, tables: Mapping[str, pd.DataFrame], features: Mapping[str, str] | None = None
                ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Train on the pooled training splits; score on each institution's own test split.

    ``features`` is the schema the federation settled on (when the config declares none), so that
    both models see the same columns.

    Returns
    -------
    (combined, per_institution)
        Metrics over every institution's test split (from summed statistics, as in the federated
        run), and each institution's own.
    """
    if cfg.data.features is None and features:
        cfg = replace(cfg, data=replace(cfg.data, features=dict(features)))
    task = get_task(cfg.task)
    splits = {name: local_split(df, cfg, name, task) for name, df in tables.items()}
    pooled = pd.concat([tr for tr, _ in splits.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    epochs = cfg.federation.rounds * cfg.federation.local_epochs
    with _one_thread():
        model = fit_model(cfg, task, make_rule(cfg), prep, TabularData.from_frame(cfg, prep, pooled), epochs,
                          seed=cfg.seed)
    per_inst: dict[str, dict[str, Any]] = {}
    stats = []
    for name, (_, test) in splits.items():
        data = TabularData.from_frame(cfg, prep, test)
        pred = task.predict(model, data)
        per_inst[name] = task.metrics(data, pred)
        stats.append(task.eval_stats(data, pred))
    return task.combined_metrics(stats), per_inst
