"""The baselines: models fitted on one table alone, to compare with the federated model.

:func:`fit_preprocessor` and :func:`fit_model` fit the preprocessing and the model of one table
with the run's settings. An institution uses them on its own training rows (the ``local``
baseline, :meth:`fedx.institution.Institution.local_baseline`), and :func:`centralized` on the
pooled training rows of every institution.

The centralized baseline answers "how much does federation give up against pooling?" and exists only
where pooling is possible at all: in a simulation, where every institution's table is on one machine.
It uses the same task code, the same train/test splits and the same number of epochs as the federated run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from .aggregators import UpdateRule, make_rule
from .analytics import moments_plan
from .config import Config
from .data.local import local_split
from .data.preprocess import Preprocessor, with_levels
from .data.schema import Schema
from .data.spec import schema_for
from .privacy.policy import Policy
from .tasks import TabularData, TrainOptions, get_task, model_config
from .tasks.params import set_arrays


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


def fit_preprocessor(cfg: Config, schema: Schema, df: pd.DataFrame) -> Preprocessor:
    """Preprocessing fitted on one table alone (a local or the centralized baseline), levels included.

    A feature with no value at all in the table is left out, as an institution alone would do.
    """
    plan = moments_plan(schema)
    schema = with_levels(schema, plan.local_levels(df))
    present = [f for f in schema.features
               if (f.kind == "numeric" and df[f.name].notna().any()) or (f.kind == "categorical" and f.levels)]
    schema = Schema(features=tuple(present), target=schema.target, exposure=schema.exposure, weight=schema.weight,
                    split_by=schema.split_by)
    plan = moments_plan(schema)
    stage = plan.first_stage()
    sums = plan.sufficient_statistics(plan.local_vector(df, stage, Policy()), stage)
    return Preprocessor.fit(schema, sums, standardize=cfg.standardize, missing_indicators=cfg.data.missing_indicators)


def fit_model(cfg: Config, task: Any, rule: UpdateRule, prep: Preprocessor, data: TabularData, epochs: int,
              seed: int) -> Any:
    """A model trained on one table alone (a local or the centralized baseline), with the run's settings.

    With the newton aggregator it is the table's exact GLM fit, as the federation would reach.
    """
    model = task.build_model(len(prep.feature_names), model_config(cfg), seed=cfg.seed)
    if rule.name == "newton":
        from .aggregators.newton import GLMData, newton_fit

        fit = newton_fit([GLMData(data.X, data.y, data.offset, data.weight)], rule,  # type: ignore[arg-type]
                         max_rounds=max(cfg.federation.rounds, 50))
        set_arrays(model, fit.state.params)
        return model
    # One continuous run over the epochs of all rounds, with the rounds' learning-rate schedule.
    task.train(model, data, TrainOptions.from_section(cfg.train, epochs, seed, lr_decay=cfg.train.lr_decay,
                                                      decay_every=cfg.federation.local_epochs))
    return model
