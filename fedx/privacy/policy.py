"""The data owners' release policy for federated statistics: minimum cohorts and optional noise.

- ``min_cohort``: a released count cell needs at least this many records, counted across institutions.
  A cell with 1 to ``min_cohort - 1`` records is suppressed (null, and named as suppressed); an empty
  cell is released as 0.
- ``local_min_cohort``: each institution refuses (:class:`~fedx.errors.PolicyError`) a query in which
  one of its own non-empty cells holds fewer of its records. A node's own policy can only raise it.
- ``noise``: Laplace (``epsilon``) or Gaussian (``epsilon``, ``delta``, analytic calibration of Balle and
  Wang, 2018) noise on released values, for add-or-remove-one-record neighbouring tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, special

from ..config import StatsConfig
from ..errors import ConfigError, PolicyError

Mechanism = Literal["none", "laplace", "gaussian"]
MECHANISMS: tuple[Mechanism, ...] = ("none", "laplace", "gaussian")


@dataclass(frozen=True)
class Policy:
    """What may be released, and how an institution protects its own records.

    Parameters
    ----------
    min_cohort : int
        Fewest records (across institutions) in a released non-empty cell.
    local_min_cohort : int
        Fewest of an institution's own records in a non-empty cell of its answer.
    noise : {"none", "laplace", "gaussian"}
        Noise on released values.
    epsilon : float, optional
        Privacy parameter of each noisy statistic (required with noise).
    delta : float
        Failure probability of each Gaussian statistic.
    """

    min_cohort: int = 1
    local_min_cohort: int = 1
    noise: Mechanism = "none"
    epsilon: float | None = None
    delta: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("min_cohort", "local_min_cohort"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"policy.{name}: expected an integer >= 1, got {value!r}")
        if self.noise not in MECHANISMS:
            raise ConfigError(f"policy.noise: expected one of {', '.join(MECHANISMS)}, got {self.noise!r}")
        if self.noise != "none" and (self.epsilon is None or not self.epsilon > 0 or math.isinf(self.epsilon)):
            raise ConfigError(f"policy.epsilon: noise '{self.noise}' needs a finite epsilon > 0, got {self.epsilon!r}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"policy.delta: expected a number in (0, 1), got {self.delta!r}")

    @classmethod
    def from_config(cls, cfg: StatsConfig, *, local_min_cohort: int | None = None) -> Policy:
        """The policy of a ``stats:`` section; an institution's own ``local_min_cohort`` can only raise it."""
        local = cfg.local_min_cohort if local_min_cohort is None else max(cfg.local_min_cohort, local_min_cohort)
        return cls(min_cohort=cfg.min_cohort, local_min_cohort=local, noise=cfg.noise, epsilon=cfg.epsilon,
                   delta=cfg.delta)

    @property
    def noisy(self) -> bool:
        """Whether released values carry noise."""
        return self.noise != "none"

    def suppresses(self, count: float) -> bool:
        """Whether a cell of ``count`` records (across institutions) must be withheld."""
        return 0 < count < self.min_cohort

    def check_local(self, cells: Iterable[tuple[str, float]], source: str) -> None:
        """Refuse an answer in which a non-empty cell holds fewer than ``local_min_cohort`` own records.

        Raises
        ------
        PolicyError
            Naming the first such cell (never its count) and how many there are.
        """
        small = [name for name, count in cells if 0 < count < self.local_min_cohort]
        if small:
            more = f" (and {len(small) - 1} more cells)" if len(small) > 1 else ""
            raise PolicyError(f"{source} refuses the query: cell {small[0]}{more} would single out fewer than "
                              f"its local minimum of {self.local_min_cohort} records")

    def scale(self, sensitivity: float) -> float:
        """The Laplace scale b or the Gaussian sigma for one statistic of this sensitivity."""
        if not self.noisy:
            return 0.0
        assert self.epsilon is not None  # checked in __post_init__
        if self.noise == "laplace":
            return sensitivity / self.epsilon
        return sensitivity * gaussian_sigma(self.epsilon, self.delta)

    def sample(self, rng: np.random.Generator, sensitivity: float, size: int) -> np.ndarray:
        """Noise for one statistic of ``size`` values whose L1 (Laplace) or L2 (Gaussian) sensitivity is given."""
        scale = self.scale(sensitivity)
        if self.noise == "laplace":
            return rng.laplace(0.0, scale, size)
        if self.noise == "gaussian":
            return rng.normal(0.0, scale, size)
        return np.zeros(size)

    def describe(self) -> dict[str, Any]:
        """The policy as plain data, for stats.json."""
        out: dict[str, Any] = {"min_cohort": self.min_cohort, "local_min_cohort": self.local_min_cohort,
                               "noise": self.noise}
        if self.noisy:
            out |= {"epsilon": self.epsilon, "delta": self.delta if self.noise == "gaussian" else 0.0,
                    "neighbouring": "add or remove one record",
                    "calibration": ("b = sensitivity / epsilon (L1)" if self.noise == "laplace" else
                                    "analytic Gaussian mechanism (Balle and Wang, 2018), L2 sensitivity")}
        return out


def gaussian_sigma(epsilon: float, delta: float) -> float:
    """The smallest sigma of the analytic Gaussian mechanism at L2 sensitivity 1 (Balle and Wang, 2018).

    It is the sigma for which ``Phi(1/(2s) - eps*s) - exp(eps) * Phi(-1/(2s) - eps*s) = delta``; the
    mechanism is then (epsilon, delta)-DP for any epsilon > 0, and tighter than the classic
    ``sqrt(2 ln(1.25/delta)) / epsilon``.
    """
    def excess(s: float) -> float:
        a, b = 1.0 / (2.0 * s), epsilon * s
        return float(special.ndtr(a - b) - math.exp(epsilon + special.log_ndtr(-a - b)) - delta)

    lo, hi = 1.0, 1.0
    while excess(hi) > 0:
        hi *= 2.0
    while excess(lo) <= 0:
        lo /= 2.0
    return float(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))
