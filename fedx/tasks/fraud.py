"""Fraud detection: a binary task on heavily imbalanced transactions (0.2%-3% fraud).

Ranking quality among the few top-scored transactions matters, so the primary metric is AUPRC, and the
task reports recall and precision at a 1% false-positive rate (the alert budget of an investigation team).
"""

from __future__ import annotations

from .base import BinaryTask


class FraudTask(BinaryTask):
    """Fraud detection; metrics: auprc (primary), roc_auc, recall and precision at 1% FPR, base_rate, n."""

    name = "fraud"
    primary_metric = "auprc"
    metric_names = ("n", "base_rate", "auprc", "roc_auc", "recall_at_1pct_fpr", "precision_at_1pct_fpr")
