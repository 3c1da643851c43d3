"""Disease risk: a binary task where the predicted probability itself is used, so calibration matters."""

from __future__ import annotations

from .base import BinaryTask


class DiseaseRiskTask(BinaryTask):
    """Disease risk; metrics: roc_auc (primary), accuracy at 0.5, brier, log_loss, ece, base_rate, n.

    The per-bin calibration curve comes from :func:`fedx.tasks.metrics.calibration_curve` (one institution)
    or :func:`fedx.tasks.metrics.calibration_from_stats` (pooled).
    """

    name = "disease_risk"
    primary_metric = "roc_auc"
    metric_names = ("n", "base_rate", "roc_auc", "accuracy", "brier", "log_loss", "ece")
