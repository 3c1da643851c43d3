"""The GLM families of the Newton solver, row by row: link, IRLS terms, deviance and log-likelihood.

Each family follows statsmodels' definitions (``statsmodels.genmod.families``) with ``var_weights``
as the row weights, so that statsmodels is an independent oracle in the tests:

========  ======  =============  ==============================================
family    link    variance       use
========  ======  =============  ==============================================
poisson   log     mu             claim frequency, offset log(exposure)
gamma     log     mu^2           claim severity, weights = claim counts
tweedie   log     mu^p, 1<p<2    pure premium (compound Poisson-Gamma)
binomial  logit   mu (1 - mu)    disease risk, y in {0, 1} (or proportions)
========  ======  =============  ==============================================

Everything here is a pure function of numpy arrays (numpy and scipy only).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaln, log_wright_bessel, xlogy

from ..config import TWEEDIE_POWER, check_number
from ..errors import AggregationError, ConfigError, DataError

__all__ = ["FAMILIES", "Binomial", "Family", "Gamma", "Poisson", "RowTerms", "Tweedie", "get_family"]

#: The family names that :func:`get_family` accepts.
FAMILIES = ("poisson", "gamma", "tweedie", "binomial")


@dataclass(frozen=True)
class RowTerms:
    """Per-row quantities at a linear predictor (weights included).

    Attributes
    ----------
    working_weight : np.ndarray
        Fisher-scoring weight ``w (dmu/deta)^2 / V(mu)``; ``X'WX`` is the expected information.
    observed_weight : np.ndarray
        ``-d(score_weight)/deta``; ``X' diag(observed_weight) X`` is the observed information (the same as
        the expected one for canonical links).
    score_weight : np.ndarray
        ``w (y - mu) (dmu/deta) / V(mu)``; the score is ``X' score_weight``.
    deviance : np.ndarray
        The unit deviance times the weight.
    pearson : np.ndarray
        ``w (y - mu)^2 / V(mu)``.
    """

    working_weight: np.ndarray
    observed_weight: np.ndarray
    score_weight: np.ndarray
    deviance: np.ndarray
    pearson: np.ndarray


class Family(ABC):
    """A GLM family with its link: what :func:`fedx.aggregators.newton.local_stats` evaluates per row."""

    name: str = ""
    link: str = ""
    #: The link is canonical (Poisson, Binomial): observed and expected information coincide.
    canonical: bool = True
    #: The dispersion is 1 (Poisson, Binomial); otherwise it is estimated by Pearson chi2 / (n - k).
    fixed_scale: bool = True
    #: y = 0 is a boundary of the mean's range: a column whose nonzero rows all have y = 0 has an infinite
    #: estimate (Poisson, Tweedie, Binomial).
    boundary_zero: bool = True
    #: y = 1 is a boundary too (Binomial): rows can be separated, and the estimates run off to infinity.
    boundary_one: bool = False

    @abstractmethod
    def check_y(self, y: np.ndarray) -> None:
        """Raise :class:`DataError` if ``y`` is outside the family's support."""

    @abstractmethod
    def terms(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray) -> RowTerms:
        """IRLS weights, score weights, deviance and Pearson terms at the linear predictor ``eta``."""

    @abstractmethod
    def loglike(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray, scale: float) -> float:
        """Sum of statsmodels' ``loglike_obs`` at the mean ``mu(eta)`` and dispersion ``scale``."""

    @abstractmethod
    def null_sums(self, y: np.ndarray, offset: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        """Two additive sums ``(a, b)`` from which :meth:`null_intercept` starts the intercept-only fit."""

    @abstractmethod
    def null_intercept(self, a: float, b: float) -> float:
        """The intercept-only fit from the summed :meth:`null_sums` (exact for log links, and for the logit
        link without offset; a starting value for the logit link with an offset)."""


class _LogLink(Family):
    """Log link with variance ``mu^power``: ``W = w mu^(2-p)``, score weight ``w (y - mu) mu^(1-p)``, observed
    weight ``w ((2-p) mu^(2-p) + (p-1) y mu^(1-p))`` (positive for 1 <= p <= 2)."""

    link = "log"
    power: float = 1.0

    def terms(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray) -> RowTerms:
        p = self.power
        mu = np.exp(eta)
        working = w * np.exp((2.0 - p) * eta)
        return RowTerms(working_weight=working,
                        observed_weight=(2.0 - p) * working + (p - 1.0) * w * y * np.exp((1.0 - p) * eta),
                        score_weight=w * (y - mu) * np.exp((1.0 - p) * eta),
                        deviance=w * self._unit_deviance(y, eta, mu),
                        pearson=w * (y - mu) ** 2 * np.exp(-p * eta))

    @abstractmethod
    def _unit_deviance(self, y: np.ndarray, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """statsmodels' ``_resid_dev``: twice the log-likelihood ratio of the saturated model."""

    def null_sums(self, y: np.ndarray, offset: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        # The intercept-only score sum w (y - mu) mu^(1-p) = 0 with mu = exp(b0 + o) solves to
        # exp(b0) = sum w y exp((1-p) o) / sum w exp((2-p) o).
        p = self.power
        return (float(np.sum(w * y * np.exp((1.0 - p) * offset))),
                float(np.sum(w * np.exp((2.0 - p) * offset))))

    def null_intercept(self, a: float, b: float) -> float:
        if not (a > 0.0 and b > 0.0):
            raise AggregationError(f"{self.name}: the summed responses are {a:.6g}; a log-link GLM needs some "
                                   f"positive responses")
        return math.log(a / b)


class Poisson(_LogLink):
    """Poisson with log link (claim counts; offset = log exposure)."""

    name = "poisson"
    power = 1.0

    def check_y(self, y: np.ndarray) -> None:
        if np.any(y < 0):
            raise DataError("y: poisson expects non-negative counts, got negative values")

    def _unit_deviance(self, y: np.ndarray, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        return 2.0 * (xlogy(y, y) - y * eta - y + mu)

    def loglike(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray, scale: float) -> float:
        return float(np.sum(w * (y * eta - np.exp(eta) - gammaln(y + 1.0))))


class Gamma(_LogLink):
    """Gamma with log link (average claim amounts; weights = claim counts as ``var_weights``)."""

    name = "gamma"
    power = 2.0
    canonical = False
    fixed_scale = False
    boundary_zero = False

    def check_y(self, y: np.ndarray) -> None:
        if np.any(y <= 0):
            raise DataError("y: gamma expects positive amounts, got zero or negative values")

    def _unit_deviance(self, y: np.ndarray, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        return 2.0 * (eta - np.log(y) + y * np.exp(-eta) - 1.0)

    def loglike(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray, scale: float) -> float:
        ws = w / scale
        log_y = np.log(y)
        return float(np.sum(ws * (np.log(ws) + log_y - eta) - ws * y * np.exp(-eta) - gammaln(ws) - log_y))


class Tweedie(_LogLink):
    """Tweedie with log link and variance power ``1 < p < 2`` (pure premium: zeros and positive amounts).

    The log-likelihood is statsmodels' series (Dunn and Smyth, 2005) through ``log_wright_bessel``.
    """

    name = "tweedie"
    canonical = False
    fixed_scale = False

    def __init__(self, power: float) -> None:
        # poisson is the power-1 family, gamma the power-2 one
        self.power = check_number(power, "federation.tweedie_power", TWEEDIE_POWER)

    def check_y(self, y: np.ndarray) -> None:
        if np.any(y < 0):
            raise DataError("y: tweedie expects non-negative amounts, got negative values")

    def _unit_deviance(self, y: np.ndarray, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        p = self.power
        return 2.0 * (y ** (2.0 - p) / ((1.0 - p) * (2.0 - p)) - y * np.exp((1.0 - p) * eta) / (1.0 - p)
                      + np.exp((2.0 - p) * eta) / (2.0 - p))

    def loglike(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray, scale: float) -> float:
        p = self.power
        row_scale = scale / w
        alpha = (2.0 - p) / (1.0 - p)
        theta_y = y * np.exp((1.0 - p) * eta) / (1.0 - p)
        kappa = np.exp((2.0 - p) * eta) / (2.0 - p)
        total = float(np.sum((theta_y - kappa) / row_scale))
        pos = y > 0
        if np.any(pos):
            yp, sp = y[pos], row_scale[pos]
            x = ((p - 1.0) * sp / yp) ** alpha / ((2.0 - p) * sp)
            total += float(np.sum(log_wright_bessel(-alpha, 0.0, x) - np.log(yp)))
        return total


class Binomial(Family):
    """Binomial with logit link (y in {0, 1}, or proportions in [0, 1])."""

    name = "binomial"
    link = "logit"
    boundary_one = True

    def check_y(self, y: np.ndarray) -> None:
        if np.any((y < 0) | (y > 1)):
            raise DataError("y: binomial expects outcomes in [0, 1] (0/1 labels or proportions)")

    def terms(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray) -> RowTerms:
        mu = expit(eta)
        # statsmodels clips the variance's argument to [eps, 1 - eps] (varfuncs.Binomial).
        eps = np.finfo(np.float64).eps
        clipped = np.clip(mu, eps, 1.0 - eps)
        working = w * mu * (1.0 - mu)
        return RowTerms(working_weight=working,
                        observed_weight=working,
                        score_weight=w * (y - mu),
                        deviance=2.0 * w * (xlogy(y, y) + xlogy(1.0 - y, 1.0 - y) + self._neg_loglike(y, eta)),
                        pearson=w * (y - mu) ** 2 / (clipped * (1.0 - clipped)))

    @staticmethod
    def _neg_loglike(y: np.ndarray, eta: np.ndarray) -> np.ndarray:
        # -(y log mu + (1 - y) log(1 - mu)), stable for any eta: log mu = -log(1 + exp(-eta)).
        return y * np.logaddexp(0.0, -eta) + (1.0 - y) * np.logaddexp(0.0, eta)

    def loglike(self, y: np.ndarray, eta: np.ndarray, w: np.ndarray, scale: float) -> float:
        # statsmodels with one trial per row: gammaln(2) - gammaln(y + 1) - gammaln(2 - y) + y log mu + ...
        return float(np.sum(w * (-gammaln(y + 1.0) - gammaln(2.0 - y) - self._neg_loglike(y, eta))))

    def null_sums(self, y: np.ndarray, offset: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        return float(np.sum(w * y)), float(np.sum(w))

    def null_intercept(self, a: float, b: float) -> float:
        if not 0.0 < a < b:
            raise AggregationError(f"binomial: {a:.6g} positive outcomes out of a total weight of {b:.6g}; a "
                                   f"logistic fit needs both outcomes")
        return math.log(a / (b - a))


def get_family(name: str, tweedie_power: float = 1.5) -> Family:
    """The family called ``name`` (``tweedie_power`` is read for ``tweedie`` only).

    Raises
    ------
    ConfigError
        An unknown name, or a Tweedie power outside (1, 2).
    """
    if name == "poisson":
        return Poisson()
    if name == "gamma":
        return Gamma()
    if name == "tweedie":
        return Tweedie(tweedie_power)
    if name == "binomial":
        return Binomial()
    raise ConfigError(f"family: expected one of {', '.join(FAMILIES)}, got {name!r}")
