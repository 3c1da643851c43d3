"""Insurance pricing GLMs with log link: claim frequency (Poisson, offset log exposure) and claim severity
(Gamma, weights = claim counts), trained here by gradient descent on the mean deviance.

``predict`` returns the expected mean: claim count (rate * exposure) for frequency, claim amount for severity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from .base import Task
from .data import TabularData
from .losses import Loss, gamma_deviance, poisson_deviance
from .metrics import GLM_METRICS, Metrics, Stats, check_family, glm_metrics, glm_metrics_from_stats, glm_stats
from .training import TrainOptions


class GLMTask(Task):
    """A log-link GLM (``model.kind: glm``) or its MLP version; metrics: deviance (primary), d2, gini, mae, n."""

    model_kinds = ("glm", "mlp")
    primary_metric = "deviance"
    metric_names = GLM_METRICS
    log_link = True

    def check_data(self, data: TabularData) -> None:
        super().check_data(data)
        check_family(self.family, data.offset)

    def set_null_intercept(self, model: nn.Module, sum_y: float, sum_exposure: float) -> None:
        """Start ``model`` at the intercept-only fit: its output bias becomes ``log(sum_y / sum_exposure)``.

        A zero-initialised GLM predicts a mean of 1, far from claim amounts in the thousands, and gradient
        descent then spends hundreds of steps on the intercept alone. Both sums are additive over
        institutions: ``sum_y`` of ``weight * y``, ``sum_exposure`` of ``weight * exposure`` (of ``weight``
        without an offset).
        """
        if not (sum_y > 0 and sum_exposure > 0 and math.isfinite(sum_y / sum_exposure)):
            raise DataError(f"null intercept: expected positive totals, got sum_y={sum_y}, "
                            f"sum_exposure={sum_exposure}")
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(math.log(sum_y / sum_exposure))

    def eval_stats(self, data: TabularData, pred: np.ndarray) -> Stats:
        return glm_stats(self.family, data.y, pred, data.offset, data.weight)

    def _loss(self, name: str, data: TabularData, opts: TrainOptions) -> Loss:
        return poisson_deviance if name == "poisson" else gamma_deviance

    def _inverse_link(self, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def _all_metrics(self, data: TabularData, pred: np.ndarray) -> Metrics:
        return glm_metrics(self.family, data.y, pred, data.offset, data.weight)

    def _all_metrics_from_stats(self, stats: Mapping[str, np.ndarray]) -> Metrics:
        return glm_metrics_from_stats(self.family, stats)


class ClaimFrequencyTask(GLMTask):
    """Claim counts per policy: Poisson, log link, offset = log exposure."""

    name = "claim_frequency"
    family = "poisson"
    target_kind = "count"
    loss_names = ("poisson",)


class ClaimSeverityTask(GLMTask):
    """Average claim amount per policy with claims: Gamma, log link, weights = claim counts."""

    name = "claim_severity"
    family = "gamma"
    target_kind = "positive"
    loss_names = ("gamma",)
