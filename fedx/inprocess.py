"""Federated rounds in one process, for research and benchmarks: fedx's own task code and update rules, no Flower.

A federation on Flower adds processes, messages and encryption around two things that this module
runs directly: each institution's local training (:meth:`fedx.tasks.TrainOptions.from_config`, the
task's ``train``) and the server's update rule (:func:`fedx.aggregators.make_rule`). Under
encryption the rule is applied to the decrypted weighted mean, which equals the plaintext one to
the HE preset's precision (tests/flower/test_fedadam_encrypted.py), so curves measured here are
those of the real federation in plaintext. Use it to compare aggregators or settings quickly, or to
stage attacks (``tamper``), never to train a model for use: that is :func:`fedx.run`.

With ``encoded=True`` each update is clipped and quantized exactly as the run's ``bfv-compact``
encryption encodes it (the preset's own encode and decode, without the encryption, which adds
nothing under BFV): a quick way to see how a config reacts to encryption's rounding.

Differential privacy is not applied here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .aggregators import ModelState, make_rule
from .baselines import fit_preprocessor
from .config import Config
from .data.local import local_split
from .data.preprocess import Preprocessor
from .data.spec import schema_for
from .errors import ConfigError
from .tasks import TabularData, TrainOptions, get_task, model_config
from .tasks.params import get_arrays, set_arrays, update_delta

Tamper = Callable[[str, int, list[np.ndarray]], list[np.ndarray]]
"""``tamper(institution, round, delta) -> delta``: what a dishonest institution sends instead."""


@dataclass
class Federation:
    """Each institution's (train, test) design matrices under the shared preprocessing."""

    data: dict[str, tuple[TabularData, TabularData]]
    preprocessor: Preprocessor

    @property
    def n_features(self) -> int:
        return len(self.preprocessor.feature_names)


def federation(cfg: Config, tables: Mapping[str, pd.DataFrame] | None = None) -> Federation:
    """The institutions of ``cfg`` (or of ``tables``), split and preprocessed as a federation would.

    The preprocessing is fitted on the pooled training rows, which is what the federation's summed
    moments give.
    """
    from .data.institutions import given_tables, institution_tables

    if cfg.task is None:
        raise ConfigError(f"{cfg.source}: task: missing (what to learn)")
    task = get_task(cfg.task)
    if tables is None:
        tables = institution_tables(cfg)
    else:   # the column that names the institution is not a feature here either
        cfg, tables = given_tables(cfg, tables)
    splits = {n: local_split(df, cfg, n, task) for n, df in tables.items()}
    pooled = pd.concat([train for train, _ in splits.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    return Federation({n: (TabularData.from_frame(cfg, prep, tr), TabularData.from_frame(cfg, prep, te))
                       for n, (tr, te) in splits.items()}, prep)


def pooled_metrics(task: Any, model: Any, fed: Federation) -> dict[str, float]:
    """The model's metrics on all institutions' test splits together, combined from each one's statistics."""
    return task.combined_metrics([task.eval_stats(test, task.predict(model, test)) for _, test in fed.data.values()])


def train_rounds(cfg: Config, fed: Federation, *, rounds: int | None = None, tamper: Tamper | None = None,
                 on_round: Callable[[int, Any], None] | None = None, encoded: bool = False
                 ) -> tuple[Any, list[dict[str, float]]]:
    """Run ``rounds`` (default ``federation.rounds``) rounds of ``cfg``'s aggregator.

    Returns the final model (a torch module) and the pooled test metrics after each round.
    ``on_round(round, model)`` is called after each round. With ``encoded``, each update (after
    ``tamper``) is what ``cfg``'s encryption decodes from it (:func:`encoder`).
    """
    task = get_task(cfg.task)
    rule = make_rule(cfg)
    model = task.build_model(fed.n_features, model_config(cfg), seed=cfg.seed)
    state = ModelState(get_arrays(model), {}, 0)
    prox = cfg.federation.mu > 0
    sizes = {name: float(len(train)) for name, (train, _) in fed.data.items()}
    encode = encoder(cfg, sum(sizes.values())) if encoded else None
    history = []
    for r in range(1, (rounds or cfg.federation.rounds) + 1):
        deltas, weights = [], []
        for name, (train, _) in fed.data.items():
            set_arrays(model, state.params)
            task.train(model, train, TrainOptions.from_config(cfg, name, r, cfg.federation.local_epochs),
                       global_arrays=state.params if prox else None)
            delta = update_delta(get_arrays(model), state.params)
            delta = tamper(name, r, delta) if tamper is not None else delta
            deltas.append(encode(delta, sizes[name]) if encode is not None else delta)
            weights.append(sizes[name])
        state = rule.apply(state, rule.combine(deltas, weights))
        set_arrays(model, state.params)
        history.append(pooled_metrics(task, model, fed))
        if on_round is not None:
            on_round(r, model)
    return model, history


def encoder(cfg: Config, total_weight: float) -> Callable[[list[np.ndarray], float], list[np.ndarray]]:
    """``encode(delta, weight)``: ``delta`` as the run's encryption carries it, clipped and quantized.

    An institution of ``weight`` sends ``rho * delta`` with ``rho = weight / total_weight``, encoded by
    the ``bfv-compact`` preset with ``security.he`` (bits, clip); the result, averaged with the same
    weights, is the mean that decryption gives. Only ``bfv-compact`` is emulated: CKKS adds noise
    in the encryption itself.
    """
    from .he import get_preset

    if cfg.security.encryption != "bfv-compact":
        raise ConfigError(f"security.encryption: the in-process encoding emulates bfv-compact only, "
                          f"got {cfg.security.encryption!r}")
    preset = get_preset("bfv-compact", **cfg.security.he.overrides())

    def encode(delta: list[np.ndarray], weight: float) -> list[np.ndarray]:
        rho = weight / total_weight
        flat = np.concatenate([d.astype(np.float64).ravel() for d in delta])
        back = preset.decode("mean", preset.encode("mean", flat, rho).rows, flat.size, rho)
        out, start = [], 0
        for d in delta:
            out.append(back[start:start + d.size].reshape(d.shape).astype(np.float32))
            start += d.size
        return out

    return encode
