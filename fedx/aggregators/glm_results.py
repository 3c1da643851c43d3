"""The fitted GLM as an actuary reads it: :class:`GLMResults`, modelled on statsmodels' ``GLMResults``.

A federated Newton fit (:mod:`fedx.aggregators.newton`) ends with summed statistics at the fitted
coefficients. :meth:`GLMResults.from_newton` turns them into the coefficients, their covariance and
the fit statistics; everything else (standard errors, z, p-values, intervals, relativities) is
derived here, at any confidence level.

>>> res = GLMResults.from_newton(fit.total, fit.state, rule, feature_names)   # doctest: +SKIP
>>> res.params["age"], res.bse["age"], res.conf_int(0.10).loc["age"]          # doctest: +SKIP
>>> print(res.summary())                                                         # doctest: +SKIP
>>> res.to_dict()            # what result.json stores under "model"            # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import AggregationError

if TYPE_CHECKING:
    from .base import ModelState
    from .newton import NewtonRule

__all__ = ["GLMResults"]


@dataclass(frozen=True)
class GLMResults:
    """Coefficients, covariance and fit statistics of a GLM.

    Parameters
    ----------
    names : sequence of str
        The k coefficient names, ``Intercept`` first, in statsmodels' treatment coding
        (``region[T.north]``).
    estimates : np.ndarray
        The k coefficients.
    cov : np.ndarray
        Their k x k covariance (dispersion included).
    family, link : str
        The family and its link.
    deviance, null_deviance : float
        At the fitted coefficients, and of the intercept-only model.
    dispersion : float
        1 for poisson and binomial; Pearson chi2 / (n - k) otherwise.
    nobs : int
        Rows fitted.
    loglike : float or None
        statsmodels' log-likelihood at the fitted coefficients and dispersion (None when the
        statistics were computed at another dispersion).
    pearson_chi2 : float
        Pearson's chi2.
    tweedie_power : float or None
        The variance power (tweedie only).
    iterations : int
        Newton rounds taken.
    converged : bool
        Whether the fit converged.
    l2 : float
        The L2 penalty (0 for maximum likelihood).
    reference_levels : mapping of str to str
        Each categorical's reference level, for :meth:`relativities`.
    """

    names: tuple[str, ...]
    estimates: np.ndarray
    cov: np.ndarray
    family: str
    link: str
    deviance: float
    null_deviance: float
    dispersion: float
    nobs: int
    loglike: float | None = None
    pearson_chi2: float = float("nan")
    tweedie_power: float | None = None
    iterations: int = 0
    converged: bool = True
    l2: float = 0.0
    reference_levels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.names)
        est, cov = np.asarray(self.estimates, dtype=np.float64), np.asarray(self.cov, dtype=np.float64)
        if est.shape != (k,) or cov.shape != (k, k):
            raise AggregationError(f"GLMResults: {k} names, {est.shape} estimates and a {cov.shape} covariance; "
                                   f"expected ({k},) and ({k}, {k})")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "estimates", est)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "reference_levels", dict(self.reference_levels))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_newton(cls, total: np.ndarray, state: ModelState, rule: NewtonRule, feature_names: Sequence[str],
                    reference_levels: Mapping[str, str] | None = None) -> GLMResults:
        """The results of a federated Newton fit from the statistics summed at ``state``.

        Parameters
        ----------
        total : np.ndarray
            The summed statistics of the last round.
        state : ModelState
            The state they were computed at, ideally one for which :meth:`NewtonRule.report_ready`
            holds; before that, gamma's and tweedie's ``loglike`` and ``aic`` are None (they depend on
            the dispersion at the fitted coefficients).
        rule : NewtonRule
            The rule that ran the fit.
        feature_names : sequence of str
            The p column names of X.
        reference_levels : mapping of str to str, optional
            Each categorical's reference level.
        """
        from .newton import NewtonRule, params_to_beta, round_inputs

        beta = params_to_beta(state.params)
        names = list(feature_names)
        if len(names) != beta.size - 1:
            raise AggregationError(f"GLMResults: {len(names)} feature names for {beta.size - 1} features")
        cov = rule.covariance(np.asarray(total, dtype=np.float64), state)
        s = cov.scalars
        exact_llf = rule.family.fixed_scale or abs(round_inputs(state)["scale"] - cov.dispersion) <= \
            1e-9 * cov.dispersion
        return cls(names=("Intercept", *names), estimates=beta, cov=cov.matrix, family=rule.family.name,
                   link=rule.family.link, deviance=s["deviance"], null_deviance=s["null_deviance"],
                   dispersion=cov.dispersion, nobs=int(round(s["count"])),
                   loglike=s["loglike"] if exact_llf else None, pearson_chi2=s["pearson_chi2"],
                   tweedie_power=rule.tweedie_power if rule.family.name == "tweedie" else None,
                   iterations=int(state.opt["iterations"][0][0]), converged=NewtonRule.converged(state),
                   l2=rule.l2, reference_levels=reference_levels or {})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> GLMResults:
        """Rebuild from :meth:`to_dict` (for example result.json's ``model``)."""
        try:
            coefs = doc["coefficients"]
            names = [c["name"] for c in coefs]
            cov = doc.get("covariance")
            if cov is None:  # written before the covariance was stored: the diagonal is what is known
                cov = np.diag([float(c["std_error"]) ** 2 for c in coefs])
            return cls(names=tuple(names), estimates=np.array([c["estimate"] for c in coefs], dtype=np.float64),
                       cov=np.asarray(cov, dtype=np.float64), family=doc["family"], link=doc["link"],
                       deviance=float(doc["deviance"]), null_deviance=float(doc["null_deviance"]),
                       dispersion=float(doc["dispersion"]), nobs=int(doc["nobs"]), loglike=doc.get("loglike"),
                       pearson_chi2=float(doc.get("pearson_chi2", float("nan"))),
                       tweedie_power=doc.get("tweedie_power"), iterations=int(doc.get("iterations", 0)),
                       converged=bool(doc.get("converged", True)), l2=float(doc.get("l2", 0.0)),
                       reference_levels=doc.get("reference_levels") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise AggregationError(f"GLMResults: not a GLM report ({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ statsmodels' surface

    @property
    def k(self) -> int:
        """Number of coefficients, intercept included."""
        return len(self.names)

    @property
    def params(self) -> pd.Series:
        """The coefficients, by name."""
        return pd.Series(self.estimates, index=list(self.names), name="params")

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the coefficients."""
        return pd.Series(np.sqrt(np.diag(self.cov)), index=list(self.names), name="bse")

    @property
    def tvalues(self) -> pd.Series:
        """z statistics (statsmodels calls them tvalues for GLMs too)."""
        return pd.Series(self.estimates / np.sqrt(np.diag(self.cov)), index=list(self.names), name="tvalues")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values of the z statistics."""
        return pd.Series(2.0 * norm.sf(np.abs(self.tvalues.to_numpy())), index=list(self.names), name="pvalues")

    def cov_params(self) -> pd.DataFrame:
        """The covariance matrix, labelled."""
        return pd.DataFrame(self.cov, index=list(self.names), columns=list(self.names))

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals of the coefficients at level ``1 - alpha``: columns ``lower`` and ``upper``."""
        z = _z(alpha)
        se = np.sqrt(np.diag(self.cov))
        return pd.DataFrame({"lower": self.estimates - z * se, "upper": self.estimates + z * se},
                            index=list(self.names))

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, n - k."""
        return self.nobs - self.k

    @property
    def d2(self) -> float | None:
        """The share of the null deviance explained, 1 - deviance / null deviance."""
        return 1.0 - self.deviance / self.null_deviance if self.null_deviance > 0 else None

    @property
    def llf(self) -> float | None:
        """The log-likelihood (statsmodels' name)."""
        return self.loglike

    @property
    def aic(self) -> float | None:
        """-2 llf + 2 k, as statsmodels computes it."""
        return None if self.loglike is None else -2.0 * self.loglike + 2.0 * self.k

    # ------------------------------------------------------------------ the pricing view

    def relativities(self, alpha: float = 0.05) -> list[dict[str, Any]]:
        """The relativities exp(coefficient) by feature, with each categorical's reference level at 1.0.

        Coefficients named ``feature[T.level]`` are grouped under ``feature``, after a reference row;
        other coefficients are numeric features (per unit). The intercept is left out (its exp is
        the base rate).

        Returns
        -------
        list of dict
            ``feature``, ``level``, ``reference``, ``estimate``, ``std_error``, ``relativity``,
            ``ci_low`` and ``ci_high`` (the ``1 - alpha`` interval of the relativity; None on
            reference rows).
        """
        z = _z(alpha)
        groups: dict[str, list[dict[str, Any]]] = {}
        for name, estimate, se in zip(self.names, self.estimates, np.sqrt(np.diag(self.cov))):
            if name == "Intercept":
                continue
            feature, level = name, None
            if name.endswith("]") and "[T." in name:
                feature, level = name[:-1].split("[T.", 1)
                if feature not in groups:
                    groups[feature] = [_relativity_row(feature, self.reference_levels.get(feature), 0.0, None, None)]
            groups.setdefault(feature, []).append(_relativity_row(feature, level, float(estimate), float(se), z))
        return [row for rows in groups.values() for row in rows]

    def summary(self, alpha: float = 0.05) -> str:
        """A plain-text table in the manner of statsmodels' ``summary()``."""
        ci = self.conf_int(alpha)
        level = f"{100 * (1 - alpha):g}%"
        head = [f"GLM {self.family} ({self.link} link)" + (f", power {self.tweedie_power:g}"
                                                             if self.tweedie_power is not None else ""),
                f"observations {self.nobs}   df resid {self.df_resid}   dispersion {self.dispersion:.6g}",
                f"deviance {self.deviance:.6g}   null deviance {self.null_deviance:.6g}   "
                f"AIC {'-' if self.aic is None else f'{self.aic:.6g}'}   iterations {self.iterations}"
                + ("" if self.converged else "   NOT CONVERGED")]
        width = max(12, *(len(n) for n in self.names))
        cols = f"{'':<{width}} {'coef':>11} {'std err':>11} {'z':>8} {'P>|z|':>7} {'[' + level:>12} {'interval]':>11}"
        rows = [f"{n:<{width}} {b:>11.5g} {s:>11.5g} {z:>8.3f} {p:>7.3f} {lo:>12.5g} {hi:>11.5g}"
                for n, b, s, z, p, lo, hi in zip(self.names, self.estimates, self.bse, self.tvalues, self.pvalues,
                                                 ci["lower"], ci["upper"])]
        rule = "=" * len(cols)
        return "\n".join([rule, *head, rule, cols, "-" * len(cols), *rows, rule])

    def to_dict(self) -> dict[str, Any]:
        """What result.json stores under ``model``: every statistic, the coefficients with their standard
        errors, z, p-values and relativities, the covariance, and the 95% relativities table."""
        coefficients = [{"name": n, "estimate": float(b), "std_error": float(s), "z": float(z), "p_value": float(p),
                         "relativity": float(np.exp(b))}
                        for n, b, s, z, p in zip(self.names, self.estimates, self.bse, self.tvalues, self.pvalues)]
        return {
            "family": self.family,
            "link": self.link,
            "tweedie_power": self.tweedie_power,
            "coefficients": coefficients,
            "deviance": self.deviance,
            "null_deviance": self.null_deviance,
            "d2": self.d2,
            "loglike": self.loglike,
            "aic": self.aic,
            "dispersion": self.dispersion,
            "pearson_chi2": self.pearson_chi2,
            "nobs": self.nobs,
            "df_resid": self.df_resid,
            "iterations": self.iterations,
            "converged": self.converged,
            "l2": self.l2,
            "covariance": self.cov.tolist(),
            "reference_levels": dict(self.reference_levels),
            "relativities": self.relativities(0.05),
        }


def _z(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0 or math.isnan(alpha):
        raise ValueError(f"alpha: expected a number in (0, 1) (0.05 for 95% intervals), got {alpha!r}")
    return float(norm.ppf(1.0 - alpha / 2.0))


def _relativity_row(feature: str, level: str | None, estimate: float, std_error: float | None,
                    z: float | None) -> dict[str, Any]:
    """A row of :meth:`GLMResults.relativities`; ``z`` None makes it the reference row."""
    ci = (None, None) if z is None or std_error is None else \
        (float(np.exp(estimate - z * std_error)), float(np.exp(estimate + z * std_error)))
    return {"feature": feature, "level": level, "reference": z is None, "estimate": estimate,
            "std_error": std_error, "relativity": float(np.exp(estimate)), "ci_low": ci[0], "ci_high": ci[1]}
