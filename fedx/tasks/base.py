"""What every task is: a model, a loss, local training, predictions and metrics (exact and combinable)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit
from torch import nn

from ..errors import ConfigError
from .data import TabularData, check_target
from .losses import Loss, auto_pos_weight, focal, weighted_bce
from .metrics import (
    LOWER_IS_BETTER,
    Metrics,
    Stats,
    binary_metrics,
    binary_metrics_from_stats,
    binary_stats,
)
from .models import build_model
from .training import SampleDP, TrainOptions, TrainReport, fit, model_outputs

log = logging.getLogger(__name__)


class Task(ABC):
    """A learning task. Tasks hold no state: one instance per name serves every institution.

    Attributes
    ----------
    name : str
        The task's name in configs.
    family : str
        ``binary``, ``poisson`` or ``gamma``.
    target_kind : str
        What the target column must hold: ``binary``, ``count`` or ``positive``.
    primary_metric : str
        The metric that ranks models (see :meth:`higher_is_better`).
    metric_names : tuple of str
        Keys of :meth:`metrics` and :meth:`metrics_from_stats`.
    model_kinds : tuple of str
        Accepted ``model.kind`` values; the first is the default.
    loss_names : tuple of str
        Accepted ``TrainOptions.loss`` values besides ``auto``, which means the first.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    target_kind: ClassVar[str]
    primary_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    model_kinds: ClassVar[tuple[str, ...]]
    loss_names: ClassVar[tuple[str, ...]]
    log_link: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of ``metric`` means a better model."""
        if metric not in self.metric_names:
            raise ConfigError(f"metric: task '{self.name}' reports {', '.join(self.metric_names)}; got {metric!r}")
        return metric not in LOWER_IS_BETTER

    def build_model(self, n_features: int, model_cfg: Mapping[str, Any], seed: int) -> nn.Module:
        """A fresh model for ``n_features`` inputs; see :func:`fedx.tasks.models.build_model`."""
        return build_model(self.name, n_features, model_cfg, seed, kinds=self.model_kinds, log_link=self.log_link)

    def check_data(self, data: TabularData) -> None:
        """Check that ``data`` suits this task (its target kind)."""
        check_target(data.y, self.target_kind, field=f"target of task '{self.name}'")

    def train(self, model: nn.Module, data: TabularData, opts: TrainOptions,
              global_arrays: Sequence[np.ndarray] | None = None, privacy: SampleDP | None = None) -> TrainReport:
        """Train ``model`` in place on ``data``; ``global_arrays`` anchor the FedProx term (``opts.prox_mu > 0``).

        With ``privacy``, training is DP-SGD and the report carries the privacy spent (see :func:`fit`).
        """
        self.check_data(data)
        return fit(model, data, opts, self.make_loss(data, opts), global_arrays, privacy)

    def make_loss(self, data: TabularData, opts: TrainOptions) -> Loss:
        """The training loss that ``opts.loss`` names, set up for ``data``."""
        if opts.loss != "auto" and opts.loss not in self.loss_names:
            raise ConfigError(f"train.loss: task '{self.name}' takes auto or {' or '.join(self.loss_names)}, "
                              f"got {opts.loss!r}")
        return self._loss(self.loss_names[0] if opts.loss == "auto" else opts.loss, data, opts)

    def predict(self, model: nn.Module, data: TabularData) -> np.ndarray:
        """Predictions (float64, one per row): a probability, or an expected mean."""
        return self._inverse_link(model_outputs(model, data).double().numpy())

    def metrics(self, data: TabularData, pred: np.ndarray) -> Metrics:
        """Exact metrics of ``pred`` on one institution's ``data``; undefined ones are None."""
        return self._select(self._all_metrics(data, pred))

    def metrics_from_stats(self, stats: Mapping[str, np.ndarray]) -> Metrics:
        """Metrics of the pooled predictions, from :meth:`eval_stats` summed elementwise over institutions."""
        return self._select(self._all_metrics_from_stats(stats))

    def combined_metrics(self, stats: Sequence[Mapping[str, np.ndarray]]) -> Metrics:
        """Metrics over several institutions' evaluations: their :meth:`eval_stats` summed, then scored."""
        total = {k: np.sum([np.asarray(s[k], dtype=np.float64) for s in stats], axis=0) for k in stats[0]}
        return self.metrics_from_stats(total)

    @abstractmethod
    def eval_stats(self, data: TabularData, pred: np.ndarray) -> Stats:
        """Additive statistics of ``pred`` on ``data``: sums over rows, safe to add across institutions."""

    @abstractmethod
    def _loss(self, name: str, data: TabularData, opts: TrainOptions) -> Loss: ...

    @abstractmethod
    def _inverse_link(self, outputs: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _all_metrics(self, data: TabularData, pred: np.ndarray) -> Metrics: ...

    @abstractmethod
    def _all_metrics_from_stats(self, stats: Mapping[str, np.ndarray]) -> Metrics: ...

    def _select(self, metrics: Metrics) -> Metrics:
        return {k: metrics[k] for k in self.metric_names}


class BinaryTask(Task):
    """A binary classifier (logistic regression or MLP) trained on weighted cross-entropy or focal loss.

    ``predict`` returns probabilities. ``TrainOptions.pos_weight`` weights the positive rows; ``"auto"`` is
    ``sqrt(neg / pos)`` of the local training rows.
    """

    family = "binary"
    target_kind = "binary"
    model_kinds = ("mlp", "logistic")
    loss_names = ("bce", "focal")

    def eval_stats(self, data: TabularData, pred: np.ndarray) -> Stats:
        return binary_stats(data.y, pred, data.weight)

    def _loss(self, name: str, data: TabularData, opts: TrainOptions) -> Loss:
        pw = opts.pos_weight
        pos_weight = auto_pos_weight(data.y, data.weight) if pw == "auto" else 1.0 if pw is None else float(pw)
        log.debug("%s: %s loss with pos_weight %.4g", self.name, name, pos_weight)
        return focal(pos_weight) if name == "focal" else weighted_bce(pos_weight)

    def _inverse_link(self, outputs: np.ndarray) -> np.ndarray:
        return expit(outputs)

    def _all_metrics(self, data: TabularData, pred: np.ndarray) -> Metrics:
        return binary_metrics(data.y, pred, data.weight)

    def _all_metrics_from_stats(self, stats: Mapping[str, np.ndarray]) -> Metrics:
        return binary_metrics_from_stats(stats)
