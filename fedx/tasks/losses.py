"""Training losses. Each is a MEAN over the rows of a batch of ``weight * unit loss``.

A mean (not a sum) makes one full-batch gradient step of FedAvg, weighted by row counts, equal to one
centralized step on the pooled data. Binary losses take logits; the GLM deviances take means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: ``loss(output, target, weight) -> scalar``: the weighted mean loss of a batch.
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Exponent of the focal loss (Lin et al., 2017).
FOCAL_GAMMA = 2.0

_TINY = torch.finfo(torch.float32).tiny


def auto_pos_weight(y: np.ndarray, weight: np.ndarray | None = None) -> float:
    """``sqrt(negatives / positives)`` of the given labels (1.0 when a class is absent)."""
    w = np.ones_like(y, dtype=np.float64) if weight is None else weight.astype(np.float64)
    pos = float(w[y > 0.5].sum())
    neg = float(w.sum()) - pos
    return math.sqrt(neg / pos) if pos > 0 and neg > 0 else 1.0


def weighted_bce(pos_weight: float) -> Loss:
    """Binary cross-entropy on logits, positives weighted by ``pos_weight``."""
    pw = torch.tensor(pos_weight, dtype=torch.float32)

    def loss(logit: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logit, y, weight=w, pos_weight=pw, reduction="mean")

    return loss


def focal(pos_weight: float, gamma: float = FOCAL_GAMMA) -> Loss:
    """Focal loss on logits: cross-entropy scaled by ``(1 - p_t)**gamma``, positives weighted by ``pos_weight``."""

    def loss(logit: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        log_p, log_q = F.logsigmoid(logit), F.logsigmoid(-logit)
        p, q = torch.exp(log_p), torch.exp(log_q)
        unit = -(pos_weight * y * q.pow(gamma) * log_p + (1 - y) * p.pow(gamma) * log_q)
        return (w * unit).mean()

    return loss


def poisson_deviance(mu: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean Poisson deviance ``2 (y log(y/mu) - y + mu)`` of predicted means ``mu``."""
    unit = 2 * (torch.xlogy(y, y) - y * torch.log(mu.clamp_min(_TINY)) - y + mu)
    return (w * unit).mean()


def gamma_deviance(mu: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean Gamma deviance ``2 (log(mu/y) + y/mu - 1)`` of predicted means ``mu`` (``y > 0``)."""
    mu = mu.clamp_min(_TINY)
    unit = 2 * (torch.log(mu) - torch.log(y) + y / mu - 1)
    return (w * unit).mean()
