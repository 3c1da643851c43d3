"""Boosting objectives: per-row gradient and hessian of the loss in the margin, link and base margin."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .params import Objective


@dataclass(frozen=True)
class LossObjective:
    """One objective: binary logistic (logit link) or Poisson (log link).

    The margin of a row is ``base_margin + offset + sum of its leaf values`` (the offset is the log
    exposure for Poisson, 0 otherwise).
    """

    name: Objective

    def gradients(self, y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``g = dl/dmargin`` and ``h = d2l/dmargin2`` of each row, float64."""
        if self.name == "binary:logistic":
            p = 1.0 / (1.0 + np.exp(-margin))
            return p - y, p * (1.0 - p)
        mu = np.exp(margin)
        return mu - y, mu

    def transform(self, margin: np.ndarray) -> np.ndarray:
        """The response-scale prediction: a probability, or an expected count."""
        if self.name == "binary:logistic":
            return 1.0 / (1.0 + np.exp(-margin))
        return np.exp(margin)

    def base_margin(self, score: float) -> float:
        """The margin of a response-scale base score."""
        if self.name == "binary:logistic":
            return math.log(score / (1.0 - score))
        return math.log(score)

    def base_score(self, y_sum: float, exposure_sum: float, source: str = "the training rows") -> float:
        """The base score fitted to federated totals: the mean of y (per unit of exposure for Poisson)."""
        if not exposure_sum > 0:
            raise DataError(f"{source}: no rows to fit the base score on")
        score = y_sum / exposure_sum
        if self.name == "binary:logistic":
            if not 0.0 < score < 1.0:
                raise DataError(f"{source}: the target is constant (mean {score:g}); binary:logistic needs both "
                                f"classes")
        elif not score > 0.0:
            raise DataError(f"{source}: every count is 0; count:poisson needs some positive counts")
        return score

    def check_target(self, y: np.ndarray, source: str) -> None:
        """Refuse targets the objective cannot take, naming the institution."""
        if not np.all(np.isfinite(y)):
            raise DataError(f"{source}: the target holds NaN or infinite values")
        if self.name == "binary:logistic" and not np.all((y == 0) | (y == 1)):
            raise DataError(f"{source}: binary:logistic needs a 0/1 target, found values such as "
                            f"{np.unique(y[(y != 0) & (y != 1)])[:3].tolist()}")
        if self.name == "count:poisson" and np.any(y < 0):
            raise DataError(f"{source}: count:poisson needs counts >= 0, found {float(y.min()):g}")


def get_objective(name: Objective) -> LossObjective:
    """The objective of a name (validated by :class:`~fedx.trees.params.GBDTParams`)."""
    return LossObjective(name)
