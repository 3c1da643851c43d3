"""The settings of a histogram GBDT, validated in one place (:class:`GBDTParams`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Config

Objective = Literal["binary:logistic", "count:poisson"]
OBJECTIVES: tuple[Objective, ...] = ("binary:logistic", "count:poisson")

#: Most bins a feature may have (bin indices travel as uint8 plus one bin for missing values).
MAX_BINS = 256
#: Default grid of the per-row gradients and hessians: multiples of 2^-20 (see :mod:`fedx.trees.engine`).
DEFAULT_QUANTUM_BITS = 20


@dataclass(frozen=True)
class GBDTParams:
    """Settings of second-order boosting, named as in XGBoost where they mean the same.

    Attributes
    ----------
    trees : int
        Number of boosting rounds (one tree each).
    max_depth : int
        Depth of every tree; a tree costs one message round per level (``max_depth`` rounds).
    learning_rate : float
        Shrinkage ``eta`` of every leaf value.
    reg_lambda : float
        L2 penalty on leaf weights (``lambda``).
    min_child_weight : float
        Least hessian sum in each child of a split.
    gamma : float
        Least gain of a split (XGBoost's ``min_split_loss``, on the same scale:
        ``G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)``).
    subsample : float
        Share of each institution's rows drawn (without replacement, seeded) for each tree.
    colsample : float
        Share of the features drawn for each tree (the same draw at every institution).
    max_bins : int
        Most bins per feature (2 to 256), missing values aside.
    objective : str
        ``binary:logistic`` or ``count:poisson`` (log link; an exposure enters as a base-margin offset).
    base_score : float or None
        Starting prediction on the response scale (a probability, or a rate per unit exposure);
        None takes it from the federated totals of the training rows.
    quantum_bits : int
        Each row's gradient and hessian are rounded to multiples of ``2**-quantum_bits``, so every sum of
        them is exact in float64 and in the HE encodings, whatever the order of summation.
    seed : int
        Seed of the row and column draws.
    """

    trees: int = 100
    max_depth: int = 6
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    subsample: float = 1.0
    colsample: float = 1.0
    max_bins: int = MAX_BINS
    objective: Objective = "binary:logistic"
    base_score: float | None = None
    quantum_bits: int = DEFAULT_QUANTUM_BITS
    seed: int = 0

    def __post_init__(self) -> None:
        self._int("trees", 1)
        self._int("max_depth", 1, 16)
        self._int("max_bins", 2, MAX_BINS)
        self._int("quantum_bits", 4, 24)
        self._int("seed", 0)
        self._number("learning_rate", low=0.0, low_open=True)
        self._number("reg_lambda", low=0.0)
        self._number("min_child_weight", low=0.0)
        self._number("gamma", low=0.0)
        self._number("subsample", low=0.0, low_open=True, high=1.0)
        self._number("colsample", low=0.0, low_open=True, high=1.0)
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"model.objective: expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.base_score is not None:
            self._number("base_score", low=0.0, low_open=True)
            if self.objective == "binary:logistic" and not self.base_score < 1.0:
                raise ConfigError(f"model.base_score: a probability in (0, 1) is expected for binary:logistic, "
                                  f"got {self.base_score!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GBDTParams:
        """Inverse of :meth:`to_dict`; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model: unknown gbdt setting(s) {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _int(self, name: str, low: int, high: int | None = None) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"model.{name}: expected an integer {span}, got {value!r}")

    def _number(self, name: str, *, low: float, low_open: bool = False, high: float | None = None) -> None:
        value = getattr(self, name)
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and (value > low if low_open else value >= low) and (high is None or value <= high))
        if not ok:
            span = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
            raise ConfigError(f"model.{name}: expected a finite number {span}, got {value!r}")


def gbdt_params(cfg: Config) -> GBDTParams:
    """The engine's settings from the config's ``model:`` section (``objective: auto`` resolved by task)."""
    m = cfg.model
    return GBDTParams(trees=m.trees, max_depth=m.depth, learning_rate=m.learning_rate, reg_lambda=m.l2,
                      min_child_weight=m.min_child_weight, gamma=m.gamma, subsample=m.subsample,
                      colsample=m.colsample, max_bins=m.bins, objective=m.gbdt_objective(cfg.task),  # type: ignore[arg-type]
                      seed=cfg.seed)
