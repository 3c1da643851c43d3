"""How updates combine: FedAvg, FedProx, server optimizers, robust rules and the Newton GLM solver.

Everything here takes and returns plain numpy arrays: no torch, no Flower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Arrays, FedAvgRule, ModelState, UpdateRule
from .fedavg import weighted_mean
from .fedopt import FedAdamRule, FedAvgMRule, FedYogiRule
from .robust import KrumRule, MedianRule, TrimmedMeanRule, coordinate_median, krum_select, trimmed_mean

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Arrays", "ModelState", "UpdateRule", "FedAvgRule", "FedAdamRule", "FedYogiRule", "FedAvgMRule",
           "TrimmedMeanRule", "MedianRule", "KrumRule", "weighted_mean", "trimmed_mean", "coordinate_median",
           "krum_select", "make_rule", "glm_family"]


def glm_family(cfg: Config) -> str:
    """The GLM family of a newton run: ``model.family``, or the task's own."""
    if cfg.model.family != "auto":
        return cfg.model.family
    return {"claim_frequency": "poisson", "claim_severity": "gamma", "disease_risk": "binomial"}.get(cfg.task, "")


def make_rule(cfg: Config) -> UpdateRule:
    """The update rule that ``federation.aggregator`` names, with its settings from the config."""
    fed = cfg.federation
    opt = fed.server_optimizer
    name = fed.aggregator
    if name in ("fedavg", "fedprox"):
        return FedAvgRule()
    if name == "fedadam":
        return FedAdamRule(opt.lr or 0.01, opt.beta1, opt.beta2, opt.tau)
    if name == "fedyogi":
        return FedYogiRule(opt.lr or 0.01, opt.beta1, opt.beta2, opt.tau)
    if name == "fedavgm":
        return FedAvgMRule(opt.lr or 1.0, opt.beta1)
    if name == "newton":
        from .newton import NewtonRule

        return NewtonRule(glm_family(cfg), fed.l2, fed.tweedie_power, fed.tolerance)
    if name == "trimmed_mean":
        return TrimmedMeanRule(fed.trim)
    if name == "median":
        return MedianRule()
    if name == "krum":
        return KrumRule(fed.byzantine, select=1)
    if name == "multi_krum":
        return KrumRule(fed.byzantine, select=None)
    from ..errors import ConfigError

    raise ConfigError(f"federation.aggregator: '{name}' is not available")
